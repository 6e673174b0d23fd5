"""LLM labelers: text (+ candidate labels) -> raw label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canonlabel.errors import ConfigError
from canonlabel.llm.base import Labeler

if TYPE_CHECKING:
    from canonlabel.config import Settings

__all__ = ["Labeler", "make_labeler"]


def make_labeler(spec: str, settings: Settings | None = None) -> Labeler:
    """Build a labeler from a spec string.

    ``local`` (bundled Gemma 3 270M via llama.cpp), ``local:/path/model.gguf``,
    ``openai:MODEL`` (with ``llm_base_url`` for vLLM, Ollama, llama.cpp server...),
    ``fake`` / ``fake:latency=0.5,log=/tmp/calls.log`` (test labeler, no model).
    """
    from canonlabel.config import Settings

    settings = settings or Settings()
    labeler = _make(spec, settings)
    if settings.texts_per_call > 1:
        from canonlabel.llm.group import Grouped

        labeler = Grouped(labeler, settings.texts_per_call)
    if settings.llm_cache is not None:
        from canonlabel.llm.cache import CachingLabeler

        labeler = CachingLabeler(labeler, settings.llm_cache)
    return labeler


def _make(spec: str, settings: Settings) -> Labeler:
    kind, _, arg = spec.partition(":")
    if kind == "local":
        from canonlabel.llm.llamacpp import LlamaCppLabeler

        return LlamaCppLabeler(arg or None, cache_dir=settings.cache_dir)
    if kind == "openai":
        from canonlabel.llm.openai import OpenAILabeler

        if not arg:
            raise ConfigError("openai: needs a model name, e.g. openai:gpt-4.1-mini")
        return OpenAILabeler(
            arg,
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            concurrency=settings.concurrency,
        )
    if kind == "fake":
        from canonlabel.testing import FakeLabeler

        return FakeLabeler.from_spec(arg)
    raise ConfigError(
        f"unknown LLM spec {spec!r}; use local, local:PATH.gguf, openai:MODEL or fake"
    )
