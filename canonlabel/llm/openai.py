from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from canonlabel.errors import BackendError, MissingDependencyError
from canonlabel.llm.base import Labeler
from canonlabel.llm.group import shares
from canonlabel.llm.prompt import chat_messages, group_messages
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
        enum = request.candidates if request.closed else ()
        form, response = self._stepping(
            chat_messages(request), enum=enum, max_labels=request.max_labels
        )
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

    def label_group(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        """Several open questions in one call (see :mod:`canonlabel.llm.group`); an
        answer that does not hold one label per text is asked again text by text."""
        n = len(requests)
        schema = json.loads(json.dumps(_SCHEMA))
        schema["name"] = "labels"
        label = schema["schema"]["properties"].pop("label")
        schema["schema"]["properties"]["labels"] = {
            "type": "array", "items": label, "minItems": n, "maxItems": n
        }  # fmt: skip
        schema["schema"]["required"] = ["labels"]
        _, response = self._stepping(
            group_messages(requests), schema=schema, max_tokens=self.max_tokens * n
        )
        labels = _group_labels(response.choices[0].message.content or "", n)
        if labels is None:
            return self.label_batch(requests)
        return [LabelResponse(lab, u) for lab, u in zip(labels, shares(_usage(response), n))]

    def _stepping(self, messages, **kwargs):
        """(form used, response): the first answer form the endpoint accepts, stepping
        down the ladder for good when it rejects one."""
        while True:
            form = self.form
            try:
                return form, self._create(messages, form=form, **kwargs)
            except BackendError as exc:
                if not exc.rejected or form is None:
                    raise
                if self.form == form:  # another thread may have stepped down already
                    self.form = self._FORMS[self._FORMS.index(form) + 1]

    def _create(
        self,
        messages,
        *,
        form: str | None,
        enum: tuple[str, ...] = (),
        max_labels: int = 1,
        max_tokens: int | None = None,
        schema: dict | None = None,
    ):
        kwargs = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens or self.max_tokens,
        }
        if form is not None:
            schema = schema or _SCHEMA
            if enum:  # closed set: the endpoint cannot answer outside it
                schema = json.loads(json.dumps(_SCHEMA))
                item: dict[str, object] = {"type": "string", "enum": list(enum)}
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


def _group_labels(content: str, n: int) -> list[str] | None:
    """The ``n`` labels of a grouped answer: a JSON object's ``labels`` (or a bare JSON
    list), else one label per non-empty line; None when the count is not ``n``."""
    try:
        value = json.loads(content)
        if isinstance(value, dict):
            value = value.get("labels")
        labels = [str(v) for v in value] if isinstance(value, list) else None
    except json.JSONDecodeError:
        labels = [line.strip(" -*0123456789.)") for line in content.splitlines() if line.strip()]
    return labels if labels is not None and len(labels) == n else None
