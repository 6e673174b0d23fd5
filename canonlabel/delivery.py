"""How the engine hands results back: hit rows, their commit, callbacks and counters.

Every answer (exact, cache, model or follower hit; LLM answer; failure) becomes one
``Result`` delivered through the item's callback, and, unless it failed, one stored row
committed before the callback runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from canonlabel.types import Result, Source

if TYPE_CHECKING:
    from canonlabel.config import Settings
    from canonlabel.memory import Memory

Callback = Callable[[Hashable, Result, "Exception | None"], None]


@dataclass(eq=False)
class Item:
    token: Hashable
    text: str
    ext_id: str | None
    truncated: bool
    key: str
    timings: dict[str, float] = field(default_factory=dict)
    vector: np.ndarray | None = None
    followers: list[tuple[Item, float, Source]] = field(default_factory=list)
    # what the router and the cache would say, audited if the item goes to the LLM:
    # (router label, confidence) and (nearest cached item's stored label, similarity)
    guess: tuple[int, float] | None = None
    near: tuple[int, float, int] | None = None  # ... and that item's id


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


def followers_of(it: Item):
    """Items waiting on ``it``: its followers and, recursively, theirs (an exact
    duplicate of a text that itself follows a near-duplicate)."""
    for f, sim, how in it.followers:
        yield f, sim, how
        yield from followers_of(f)


class Delivery:
    """Turning decided items into committed rows and delivered results (base of
    :class:`~canonlabel.engine.Engine`, which sets ``clf``, ``settings`` and callbacks)."""

    clf: Memory
    settings: Settings
    _callback: dict[Item, Callback]

    def _hit(
        self,
        it: Item,
        label_id: int,
        raw,
        source: Source,
        sim: float,
        matched: int | None,
        name: str | None = None,
    ):
        """``name`` is given for a label created in the transaction being written.

        The row keeps the matched item's own (unresolved) label id, so the hit follows
        that label through later merges and their undo."""
        stored = label_id
        if name is None:
            label_id = self.clf.space.resolve(label_id)
            name = self.clf.space.names[label_id]
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
        row = self._row(it, stored, raw, source, sim, matched)
        if source == "cache":
            # Kept with or without store_hits: a hit's text is evidence of what its raw
            # label is used for (consolidation), whichever item happened to be asked.
            row.update(vector=it.vector, cached=self.settings.store_hits)
        elif source == "model":  # kept for consolidation by items (it regroups every item)
            row.update(vector=it.vector)
        return it, result, row

    def _commit_hits(self, hits) -> None:
        if not hits:
            return
        hits = self.clf.store.transaction(lambda conn: self._insert_hit_rows(conn, hits))
        self._cache_hit_rows(hits)
        self._learn(hits)
        for it, result, _ in hits:
            self._resolve(it, result, f"{result.source}_hits")

    def _insert_hit_rows(self, conn, hits) -> list:
        """Insert hit rows; returns the hits with their item ids (``row["id"]``)."""
        if not hits:
            return []
        ids = self.clf.store.items.insert(conn, [row for _, _, row in hits])
        return [(it, result, {**row, "id": i}) for (it, result, row), i in zip(hits, ids)]

    def _cache_hit_rows(self, hits) -> None:
        """After commit: cached hits join the semantic cache (a repeated (id, text) got
        the first row's id, and an item joins once)."""
        cached = [row for _, _, row in hits if row.get("cached")]
        if cached:
            self._add_to_cache(
                [r["id"] for r in cached],
                [r["label_id"] for r in cached],
                [r["vector"] for r in cached],
            )

    def _learn(self, hits) -> None:
        """After commit: items answered without the LLM train the router's next head
        (exact duplicates add nothing; cached hits are in the cache already)."""
        router = self.clf.router
        learn = [
            (row["label_id"], it.vector)
            for it, result, row in hits
            if result.source in ("cache", "model") and not row.get("cached")
        ]
        if router is not None and learn:
            router.remember(*zip(*learn, strict=True))

    def _add_to_cache(self, item_ids, label_ids, vectors) -> None:
        self.clf.add_cached(item_ids, label_ids, vectors)

    # -- bookkeeping --------------------------------------------------------------------
    @staticmethod
    def _row(it: Item, label_id, raw, source, sim, matched) -> dict:
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

    def _resolve(self, it: Item, result: Result, counter: str) -> None:
        self._deliver(self._callback.pop(it), it.token, result, None, counter)

    def _fail(self, it: Item, error: Exception) -> None:
        self._deliver(
            self._callback.pop(it),
            it.token,
            failure(it.text, it.ext_id, error, it.timings),
            error,
            "failed",
        )

    def _deliver(self, on_done, token, result, error, counter) -> None:
        self.clf.counters["items"] += 1
        self.clf.counters[counter] += 1
        on_done(token, result, error)
