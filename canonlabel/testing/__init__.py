"""Fakes for tests, yours and ours: a deterministic embedder and a scriptable labeler.

>>> from canonlabel.testing import FakeLabeler, HashEmbedder
>>> llm = FakeLabeler()
>>> llm.enqueue("card_arrival")          # next call answers this
>>> llm.history                          # every LabelRequest seen, in order
[]
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

from canonlabel.embed.hashing import HashEmbedder
from canonlabel.errors import BackendError
from canonlabel.llm.base import Labeler
from canonlabel.types import LabelRequest, LabelResponse, Usage

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "there",
        "this",
        "to",
        "too",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def keyword_label(text: str, candidates: Sequence[str] = ()) -> str:
    """Default fake rule: reuse a candidate sharing a content word, else join two words."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2]
    for cand in candidates:
        if set(cand.split("_")) & set(words):
            return cand
    words = [w for w in words if w[0].isalpha()] or ["misc", "text"]
    return "_".join(([*words, "text"])[:2])


def ledger_counts(path) -> Counter:
    """How often each text was asked the labelling question, from a ``FakeLabeler`` log
    (the consensus's closed second questions, logged as ``closed: TEXT``, left out)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return Counter()
    lines = path.read_text(encoding="utf-8").splitlines()
    return Counter(x for x in lines if not x.startswith("closed: "))


class FakeLabeler(Labeler):
    """Scriptable labeler: queued outputs first (:meth:`enqueue`), then ``rule``.

    ``history`` keeps every request; ``latency`` simulates a slow endpoint; queued
    items may be exceptions (raised) to simulate transport errors; ``log`` appends
    one line per call to a file, so calls can be counted across processes.
    """

    def __init__(
        self,
        rule: Callable[[str, Sequence[str]], str] = keyword_label,
        *,
        latency: float = 0.0,
        log: str | None = None,
    ) -> None:
        self.id = "fake"
        self.rule = rule
        self.latency = latency
        self.log = log
        self.history: list[LabelRequest] = []
        self._queue: deque[str | Exception] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str) -> FakeLabeler:
        opts = dict(part.split("=", 1) for part in arg.split(",") if "=" in part)
        return cls(latency=float(opts.get("latency", 0)), log=opts.get("log"))

    @property
    def calls(self) -> int:
        return len(self.history)

    def enqueue(self, *outputs: str | Exception) -> None:
        with self._lock:
            self._queue.extend(outputs)

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        return [self._one(r) for r in requests]

    def complete(
        self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256
    ) -> LabelResponse:
        with self._lock:
            self.history.append(LabelRequest(prompt))
            queued = self._queue.popleft() if self._queue else None
        if isinstance(queued, Exception):
            raise queued
        output = queued if queued is not None else _complete_rule(prompt)
        return LabelResponse(output, Usage(len(prompt.split()), 20))

    def _one(self, request: LabelRequest) -> LabelResponse:
        with self._lock:
            self.history.append(request)
            queued = self._queue.popleft() if self._queue else None
            if self.log:
                with open(self.log, "a", encoding="utf-8") as fh:
                    kind = "closed: " if request.closed else ""  # another question
                    fh.write(kind + request.text.replace("\n", " ") + "\n")
        if self.latency:
            time.sleep(self.latency)
        if isinstance(queued, Exception):
            raise queued
        if queued is not None:
            output = queued
        elif request.closed and request.candidates:
            output = _closed_rule(request.text, request.candidates, request.max_labels)
        else:
            output = self.rule(request.text, request.candidates)
        return LabelResponse(output, Usage(len(request.text.split()) + 20, 4))


def _closed_rule(text: str, candidates: Sequence[str], max_labels: int = 1) -> str:
    """A closed answer: the candidates sharing a word with the text, else the first."""
    words = set(_WORD.findall(text.lower()))
    fits = [c for c in candidates if set(c.split("_")) & words]
    return ", ".join((fits or list(candidates[:1]))[:max_labels])


def _complete_rule(prompt: str) -> str:
    """Fake adjudication (two labels are the same when their names share a word), else a
    fake taxonomy answer: one line per frequent content word of the prompt's texts."""
    from collections import Counter

    from canonlabel.labelspace.adjudicate import BATCH, split_batch
    from canonlabel.labelspace.consensus import RECHECK, split_recheck_prompt

    if prompt.startswith(RECHECK):  # second questions: the closed rule of label_batch
        asked = enumerate(split_recheck_prompt(prompt), 1)
        return "".join(f"{n}: {_closed_rule(text, labels)}\n" for n, (text, labels) in asked)
    if prompt.startswith(BATCH):
        lines = []
        for n, (a, b) in enumerate(split_batch(prompt), 1):
            names = [block.splitlines()[0].split("_") for block in (a, b)]
            lines.append(f"{n}: {'same' if set(names[0]) & set(names[1]) else 'different'}")
        return "\n".join(lines) + "\n"

    words = Counter(
        w
        for w in _WORD.findall(prompt.lower().split("texts:")[-1])
        if w not in _STOP and len(w) > 3 and w[0].isalpha()
    )
    return "".join(f"{w}_topic: messages about {w}\n" for w, _ in words.most_common(5))


class FailingLabeler(Labeler):
    """Always raises a :class:`BackendError` (retryable or not)."""

    id = "failing"

    def __init__(self, retryable: bool = False) -> None:
        self.retryable = retryable

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        raise BackendError("simulated failure", retryable=self.retryable)


from canonlabel.testing.simulated import SimulatedLLM  # noqa: E402  (re-exported)

__all__ = ["FailingLabeler", "FakeLabeler", "HashEmbedder", "SimulatedLLM", "keyword_label"]
