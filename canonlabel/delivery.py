"""How the engine hands results back: hit rows, their commit, callbacks and counters.

Every answer (exact, cache, model or follower hit; LLM answer; failure) becomes one
``Result`` delivered through the item's callback, and, unless it failed, one stored row
committed before the callback runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from canonlabel.types import Result, Source

if TYPE_CHECKING:
    from canonlabel.memory import Memory

Callback = Callable[[Hashable, Result, "Exception | None"], None]


class Follower(NamedTuple):
    """An item that takes its leader's answer: how close it is and how it was matched."""

    item: Item
    similarity: float
    how: Source  # "exact" (same text key) or "cache" (a near-duplicate)


class Guess(NamedTuple):
    """What the router would answer for an item."""

    label: int
    score: float


class Near(NamedTuple):
    """An item's nearest cached neighbour: its stored label, the cache's score, its id."""

    label: int
    score: float
    item_id: int


@dataclass(eq=False)
class Item:
    token: Hashable
    text: str
    ext_id: str | None
    truncated: bool
    key: str
    timings: dict[str, float] = field(default_factory=dict)
    vector: np.ndarray | None = None
    followers: list[Follower] = field(default_factory=list)
    # what the router and the cache would say, audited if the item goes to the LLM
    guess: Guess | None = None
    near: Near | None = None


class Hit(NamedTuple):
    """A decided item: the result it is delivered and the row stored for it (after the
    insert, ``row["id"]`` is its item id)."""

    item: Item
    result: Result
    row: dict


def failure(text: str, ext_id: str | None, error: Exception, timings=None) -> Result:
    return Result(
        text=text,
        label=None,
        label_id=None,
        raw_label=None,
        source=None,
        id=ext_id,
        error=str(error),
        timings=timings or {},
    )


def followers_of(it: Item) -> Iterator[Follower]:
    """Items waiting on ``it``: its followers and, recursively, theirs (an exact
    duplicate of a text that itself follows a near-duplicate)."""
    for follower in it.followers:
        yield follower
        yield from followers_of(follower.item)


class Delivery:
    """Turns decided items into committed rows and delivered results, and holds each
    pending item's callback."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self._callback: dict[Item, Callback] = {}

    def watch(self, it: Item, on_done: Callback) -> None:
        """``it`` is pending: ``on_done`` gets its result."""
        self._callback[it] = on_done

    def hit(
        self,
        it: Item,
        label_id: int,
        raw,
        source: Source,
        sim: float,
        matched: int | None,
        name: str | None = None,
    ) -> Hit:
        """``name`` is given for a label created in the transaction being written.

        The row keeps the matched item's own (unresolved) label id, so the hit follows
        that label through later merges and their undo."""
        stored = label_id
        space = self.memory.space
        if name is None:
            label_id = space.resolve(label_id)
            name = space.names[label_id]
        result = Result(
            text=it.text,
            label=name,
            label_id=label_id,
            raw_label=raw,
            source=source,
            similarity=sim,
            truncated=it.truncated,
            id=it.ext_id,
            timings=it.timings,
        )
        row = self.row(it, stored, raw, source, sim, matched)
        if source == "cache":
            # Kept with or without store_hits: a hit's text is evidence of what its raw
            # label is used for (consolidation), whichever item happened to be asked.
            row.update(vector=it.vector, cached=self.memory.settings.store_hits)
        elif source == "model":  # kept for consolidation by items (it regroups every item)
            row.update(vector=it.vector)
        return Hit(it, result, row)

    def commit_hits(self, hits: list[Hit]) -> None:
        if not hits:
            return
        hits = self.memory.store.transaction(lambda conn: self.insert_hit_rows(conn, hits))
        self.after_commit(hits)
        for it, result, _ in hits:
            self.resolve(it, result, f"{result.source}_hits")

    def insert_hit_rows(self, conn, hits: list[Hit]) -> list[Hit]:
        """Insert hit rows; returns the hits with their item ids (``row["id"]``)."""
        if not hits:
            return []
        ids = self.memory.store.items.insert(conn, [h.row for h in hits])
        return [Hit(h.item, h.result, {**h.row, "id": i}) for h, i in zip(hits, ids)]

    def after_commit(self, hits: list[Hit]) -> None:
        """Committed hits join the semantic cache and teach the router."""
        self._cache_hit_rows(hits)
        self._learn(hits)

    def _cache_hit_rows(self, hits: list[Hit]) -> None:
        """After commit: cached hits join the semantic cache (a repeated (id, text) got
        the first row's id, and an item joins once)."""
        cached = [h.row for h in hits if h.row.get("cached")]
        if cached:
            self.memory.add_cached(
                [r["id"] for r in cached],
                [r["label_id"] for r in cached],
                [r["vector"] for r in cached],
            )

    def _learn(self, hits: list[Hit]) -> None:
        """After commit: items answered without the LLM train the router's next head
        (exact duplicates add nothing; cached hits are in the cache already)."""
        router = self.memory.router
        learn = [
            (h.row["label_id"], h.item.vector)
            for h in hits
            if h.result.source in ("cache", "model") and not h.row.get("cached")
        ]
        if router is not None and learn:
            router.remember(*zip(*learn, strict=True))

    # -- bookkeeping --------------------------------------------------------------------
    @staticmethod
    def row(it: Item, label_id, raw, source, sim, matched) -> dict:
        return {
            "ext_id": it.ext_id,
            "text": it.text,
            "text_key": it.key,
            "truncated": it.truncated,
            "label_id": label_id,
            "raw_label": raw,
            "source": source,
            "similarity": sim,
            "matched_item": matched,
        }

    def resolve(self, it: Item, result: Result, counter: str) -> None:
        self.deliver(self._callback.pop(it), it.token, result, None, counter)

    def fail(self, it: Item, error: Exception) -> None:
        self.deliver(
            self._callback.pop(it),
            it.token,
            failure(it.text, it.ext_id, error, it.timings),
            error,
            "failed",
        )

    def deliver(self, on_done, token, result, error, counter) -> None:
        self.memory.counters["items"] += 1
        self.memory.counters[counter] += 1
        on_done(token, result, error)
