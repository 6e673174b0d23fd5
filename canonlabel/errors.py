"""Errors raised by canonlabel.

Every error derives from :class:`CanonlabelError`; its message says what to do next.

    CanonlabelError
    ├── ConfigError              bad option or spec string
    ├── MissingDependencyError   an optional extra is not installed
    ├── InputError               unreadable or malformed input
    │   └── EmptyTextError       text is empty after normalisation
    ├── StoreError               the SQLite store cannot be used
    │   ├── IncompatibleStoreError  store built with another embedder
    │   ├── StoreBusyError       another process is writing the store
    │   ├── StaleLabelSpaceError another process changed the label space meanwhile
    │   └── TransientStoreError  a shared store's transaction was rolled back; retry it
    ├── BackendError             an embedder or LLM failed (``retryable`` says if trying again may help)
    ├── BudgetError              the --max-llm-calls budget is spent
    └── LabelError               the LLM gave no valid label after re-asking (carries outputs)
        └── RejectedTextError    the text only instructs the labeller: nothing to label
"""

from __future__ import annotations


class CanonlabelError(Exception):
    """Base class of every canonlabel error."""


class ConfigError(CanonlabelError, ValueError):
    """An option, setting or backend spec is invalid."""


class MissingDependencyError(CanonlabelError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` to run."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        target = f"canonlabel[{extra}]" if extra else package
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{why}. Run: pip install '{target}'")
        self.package = package


class InputError(CanonlabelError, ValueError):
    """Input data could not be read or is malformed."""


class EmptyTextError(InputError):
    """The text is empty after normalisation."""

    def __init__(self) -> None:
        super().__init__(
            "text is empty after normalisation (only whitespace, control or zero-width "
            "characters); pass a non-empty text"
        )


class StoreError(CanonlabelError):
    """The store cannot be opened or written."""


class IncompatibleStoreError(StoreError):
    """The store was built with an embedder whose vectors cannot be compared with this one."""


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


class StaleLabelSpaceError(StoreError):
    """Another process rewrote the label space after this one read it; nothing was
    written, and doing it again (on the fresh label space) is safe."""


class TransientStoreError(StoreError):
    """A shared store rolled a transaction back (deadlock, serialisation failure, lost
    connection); nothing of it was written and running it again may succeed."""


class BackendError(CanonlabelError):
    """A backend (embedder or LLM) failed.

    ``retryable`` is True for failures that may pass on a later attempt
    (rate limits, timeouts, 5xx); ``retry_after`` is the server's hint in seconds;
    ``rejected`` is True when the endpoint refused the request itself (a field it does
    not support), so another form of the request may pass.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        rejected: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.rejected = rejected


class LabelError(CanonlabelError):
    """The LLM produced no valid label, even after one re-ask."""

    def __init__(self, message: str, outputs: list[str]) -> None:
        super().__init__(message)
        self.outputs = outputs


class CurationError(CanonlabelError, ValueError):
    """A curation request cannot be applied as asked."""


class RejectedTextError(LabelError):
    """The text holds nothing but instructions to the labeller (see canonlabel.guard)."""


class BudgetError(CanonlabelError):
    """The LLM call budget (``max_llm_calls``) is spent; the item was not asked."""
