"""Committing a leader's LLM answer: its cost, canonicalisation of the raw label, one
transaction for the leader and its followers, and the router audits it pays for.

On a shared store canonicalisation runs under the store's label-space lock after reading
the labels other processes committed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from canonlabel.asking import Asked
from canonlabel.canon import Decision, label_text
from canonlabel.delivery import Delivery, Hit, Item, followers_of
from canonlabel.dispatch import Answer
from canonlabel.errors import LabelError, RejectedTextError
from canonlabel.lookup import Leaders
from canonlabel.types import Result

if TYPE_CHECKING:
    from canonlabel.memory import Memory


class Committed(NamedTuple):
    """What the label-space transaction wrote for one answer."""

    label_id: int
    decision: Decision  # where the raw label went
    vector: np.ndarray | None  # the raw label's embedding, when it was new here
    item_id: int
    followers: list[Hit]


class Commit:
    """Turns each LLM answer into committed rows and delivered results."""

    def __init__(self, memory: Memory, leaders: Leaders, delivery: Delivery) -> None:
        self.memory = memory
        self.leaders = leaders
        self.delivery = delivery

    def finish(self, answer: Answer) -> None:
        it, asked = answer
        self._count(it, asked)
        self.leaders.unlead(it)
        if asked.error is not None:
            self._failed(it, asked)
        else:
            self._answered(it, asked)

    def _count(self, it: Item, asked: Asked) -> None:
        c = self.memory.counters
        c["llm_calls"] += asked.calls
        c["llm_seconds"] += asked.seconds
        c["prompt_tokens"] += asked.usage.prompt_tokens
        c["completion_tokens"] += asked.usage.completion_tokens
        c["cached_tokens"] += asked.usage.cached_tokens
        for event in asked.events:
            c[f"guard_{event}"] += 1
        it.timings["llm"] = asked.seconds

    def _failed(self, it: Item, asked: Asked) -> None:
        """Record the failure (a later run does not pay for it again unless told to)."""
        store, error = self.memory.store, asked.error
        assert error is not None  # only failed answers get here (see finish)
        kind = "invalid_output" if isinstance(error, LabelError) else "backend"
        kind = "rejected" if isinstance(error, RejectedTextError) else kind
        with store.write() as conn:
            store.failures.record(
                conn,
                ext_id=it.ext_id,
                text_key=it.key,
                text=it.text,
                kind=kind,
                error=str(error),
                outputs=asked.outputs,
            )
        store.release(it.key)
        self.delivery.fail(it, error)
        for follower, _, how in it.followers:
            if how == "exact":
                self.delivery.fail(follower, error)
            else:  # a near-duplicate may still get a valid label of its own
                self.leaders.lead(follower)

    def _answered(self, it: Item, asked: Asked) -> None:
        memory, store, raw = self.memory, self.memory.store, asked.raw_label
        assert raw is not None  # an answer without an error has its raw label
        start = time.perf_counter()
        vector = self._raw_vector(raw, asked)
        it.timings["canonicalise"] = time.perf_counter() - start
        start = time.perf_counter()
        done = store.transaction(
            lambda conn: self._canonicalise(conn, it, asked, vector), label_space=True
        )
        it.timings["store"] = time.perf_counter() - start
        store.release(it.key)
        memory.space.commit_raw_label(done.label_id, done.decision, done.vector)
        memory.add_cached([done.item_id], [done.label_id], [it.vector])
        self.delivery.after_commit(done.followers)
        self._audited(it, done.label_id, done.item_id)
        result = Result(
            text=it.text,
            label=memory.space.names[done.label_id],
            label_id=done.label_id,
            raw_label=raw,
            source="llm",
            truncated=it.truncated,
            id=it.ext_id,
            timings=it.timings,
            usage=asked.usage,
        )
        self.delivery.resolve(it, result, "llm_items")
        for f, result, _ in done.followers:
            self.delivery.resolve(f, result, f"{result.source}_hits")

    def _canonicalise(self, conn, it: Item, asked: Asked, vector) -> Committed:
        """Inside the label-space transaction: read what other processes committed,
        decide where the raw label goes, insert the answer and its followers' hits."""
        memory, raw = self.memory, asked.raw_label
        assert raw is not None  # only answers without an error get here (see finish)
        if memory.space.refresh():  # another process rewrote the label space
            memory.sync(force=True)
        if vector is None and raw not in memory.space.aliases:
            vector = self._raw_vector(raw, asked, force=True)
        label_id, decision = memory.space.write_raw_label(
            conn, raw, vector, memory.settings.label_similarity
        )
        name = raw if decision.label_id is None else memory.space.names[label_id]
        item_id, followers = self._insert_answer(conn, it, asked, label_id, name)
        return Committed(label_id, decision, vector, item_id, followers)

    def _raw_vector(self, raw: str, asked: Asked, force: bool = False) -> np.ndarray | None:
        """The embedding of a raw label this process does not know (None for a known one)."""
        memory = self.memory
        if raw in memory.space.aliases and not force:
            return None
        start = time.perf_counter()
        vector = asked.label_vector
        if vector is None:
            vector = memory.embedder.embed([label_text(raw)])[0]
        memory.counters["embed_seconds"] += time.perf_counter() - start + asked.embed_seconds
        return vector

    def _insert_answer(
        self, conn, it: Item, asked: Asked, label_id: int, name: str
    ) -> tuple[int, list[Hit]]:
        """The leader's row and its followers' hits, in one statement batch."""
        delivery, items = self.delivery, self.memory.store.items
        row = delivery.row(it, label_id, asked.raw_label, "llm", None, None)
        row.update(
            vector=it.vector,
            cached=True,
            prompt_tokens=asked.usage.prompt_tokens,
            completion_tokens=asked.usage.completion_tokens,
        )
        # followers point at the leader's item id, known only after its insert
        item_id = items.insert(conn, [row])[0]
        followers = [
            delivery.hit(f, label_id, asked.raw_label, how, sim, item_id, name)
            for f, sim, how in followers_of(it)
        ]
        return item_id, delivery.insert_hit_rows(conn, followers)

    def _audited(self, it: Item, label_id: int, item_id: int | None = None) -> None:
        """The LLM answered ``it`` (stored as ``item_id``): judge what the router and the
        cache would have said."""
        router = self.memory.router
        if router is None:
            return
        if it.guess is not None:
            router.audit(it.guess.label, it.guess.score, label_id, item_id)
        if it.near is not None:
            router.audit_cache(it.near.label, it.near.score, label_id, item_id, it.near.item_id)
