"""Finding what an item's answer can be without the LLM: normalisation, the resumed and
exact-duplicate lookup, batched embedding, the router, the semantic cache and the audit
sampling that keeps both honest.

Items these stages cannot answer become *leaders* (:class:`Leaders`) or followers of a
near-duplicate leader already waiting for the LLM.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

from canonlabel.delivery import (
    Delivery,
    Follower,
    Guess,
    Hit,
    Item,
    Near,
    failure,
    followers_of,
)
from canonlabel.errors import CanonlabelError, LabelError, RejectedTextError
from canonlabel.normalize import normalize, text_key

if TYPE_CHECKING:
    from canonlabel.memory import Memory


class Neighbour(NamedTuple):
    """An item's nearest cached neighbour as the cache finds it."""

    label: int  # the neighbour's stored (unresolved) label
    similarity: float
    item_id: int


def _vectors(items: list[Item]) -> np.ndarray:
    """The items' embeddings, one row each (every item is embedded before any search)."""
    return np.stack([cast(np.ndarray, it.vector) for it in items])


class Leaders:
    """Items that need the LLM: those waiting for a call and those in flight, by text key
    and by embedding (a near-duplicate miss follows the nearest one)."""

    def __init__(self, dim: int) -> None:
        self.waiting: deque[Item] = deque()  # not yet dispatched
        self.by_key: dict[str, Item] = {}  # not yet answered
        self._items: list[Item] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def lead(self, it: Item) -> None:
        self.by_key[it.key] = it
        n = len(self._items)
        if n == len(self._vectors):
            grown = np.zeros((max(64, 2 * n), self._vectors.shape[1]), dtype=np.float32)
            grown[:n] = self._vectors[:n]
            self._vectors = grown
        self._vectors[n] = it.vector
        self._items.append(it)
        self.waiting.append(it)

    def unlead(self, it: Item) -> None:
        self.by_key.pop(it.key, None)
        n = len(self._items)
        i = self._items.index(it)
        self._items.pop(i)
        self._vectors[i : n - 1] = self._vectors[i + 1 : n]

    def nearest(self, vector) -> tuple[float, Item | None]:
        """The unanswered leader most similar to ``vector``, and its similarity."""
        if not self._items:
            return -1.0, None
        sims = self._vectors[: len(self._items)] @ vector
        best = int(sims.argmax())
        return float(sims[best]), self._items[best]


class Lookup:
    """The stages before the LLM, on the classifier's memory; items they cannot answer
    join ``leaders``, the answered ones go to ``delivery``."""

    def __init__(self, memory: Memory, delivery: Delivery, leaders: Leaders) -> None:
        self.memory = memory
        self.delivery = delivery
        self.leaders = leaders
        self.rng = random.Random(0)  # audit sampling: reproducible runs

    def normalise(self, texts, ids, tokens, on_done, vectors=None) -> list[Item]:
        items = []
        vectors = [None] * len(texts) if vectors is None else vectors
        for text, ext_id, token, vector in zip(texts, ids, tokens, vectors):
            start = time.perf_counter()
            ext_id = None if ext_id is None else str(ext_id)
            try:
                norm, truncated = normalize(text, self.memory.settings.max_chars)
            except CanonlabelError as exc:
                shown = text if isinstance(text, str) else repr(text)
                self.delivery.deliver(on_done, token, failure(shown, ext_id, exc), exc, "failed")
                continue
            item = Item(
                token,
                norm,
                ext_id,
                truncated,
                text_key(norm),
                {"normalise": time.perf_counter() - start},
            )
            if vector is not None:
                item.vector = np.asarray(vector, dtype=np.float32)
            self.delivery.watch(item, on_done)
            items.append(item)
        return items

    def lookup(self, items: list[Item], hits: list[Hit]) -> list[Item]:
        """Resolve resumed and exact-duplicate items from the store; return the rest."""
        store, memory = self.memory.store, self.memory
        settings = memory.settings
        start = time.perf_counter()
        by_id, known_ids = store.items.by_identity(
            [(it.ext_id, it.key) for it in items if it.ext_id]
        )
        by_key = store.items.by_text_key([it.key for it in items])
        paid = {} if settings.retry_failed else store.failures.paid([i.key for i in items])
        memory.ensure_labels([r.label_id for r in (*by_id.values(), *by_key.values())])
        elapsed = (time.perf_counter() - start) / max(1, len(items))
        pending: list[Item] = []
        batch_first: dict[str, Item] = {}
        for it in items:
            it.timings["search"] = elapsed
            row = by_id.get((it.ext_id, it.key)) if it.ext_id else None
            if row is not None:
                result = memory.result_from_stored(row, timings=it.timings)
                self.delivery.resolve(it, result, "resumed")
                continue
            if it.ext_id in known_ids:  # another text under a known id: a new item
                memory.counters["reused_ids"] += 1
            if (row := by_key.get(it.key)) is not None:
                hits.append(
                    self.delivery.hit(it, row.label_id, row.raw_label, "exact", 1.0, row.id)
                )
            elif it.key in paid:
                kind, message = paid[it.key]
                self.delivery.fail(
                    it, (RejectedTextError if kind == "rejected" else LabelError)(message, [])
                )
            elif (leader := self.leaders.by_key.get(it.key) or batch_first.get(it.key)) is not None:
                leader.followers.append(Follower(it, 1.0, "exact"))
            else:
                batch_first[it.key] = it
                pending.append(it)
        return pending

    def embed(self, pending: list[Item]) -> None:
        todo = [it for it in pending if it.vector is None]
        if not todo:
            return
        start = time.perf_counter()
        vectors = self.memory.embedder.embed([it.text for it in todo])
        elapsed = time.perf_counter() - start
        self.memory.counters["embed_seconds"] += elapsed
        for it, vector in zip(todo, vectors):
            it.vector = vector
            it.timings["embed"] = elapsed / len(todo)

    def _route(
        self, pending: list[Item], near: list[Neighbour | None], hits: list[Hit]
    ) -> tuple[list[Item], list[Neighbour | None]]:
        """Items the router answers become ``model`` hits (but an ``audit_rate`` share of
        them goes to the LLM instead); every other item carries the router's guess, so
        the LLM's answer audits it for free. ``near``: each item's nearest cached
        neighbour or None. Returns the items left for cache and LLM, with their neighbours."""
        router = self.memory.router
        if router is None:
            return pending, near
        start = time.perf_counter()
        labels, confs = router.predict(_vectors(pending))
        scores = [
            router.head_score(label, conf, n and n.label) if label >= 0 else conf
            for label, conf, n in zip(labels.tolist(), confs.tolist(), near)
        ]
        router.scored(labels[labels >= 0], np.asarray(scores)[labels >= 0])
        rest, rest_near, answered = [], [], []
        for it, n, label, conf, score in zip(
            pending, near, labels.tolist(), confs.tolist(), scores
        ):
            if label >= 0:
                it.guess = Guess(label, score)  # a free audit if it goes to the LLM
            if label < 0 or not router.answers(label, score):
                rest.append(it)
                rest_near.append(n)
            elif self._audit_now():
                self.leaders.lead(it)  # straight to the LLM: an audit of what the router says
            else:
                answered.append((it, label, conf, n))
        self._model_hits(answered, hits)
        self.memory.counters["route_seconds"] += time.perf_counter() - start
        return rest, rest_near

    def _model_hits(self, answered, hits: list[Hit]) -> None:
        """Rows for items the head answers: (item, root label, confidence, neighbour).

        One whose nearest cached neighbour holds the same label keeps that neighbour's
        raw label and stored label id and names it as its match, as a cache hit does: a
        consolidation or a split by hand that divides the label (two close intents a
        name-only merge had joined) then takes the item where its nearest LLM-answered
        text goes, instead of leaving it with whichever part keeps the id."""
        resolve = self.memory.space.resolve
        follows = [n is not None and resolve(n.label) == label for _, label, _, n in answered]
        ids = [n.item_id for (_, _, _, n), f in zip(answered, follows) if f]
        raws = self.memory.store.items.raw_labels(ids) if ids else {}
        for (it, label, conf, n), follow in zip(answered, follows):
            if follow and raws.get(n.item_id) is not None:
                hit = self.delivery.hit(it, n.label, raws[n.item_id], "model", conf, n.item_id)
                hits.append(hit)
            else:
                hits.append(self.delivery.hit(it, label, None, "model", conf, None))

    def _neighbours(self, pending: list[Item]) -> list[Neighbour | None]:
        """Each item's nearest cached neighbour, if the cache holds any."""
        memory = self.memory
        start = time.perf_counter()
        sims, keys = memory.cache.search(_vectors(pending), 1)
        labels = memory.item_labels([int(k) for k in keys[:, 0] if k >= 0])
        per_item = (time.perf_counter() - start) / len(pending)
        for it in pending:
            it.timings["search"] += per_item
        return [
            Neighbour(labels[int(k)], float(sim), int(k)) if k >= 0 else None
            for sim, k in zip(sims[:, 0].tolist(), keys[:, 0].tolist())
        ]

    def search(self, pending: list[Item], hits: list[Hit]) -> None:
        """Answer from the router or the cache, follow a near-duplicate leader, or lead."""
        pending, near = self._route(pending, self._neighbours(pending), hits)
        if not pending:
            return
        router = self.memory.router
        scores = [
            None if n is None else self._cache_score(it, n.label, n.similarity)
            for it, n in zip(pending, near)
        ]
        if router is not None:
            found = [(n.label, s) for n, s in zip(near, scores) if n is not None]
            if found:
                router.cache_scored(*zip(*found, strict=True))
        settings = self.memory.settings
        follow_at = settings.min_similarity if router is None else router.follow_threshold()
        cache_hits: list[tuple[Item, int, int, float]] = []
        for it, n, score in zip(pending, near, scores):
            start = time.perf_counter()
            lead_sim, lead = self.leaders.nearest(it.vector)
            it.timings["search"] += time.perf_counter() - start
            # (the score is a float wherever there is a neighbour)
            if n is not None:
                # a free audit if it goes to the LLM
                it.near = Near(n.label, cast(float, score), n.item_id)
            if (
                n is not None
                and n.similarity >= lead_sim
                and self._cache_answers(n.label, n.similarity, cast(float, score))
            ):
                if self._audit_now():
                    self.leaders.lead(it)
                else:
                    cache_hits.append((it, n.label, n.item_id, n.similarity))
            elif lead is not None and lead_sim >= follow_at:
                lead.followers.append(Follower(it, lead_sim, "cache"))
            else:
                self.leaders.lead(it)
        self._cache_hits(cache_hits, hits)

    def _cache_hits(self, cache_hits, hits: list[Hit]) -> None:
        """Rows for items the cache answers: (item, stored label, matched item, similarity)."""
        raws = self.memory.store.items.raw_labels([item_id for _, _, item_id, _ in cache_hits])
        for it, label_id, item_id, sim in cache_hits:
            hits.append(self.delivery.hit(it, label_id, raws[item_id], "cache", sim, item_id))
            # exact duplicates later in the batch follow this item, not an LLM call
            hits += [
                self.delivery.hit(f, label_id, raws[item_id], how, f_sim, item_id)
                for f, f_sim, how in followers_of(it)
            ]

    def _cache_score(self, it: Item, stored_label: int, similarity: float) -> float:
        router = self.memory.router
        if router is None:
            return similarity
        return router.cache_score(stored_label, similarity, it.guess and it.guess.label)

    def _cache_answers(self, stored_label: int, similarity: float, score: float) -> bool:
        """Whether the neighbour answers: under the router, its audited (laned) threshold
        per label; else ``min_similarity``."""
        router = self.memory.router
        if router is None:
            return similarity >= self.memory.settings.min_similarity
        return router.cache_answers(stored_label, score)

    def _audit_now(self) -> bool:
        """Whether this would-be non-LLM answer goes to the LLM too, as a random audit."""
        rate = self.memory.settings.audit_rate
        if self.memory.router is None or rate <= 0 or self.rng.random() >= rate:
            return False
        self.memory.counters["audits"] += 1
        return True
