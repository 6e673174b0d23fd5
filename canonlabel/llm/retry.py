"""Retrying transport errors with exponential backoff, honouring Retry-After."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TypeVar

from canonlabel.errors import BackendError

T = TypeVar("T")
MAX_SLEEP = 60.0


def to_backend_error(exc: Exception) -> BackendError:
    """Wrap an ``openai`` SDK exception (or anything else) into a :class:`BackendError`."""
    if isinstance(exc, BackendError):
        return exc
    try:
        import openai
    except ImportError:  # pragma: no cover
        return BackendError(f"backend failed: {exc}", retryable=False)
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return BackendError(
            f"cannot reach the endpoint: {exc}; check the base URL and that the server is running",
            retryable=True,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(exc.response.headers if exc.response is not None else {})
        # llama.cpp's Python server answers a request it cannot validate with HTTP 500:
        # the same body would fail again, so that is a rejection, not a server fault
        rejected = status in (400, 422) or (status >= 500 and _validation_error(exc.message))
        retryable = not rejected and (status in (408, 409, 429) or status >= 500)
        hint = {
            401: "check the API key",
            403: "check the API key's permissions",
            404: "check the model name and base URL",
        }.get(status, "see the server's message")
        return BackendError(
            f"endpoint answered HTTP {status}{' (request rejected)' if rejected else ''}: "
            f"{exc.message}; {hint}",
            retryable=retryable,
            retry_after=retry_after,
            rejected=rejected,
        )
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
        # a body cut short or mangled on the way
        return BackendError(
            f"the endpoint sent a malformed response ({exc}); retrying", retryable=True
        )
    return BackendError(f"backend failed: {exc!r}", retryable=False)


def _validation_error(message: str) -> bool:
    text = message.lower()
    return "validation error" in text and ("'body'" in text or '"body"' in text)


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_retries: int,
    base_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; retry retryable failures up to ``max_retries`` times."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            error = to_backend_error(exc)
            if not error.retryable or attempt >= max_retries:
                if error is exc:
                    raise
                raise error from exc
            delay = error.retry_after
            if delay is None:
                delay = base_delay * 2**attempt * (0.5 + random.random())
            sleep(min(delay, MAX_SLEEP))
            attempt += 1
