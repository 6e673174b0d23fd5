from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from canonlabel.errors import BackendError, MissingDependencyError
from canonlabel.llm.base import Labeler
from canonlabel.llm.prompt import chat_messages
from canonlabel.llm.retry import call_with_retries
from canonlabel.types import LabelRequest, LabelResponse, Usage

_SCHEMA = {
    "name": "label",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"label": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,59}$"}},
        "required": ["label"],
        "additionalProperties": False,
    },
}


def make_client(*, base_url: str | None, api_key: str | None, timeout: float):
    try:
        import openai
    except ImportError as exc:
        raise MissingDependencyError("openai", "openai") from exc
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        if base_url is None:
            raise BackendError(
                "no API key: set OPENAI_API_KEY or CANONLABEL_LLM_API_KEY, or point "
                "CANONLABEL_LLM_BASE_URL at a local OpenAI-compatible server",
                retryable=False,
            )
        api_key = "not-needed"  # local servers (vLLM, llama.cpp, Ollama) ignore it
    # Retries are ours (call_with_retries) so they are counted and honour Retry-After.
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)


class OpenAILabeler(Labeler):
    """Any OpenAI-compatible chat endpoint, temperature 0.

    With ``structured=True`` it asks for a JSON-schema response (``response_format``
    ``json_schema``: OpenAI, vLLM, Ollama); an endpoint that rejects it is asked in
    llama.cpp's form (``json_object`` with a ``schema``), and one that rejects that too
    gets plain text, each step once and for all.
    """

    _FORMS = ("json_schema", "json_object", None)

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client=None,
        timeout: float = 60.0,
        max_retries: int = 4,
        structured: bool = True,
        max_tokens: int = 40,
        concurrency: int = 8,
    ) -> None:
        self.model = model
        self.id = f"openai:{model}"
        self.client = client or make_client(base_url=base_url, api_key=api_key, timeout=timeout)
        self.max_retries = max_retries
        self.form: str | None = "json_schema" if structured else None
        self.max_tokens = max_tokens
        self.concurrency = concurrency

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        if len(requests) == 1:
            return [self._label_one(requests[0])]
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._label_one, requests))

    def _label_one(self, request: LabelRequest) -> LabelResponse:
        messages = chat_messages(request)
        enum = request.candidates if request.closed else ()
        while True:
            form = self.form
            try:
                response = self._create(
                    messages, form=form, enum=enum, max_labels=request.max_labels
                )
                break
            except BackendError as exc:
                if not exc.rejected or form is None:
                    raise
                if self.form == form:  # another thread may have stepped down already
                    self.form = self._FORMS[self._FORMS.index(form) + 1]
        content = response.choices[0].message.content or ""
        if form is not None:
            try:
                value = json.loads(content).get("label", "")
                content = ", ".join(value) if isinstance(value, list) else str(value)
            except (json.JSONDecodeError, AttributeError):
                pass  # validated downstream; an invalid answer gets a re-ask
        return LabelResponse(output=content, usage=_usage(response))

    def complete(
        self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256
    ) -> LabelResponse:
        response = self._create(
            [{"role": "user", "content": prompt}], form=None, max_tokens=max_tokens
        )
        return LabelResponse(response.choices[0].message.content or "", _usage(response))

    def _create(
        self,
        messages,
        *,
        form: str | None,
        enum: tuple[str, ...] = (),
        max_labels: int = 1,
        max_tokens: int | None = None,
    ):
        kwargs = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens or self.max_tokens,
        }
        if form is not None:
            schema = _SCHEMA
            if enum:  # closed set: the endpoint cannot answer outside it
                schema = json.loads(json.dumps(_SCHEMA))
                item = {"type": "string", "enum": list(enum)}
                if max_labels > 1:
                    item = {"type": "array", "items": item, "minItems": 1, "maxItems": max_labels}
                schema["schema"]["properties"]["label"] = item
            kwargs["response_format"] = (
                {"type": "json_schema", "json_schema": schema}
                if form == "json_schema"
                else {"type": "json_object", "schema": schema["schema"]}
            )
        return call_with_retries(
            lambda: self.client.chat.completions.create(**kwargs), max_retries=self.max_retries
        )


def _usage(response) -> Usage:
    """Token usage as the server reports it (``prompt_tokens_details.cached_tokens``:
    OpenAI's and vLLM's prompt cache; absent elsewhere)."""
    usage = response.usage
    details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        getattr(usage, "prompt_tokens", 0) or 0,
        getattr(usage, "completion_tokens", 0) or 0,
        getattr(details, "cached_tokens", 0) or 0,
    )
