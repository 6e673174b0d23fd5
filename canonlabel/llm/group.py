"""Several texts per LLM call.

A prompt's fixed part (instruction, examples, the answer format) is most of its tokens:
a short text costs 20-40 tokens, the rest of the prompt 200-280. :class:`Grouped` wraps
a labeler that can answer a group of texts in one call (``label_group``) and gathers the
requests that concurrent workers make into groups of up to ``size``, so the fixed part is
sent once per group.

The engine runs ``size`` times as many workers (see :attr:`Grouped.workers`), each asking
about one text as before; a worker whose request finds no company within ``wait``
seconds sends what has gathered. Only open questions are grouped: closed choices (second
questions, fixed categories) and re-asks carry their own instructions and go one by one.
Answers are validated per text as before, and a group answered with the wrong number of
labels is asked again text by text, so grouping never loses an answer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

from canonlabel.llm.base import Labeler
from canonlabel.types import LabelRequest, LabelResponse, Usage

WAIT = 0.05  # seconds a request waits for others to share its call


def shares(usage: Usage, n: int) -> list[Usage]:
    """``usage`` of one call split over its ``n`` texts (remainders to the first ones),
    so per-item token counts add up to what the call cost."""

    def split(total: int) -> list[int]:
        q, r = divmod(total, n)
        return [q + (i < r) for i in range(n)]

    parts = zip(
        split(usage.prompt_tokens),
        split(usage.completion_tokens),
        split(usage.cached_tokens),
        strict=True,
    )
    return [Usage(*p) for p in parts]


class Grouped(Labeler):
    """Asks ``inner`` about up to ``size`` texts per call (see the module docstring)."""

    def __init__(self, inner: Labeler, size: int, wait: float = WAIT) -> None:
        if not hasattr(inner, "label_group"):
            from canonlabel.errors import ConfigError

            raise ConfigError(
                f"{inner.id} answers one text per call; set texts_per_call to 1 for it"
            )
        self.inner, self.size, self.wait = inner, size, wait
        self.id = inner.id
        self.grouping, self.candidates = inner.grouping, inner.candidates
        self.max_error = inner.max_error
        self.max_pairs = getattr(inner, "max_pairs", 50)
        self._pending: list[tuple[LabelRequest, Future]] = []
        self._lock = threading.Lock()

    @property
    def workers(self) -> int:
        """Concurrent questions per call in flight: what the engine multiplies by."""
        return self.size

    def complete(self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256):
        return self.inner.complete(prompt, grammar=grammar, max_tokens=max_tokens)

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        if len(requests) > 1:  # given together: group them directly
            out: list[LabelResponse] = []
            for start in range(0, len(requests), self.size):
                out += self._ask(list(requests[start : start + self.size]))
            return out
        return [self._gathered(r) for r in requests]

    def _gathered(self, request: LabelRequest) -> LabelResponse:
        if request.closed or request.feedback:
            return self.inner.label_batch([request])[0]
        mine: Future = Future()
        with self._lock:
            self._pending.append((request, mine))
            group = self._take() if len(self._pending) >= self.size else None
        if group is None:
            try:
                return mine.result(timeout=self.wait)
            except TimeoutError:
                with self._lock:  # nobody came: send what has gathered (if not sent)
                    group = self._take() if any(f is mine for _, f in self._pending) else []
        if group:
            self._send(group)
        return mine.result()

    def _take(self) -> list[tuple[LabelRequest, Future]]:
        group, self._pending = self._pending[: self.size], self._pending[self.size :]
        return group

    def _send(self, group: list[tuple[LabelRequest, Future]]) -> None:
        try:
            answers = self._ask([r for r, _ in group])
        except BaseException as exc:  # every waiter gets the error, not a hang
            for _, future in group:
                future.set_exception(exc)
            return
        for (_, future), answer in zip(group, answers, strict=True):
            future.set_result(answer)

    def _ask(self, requests: list[LabelRequest]) -> list[LabelResponse]:
        open_ = [i for i, r in enumerate(requests) if not (r.closed or r.feedback)]
        out: list[LabelResponse | None] = [None] * len(requests)
        if len(open_) > 1:
            answers = self.inner.label_group([requests[i] for i in open_])
            for i, answer in zip(open_, answers, strict=True):
                out[i] = answer
        rest = [i for i, a in enumerate(out) if a is None]
        if rest:
            for i, answer in zip(rest, self.inner.label_batch([requests[i] for i in rest])):
                out[i] = answer
        return out  # type: ignore[return-value]
