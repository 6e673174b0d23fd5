"""One pass of the pipeline over a batch of texts (the engine behind ``classify_many``)."""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from canonlabel.canon import label_text
from canonlabel.errors import CanonlabelError, LabelError
from canonlabel.normalize import normalize, text_key
from canonlabel.types import Result, Usage

if TYPE_CHECKING:
    from canonlabel.pipeline import Classifier


@dataclass
class Item:
    pos: int
    text: str
    ext_id: str | None
    truncated: bool
    key: str
    timings: dict[str, float] = field(default_factory=dict)
    vector: np.ndarray | None = None


@dataclass
class Asked:
    """What a worker brings back from the LLM for one leader."""

    raw_label: str | None
    error: CanonlabelError | None
    usage: Usage
    calls: int
    seconds: float
    outputs: list[str]


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


class BatchRun:
    """Normalise -> exact/resume lookup -> embed -> cache search -> LLM for leaders.

    Misses become *leaders* (one LLM call each, up to ``concurrency`` at once); a later
    miss within ``min_similarity`` of a leader *follows* it and takes its label, exactly
    as it would have hit the cache had the leader been answered first. Paid results
    are committed one by one; unpaid hits in one transaction at the end.
    """

    def __init__(self, clf: Classifier, concurrency: int) -> None:
        self.clf = clf
        self.settings = clf.settings
        self.concurrency = max(1, concurrency)
        self.results: dict[int, Result] = {}
        self.errors: dict[int, Exception] = {}
        self.hit_rows: list[dict] = []
        self.followers: dict[int, list[tuple[Item, float]]] = defaultdict(list)
        self.duplicates: list[tuple[Item, Item]] = []
        self.futures: dict[Future, tuple[Item, tuple[str, ...]]] = {}
        self.answered: dict[int, tuple[int, str, int]] = {}  # leader pos -> label, raw, item
        self.pool: ThreadPoolExecutor | None = None

    def execute(self, texts, ids) -> tuple[list[Result], dict[int, Exception]]:
        items = self._normalise(texts, ids)
        pending = self._lookup(items)
        if pending:
            self._embed(pending)
            try:
                self._walk(pending)
            finally:
                if self.pool:
                    self.pool.shutdown(wait=True)
        for dup, first in self.duplicates:
            self._copy_exact(dup, first)
        self._store_hits()
        return [self.results[i] for i in range(len(texts))], self.errors

    # -- stages ---------------------------------------------------------------------------
    def _normalise(self, texts, ids) -> list[Item]:
        items = []
        for pos, (text, ext_id) in enumerate(zip(texts, ids, strict=False)):
            start = time.perf_counter()
            try:
                norm, truncated = normalize(text, self.settings.max_chars)
            except CanonlabelError as exc:
                self._fail(pos, text if isinstance(text, str) else repr(text), ext_id, exc)
                continue
            items.append(
                Item(
                    pos,
                    norm,
                    None if ext_id is None else str(ext_id),
                    truncated,
                    text_key(norm),
                    {"normalise": time.perf_counter() - start},
                )
            )
        return items

    def _lookup(self, items: list[Item]) -> list[Item]:
        """Resolve resumed and exact-duplicate items from the store; return the rest."""
        store, clf = self.clf.store, self.clf
        start = time.perf_counter()
        by_id = store.items_by_ext_id([it.ext_id for it in items if it.ext_id])
        by_key = store.items_by_text_key([it.key for it in items])
        paid = {} if self.settings.retry_failed else store.paid_failures([i.key for i in items])
        elapsed = (time.perf_counter() - start) / max(1, len(items))
        pending, first_of_key = [], {}
        for it in items:
            it.timings["search"] = elapsed
            row = by_id.get(it.ext_id) if it.ext_id else None
            if row is not None:
                self._done(it.pos, clf._result_from_stored(row, timings=it.timings), "resumed")
            elif (row := by_key.get(it.key)) is not None:
                result = clf._result_from_stored(
                    row,
                    source="exact",
                    similarity=1.0,
                    ext_id=it.ext_id,
                    text=it.text,
                    truncated=it.truncated,
                    timings=it.timings,
                )
                self._done(it.pos, result, "exact_hits")
                self.hit_rows.append(
                    self._hit_row(it, row.label_id, row.raw_label, "exact", 1.0, row.id)
                )
            elif it.key in paid:
                self._fail(it.pos, it.text, it.ext_id, LabelError(paid[it.key], []))
            elif it.key in first_of_key:
                self.duplicates.append((it, first_of_key[it.key]))
            else:
                first_of_key[it.key] = it
                pending.append(it)
        return pending

    def _embed(self, pending: list[Item]) -> None:
        start = time.perf_counter()
        vectors = self.clf.embedder.embed([it.text for it in pending])
        elapsed = time.perf_counter() - start
        self.clf.counters["embed_seconds"] += elapsed
        for it, vector in zip(pending, vectors, strict=False):
            it.vector = vector
            it.timings["embed"] = elapsed / len(pending)

    def _walk(self, pending: list[Item]) -> None:
        clf, threshold = self.clf, self.settings.min_similarity
        start = time.perf_counter()
        sims, keys = clf.cache.search(np.stack([it.vector for it in pending]), 1)
        per_item = (time.perf_counter() - start) / len(pending)
        leader_vecs = np.zeros((len(pending), clf.dim), dtype=np.float32)
        leaders: list[Item] = []
        for j, it in enumerate(pending):
            start = time.perf_counter()
            lead_sim, lead = -1.0, None
            if leaders:
                scores = leader_vecs[: len(leaders)] @ it.vector
                best = int(scores.argmax())
                lead_sim, lead = float(scores[best]), leaders[best]
            it.timings["search"] += per_item + time.perf_counter() - start
            cache_sim = float(sims[j, 0])
            if keys[j, 0] >= 0 and cache_sim >= threshold and cache_sim >= lead_sim:
                self._cache_hit(it, int(keys[j, 0]), cache_sim)
            elif lead is not None and lead_sim >= threshold:
                self._follow(it, lead, lead_sim)
            else:
                leader_vecs[len(leaders)] = it.vector
                leaders.append(it)
                self._submit(it)
        while self.futures:
            self._drain(block=True)

    # -- LLM leaders ------------------------------------------------------------------
    def _follow(self, it: Item, lead: Item, sim: float) -> None:
        if lead.pos in self.answered:
            self._take(it, *self.answered[lead.pos], sim=sim)
        elif lead.pos in self.errors:
            self._submit(it)  # the leader failed; this text may still get a valid label
        else:
            self.followers[lead.pos].append((it, sim))

    def _submit(self, it: Item) -> None:
        while len(self.futures) >= self.concurrency:
            self._drain(block=True)
        candidates = self.clf.candidates(it.text, it.vector)
        if self.concurrency == 1:
            self._finish(it, self.clf.ask(it.text, candidates), candidates)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="canonlabel-llm")
        self.futures[self.pool.submit(self.clf.ask, it.text, candidates)] = (it, candidates)

    def _drain(self, block: bool) -> None:
        done, _ = wait(
            list(self.futures), timeout=None if block else 0, return_when=FIRST_COMPLETED
        )
        for future in done:
            it, candidates = self.futures.pop(future)
            self._finish(it, future.result(), candidates)

    def _finish(self, it: Item, asked: Asked, candidates: tuple[str, ...]) -> None:
        clf, store = self.clf, self.clf.store
        clf.counters["llm_calls"] += asked.calls
        clf.counters["llm_seconds"] += asked.seconds
        clf.counters["prompt_tokens"] += asked.usage.prompt_tokens
        clf.counters["completion_tokens"] += asked.usage.completion_tokens
        it.timings["llm"] = asked.seconds
        if asked.error is not None:
            kind = "invalid_output" if isinstance(asked.error, LabelError) else "backend"
            with store.write() as c:
                store.record_failure(
                    c,
                    ext_id=it.ext_id,
                    text_key=it.key,
                    text=it.text,
                    kind=kind,
                    error=str(asked.error),
                    outputs=asked.outputs,
                )
            self._fail(it.pos, it.text, it.ext_id, asked.error, it.timings)
            for follower, _ in self.followers.pop(it.pos, []):
                self._submit(follower)  # its own text may still get a valid label
            return
        raw = asked.raw_label
        start = time.perf_counter()
        vector = None
        if raw not in clf.space.aliases:
            vector = clf.embedder.embed([label_text(raw)])[0]
            clf.counters["embed_seconds"] += time.perf_counter() - start
        decision = clf.space.decide(raw, vector, self.settings.label_similarity)
        it.timings["canonicalise"] = time.perf_counter() - start
        start = time.perf_counter()
        with store.write() as c:
            label_id = decision.label_id
            if label_id is None:
                label_id = store.insert_label(c, raw, vector)
                store.insert_alias(c, raw, label_id, None)
            elif not decision.known:
                store.insert_alias(c, raw, label_id, decision.similarity)
            row = self._hit_row(it, label_id, raw, "llm", None, None)
            row.update(
                vector=it.vector,
                cached=True,
                prompt_tokens=asked.usage.prompt_tokens,
                completion_tokens=asked.usage.completion_tokens,
            )
            item_id = store.insert_items(c, [row])[0]
        it.timings["store"] = time.perf_counter() - start
        if decision.label_id is None:
            clf.space.add_label(label_id, raw, vector)
        if not decision.known:
            clf.space.add_alias(raw, label_id)
        self._add_to_cache([item_id], [label_id], [it.vector])
        result = Result(
            text=it.text,
            label=clf.space.names[label_id],
            label_id=label_id,
            raw_label=raw,
            source="llm",
            truncated=it.truncated,
            id=it.ext_id,
            timings=it.timings,
            usage=asked.usage,
        )
        self._done(it.pos, result, "llm_items")
        self.answered[it.pos] = (label_id, raw, item_id)
        for follower, sim in self.followers.pop(it.pos, []):
            self._take(follower, label_id, raw, item_id, sim=sim)

    # -- hits -------------------------------------------------------------------------
    def _cache_hit(self, it: Item, item_id: int, sim: float) -> None:
        label_id = self.clf.space.resolve(self.clf._item_label[item_id])
        raw = self.clf.store.conn.execute(
            "SELECT raw_label FROM items WHERE id = ?", (item_id,)
        ).fetchone()[0]
        self._take(it, label_id, raw, item_id, sim=sim)

    def _take(self, it: Item, label_id: int, raw: str | None, item_id: int, *, sim: float) -> None:
        label_id = self.clf.space.resolve(label_id)
        result = Result(
            text=it.text,
            label=self.clf.space.names[label_id],
            label_id=label_id,
            raw_label=raw,
            source="cache",
            similarity=sim,
            truncated=it.truncated,
            id=it.ext_id,
            timings=it.timings,
        )
        self._done(it.pos, result, "cache_hits")
        row = self._hit_row(it, label_id, raw, "cache", sim, item_id)
        if self.settings.store_hits:
            row.update(vector=it.vector, cached=True)
        self.hit_rows.append(row)

    def _copy_exact(self, dup: Item, first: Item) -> None:
        if first.pos in self.errors:
            self._fail(dup.pos, dup.text, dup.ext_id, self.errors[first.pos], dup.timings)
            return
        base = self.results[first.pos]
        result = Result(
            text=dup.text,
            label=base.label,
            label_id=base.label_id,
            raw_label=base.raw_label,
            source="exact",
            similarity=1.0,
            truncated=dup.truncated,
            id=dup.ext_id,
            timings=dup.timings,
        )
        self._done(dup.pos, result, "exact_hits")
        self.hit_rows.append(self._hit_row(dup, base.label_id, base.raw_label, "exact", 1.0, None))

    def _store_hits(self) -> None:
        if not self.hit_rows:
            return
        store = self.clf.store
        with store.write() as c:
            ids = store.insert_items(c, self.hit_rows)
        cached = [(i, r) for i, r in zip(ids, self.hit_rows, strict=False) if r.get("cached")]
        if cached:
            self._add_to_cache(
                [i for i, _ in cached],
                [r["label_id"] for _, r in cached],
                [r["vector"] for _, r in cached],
            )

    def _add_to_cache(self, item_ids, label_ids, vectors) -> None:
        vectors = np.stack(vectors)
        self.clf.cache.add(np.array(item_ids), vectors)
        self.clf._item_label.update(zip(item_ids, label_ids, strict=False))
        self.clf.space.add_members(np.array(label_ids), vectors)

    # -- bookkeeping --------------------------------------------------------------------
    @staticmethod
    def _hit_row(it: Item, label_id, raw, source, sim, matched) -> dict:
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

    def _done(self, pos: int, result: Result, counter: str) -> None:
        self.results[pos] = result
        self.clf.counters["items"] += 1
        self.clf.counters[counter] += 1

    def _fail(self, pos, text, ext_id, error: Exception, timings=None) -> None:
        self.results[pos] = failure(text, ext_id, error, timings)
        self.errors[pos] = error
        self.clf.counters["items"] += 1
        self.clf.counters["failed"] += 1
