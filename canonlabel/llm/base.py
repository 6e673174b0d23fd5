from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from canonlabel.types import Grouping, LabelRequest, LabelResponse


class Labeler(ABC):
    """Asks an LLM for a snake_case label per text.

    Subclasses implement :meth:`label_batch`; it must be safe to call from several
    threads. Transport failures raise :class:`~canonlabel.errors.BackendError`;
    output validation is the caller's job (see :func:`canonlabel.canon.clean_label`).
    """

    id: str = "labeler"
    grouping: Grouping | None = None  # consolidation defaults for this LLM (None: generic)
    candidates: int | None = None  # existing labels best shown to it (None: generic, 3)
    max_error: float | None = None  # the router's bound worth holding it to (None: 0.05)

    @abstractmethod
    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        """Answer each request, in order."""

    def label(self, request: LabelRequest) -> LabelResponse:
        return self.label_batch([request])[0]

    def complete(
        self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256
    ) -> LabelResponse:
        """Free-form completion (taxonomy discovery). ``grammar`` (GBNF) binds local
        models; remote ones are asked in words and parsed leniently."""
        raise NotImplementedError(f"{type(self).__name__} cannot do free completions")


class NoLabeler(Labeler):
    """Stands in for the LLM where a job never asks it (reading a store, clustering-only
    evaluation), so no model is loaded."""

    id = "none"

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        # never called; raises what the method-less stand-in it replaced raised
        raise AttributeError(f"{type(self).__name__!r} object has no attribute 'label_batch'")
