"""Embedders: text -> L2-normalised float32 vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canonlabel.embed.base import Embedder
from canonlabel.errors import ConfigError

if TYPE_CHECKING:
    from canonlabel.config import Settings

__all__ = ["Embedder", "make_embedder"]


def make_embedder(spec: str, settings: Settings | None = None) -> Embedder:
    """Build an embedder from a spec string.

    ``minilm`` (bundled all-MiniLM-L6-v2), ``st:/path/to/model`` (a local
    sentence-transformers directory), ``openai:MODEL`` (OpenAI-compatible endpoint),
    ``hash`` or ``hash:DIM`` (deterministic test embedder, no model).
    """
    kind, _, arg = spec.partition(":")
    if kind in ("minilm", "default", "local"):
        from canonlabel.embed.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(arg or None)
    if kind in ("st", "sentence-transformers"):
        from canonlabel.embed.sentence_transformers import SentenceTransformerEmbedder

        if not arg:
            raise ConfigError("st: needs a local model directory, e.g. st:/models/bge-small")
        return SentenceTransformerEmbedder(arg)
    if kind == "openai":
        from canonlabel.embed.openai import OpenAIEmbedder

        if not arg:
            raise ConfigError("openai: needs a model name, e.g. openai:text-embedding-3-small")
        return OpenAIEmbedder(
            arg,
            base_url=settings.embedder_base_url if settings else None,
            api_key=settings.embedder_api_key if settings else None,
        )
    if kind == "hash":
        from canonlabel.embed.hashing import HashEmbedder

        return HashEmbedder(int(arg) if arg else 256)
    raise ConfigError(f"unknown embedder spec {spec!r}; use minilm, st:PATH, openai:MODEL or hash")
