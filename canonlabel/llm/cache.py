"""A durable cache of LLM answers keyed by everything that shapes the prompt.

Wrap any labeler to never pay twice for the same question across runs (evaluation
sweeps, re-runs on another store). Deterministic labelers (temperature 0) only.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from canonlabel.llm.base import Labeler
from canonlabel.store.caches import AnswerCache
from canonlabel.types import LabelRequest, LabelResponse, Usage


class CachingLabeler(Labeler):
    """Answers repeated requests from a SQLite file; ``hits``/``misses`` count them."""

    def __init__(self, base: Labeler, path: str | Path) -> None:
        self.base = base
        self.id = base.id
        self.grouping, self.candidates = base.grouping, base.candidates
        self.max_error = base.max_error
        self.max_pairs = getattr(base, "max_pairs", 50)  # what one adjudication call may hold
        self.workers = getattr(base, "workers", 1)  # questions one call may group
        self.path = Path(path)
        self._answers = AnswerCache(self.path)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _key(self, r: LabelRequest) -> str:
        payload = json.dumps(
            [self.base.id, r.text, list(r.candidates), r.feedback, r.closed, r.max_labels]
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        out: list[LabelResponse | None] = []
        todo = []
        for i, r in enumerate(requests):
            row = self._answers.get(self._key(r))
            if row is None:
                todo.append(i)
                out.append(None)
            else:
                self.hits += 1
                usage = Usage(row.prompt_tokens, row.completion_tokens)
                out.append(LabelResponse(row.output, usage))
        if todo:
            answers = self.base.label_batch([requests[i] for i in todo])
            with self._lock:
                for i, a in zip(todo, answers):
                    self.misses += 1
                    out[i] = a
                    self._answers.put(
                        self._key(requests[i]),
                        a.output,
                        a.usage.prompt_tokens,
                        a.usage.completion_tokens,
                    )
        return out  # type: ignore[return-value]

    def complete(
        self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256
    ) -> LabelResponse:
        key = hashlib.sha256(
            json.dumps([self.base.id, "complete", prompt, grammar, max_tokens]).encode()
        ).hexdigest()
        row = self._answers.get(key)
        if row is not None:
            self.hits += 1
            return LabelResponse(row.output, Usage(row.prompt_tokens, row.completion_tokens))
        answer = self.base.complete(prompt, grammar=grammar, max_tokens=max_tokens)
        with self._lock:
            self.misses += 1
            self._answers.put(
                key, answer.output, answer.usage.prompt_tokens, answer.usage.completion_tokens
            )
        return answer
