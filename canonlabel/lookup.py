"""Finding what an item's answer can be without the LLM (base of
:class:`~canonlabel.engine.Engine`): normalisation, the resumed and exact-duplicate lookup,
batched embedding, the router, the semantic cache and the audits that keep both honest.

Items these stages cannot answer become *leaders* (:meth:`Engine._lead`) or followers of
a near-duplicate leader already waiting for the LLM.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, cast

import numpy as np

from canonlabel.delivery import Delivery, Item, failure, followers_of
from canonlabel.errors import CanonlabelError, LabelError, RejectedTextError
from canonlabel.normalize import normalize, text_key

if TYPE_CHECKING:
    from canonlabel.memory import Memory


def _vectors(items: list[Item]) -> np.ndarray:
    """The items' embeddings, one row each (every item is embedded before any search)."""
    return np.stack([cast(np.ndarray, it.vector) for it in items])


class Lookup(Delivery):
    """The stages before the LLM. The engine sets ``clf``, ``settings``, ``_rng`` and the
    leader state (``by_key``, ``_leaders``, ``_leader_vecs``) and provides ``_lead``."""

    clf: Memory
    by_key: dict[str, Item]
    _leaders: list[Item]
    _leader_vecs: np.ndarray
    _rng: random.Random

    def _lead(self, it: Item) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    def _normalise(self, texts, ids, tokens, on_done, vectors=None) -> list[Item]:
        items = []
        vectors = [None] * len(texts) if vectors is None else vectors
        for text, ext_id, token, vector in zip(texts, ids, tokens, vectors):
            start = time.perf_counter()
            ext_id = None if ext_id is None else str(ext_id)
            try:
                norm, truncated = normalize(text, self.settings.max_chars)
            except CanonlabelError as exc:
                shown = text if isinstance(text, str) else repr(text)
                self._deliver(on_done, token, failure(shown, ext_id, exc), exc, "failed")
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
            self._callback[item] = on_done
            items.append(item)
        return items

    def _lookup(self, items: list[Item], hits) -> list[Item]:
        """Resolve resumed and exact-duplicate items from the store; return the rest."""
        store, clf = self.clf.store, self.clf
        start = time.perf_counter()
        by_id, known_ids = store.items.by_identity(
            [(it.ext_id, it.key) for it in items if it.ext_id]
        )
        by_key = store.items.by_text_key([it.key for it in items])
        paid = {} if self.settings.retry_failed else store.failures.paid([i.key for i in items])
        clf.know([r.label_id for r in (*by_id.values(), *by_key.values())])
        elapsed = (time.perf_counter() - start) / max(1, len(items))
        pending: list[Item] = []
        batch_first: dict[str, Item] = {}
        for it in items:
            it.timings["search"] = elapsed
            row = by_id.get((it.ext_id, it.key)) if it.ext_id else None
            if row is not None:
                self._resolve(it, clf.result_from_stored(row, timings=it.timings), "resumed")
                continue
            if it.ext_id in known_ids:  # another text under a known id: a new item
                clf.counters["reused_ids"] += 1
            if (row := by_key.get(it.key)) is not None:
                hits.append(self._hit(it, row.label_id, row.raw_label, "exact", 1.0, row.id))
            elif it.key in paid:
                kind, message = paid[it.key]
                self._fail(
                    it, (RejectedTextError if kind == "rejected" else LabelError)(message, [])
                )
            elif (leader := self.by_key.get(it.key) or batch_first.get(it.key)) is not None:
                leader.followers.append((it, 1.0, "exact"))
            else:
                batch_first[it.key] = it
                pending.append(it)
        return pending

    def _embed(self, pending: list[Item]) -> None:
        todo = [it for it in pending if it.vector is None]
        if not todo:
            return
        start = time.perf_counter()
        vectors = self.clf.embedder.embed([it.text for it in todo])
        elapsed = time.perf_counter() - start
        self.clf.counters["embed_seconds"] += elapsed
        for it, vector in zip(todo, vectors):
            it.vector = vector
            it.timings["embed"] = elapsed / len(todo)

    def _route(self, pending: list[Item], near: list, hits) -> tuple[list[Item], list]:
        """Items the router answers become ``model`` hits (but an ``audit_rate`` share of
        them goes to the LLM instead); every other item carries the router's guess, so
        the LLM's answer audits it for free. ``near``: each item's nearest cached
        neighbour (stored label, similarity, item id) or None. Returns the items left for cache
        and LLM, with their neighbours."""
        router = self.clf.router
        if router is None:
            return pending, near
        start = time.perf_counter()
        labels, confs = router.predict(_vectors(pending))
        scores = [
            router.head_score(label, conf, n and n[0]) if label >= 0 else conf
            for label, conf, n in zip(labels.tolist(), confs.tolist(), near)
        ]
        router.scored(labels[labels >= 0], np.asarray(scores)[labels >= 0])
        rest, rest_near, answered = [], [], []
        for it, n, label, conf, score in zip(
            pending, near, labels.tolist(), confs.tolist(), scores
        ):
            if label >= 0:
                it.guess = (label, score)  # a free audit if it goes to the LLM
            if label < 0 or not router.answers(label, score):
                rest.append(it)
                rest_near.append(n)
            elif self._audit_now():
                self._lead(it)  # straight to the LLM: an audit of what the router would say
            else:
                answered.append((it, label, conf, n))
        self._model_hits(answered, hits)
        self.clf.counters["route_seconds"] += time.perf_counter() - start
        return rest, rest_near

    def _model_hits(self, answered, hits) -> None:
        """Rows for items the head answers: (item, root label, confidence, neighbour).

        One whose nearest cached neighbour holds the same label keeps that neighbour's
        raw label and stored label id and names it as its match, as a cache hit does: a
        consolidation or a split by hand that divides the label (two close intents a
        name-only merge had joined) then takes the item where its nearest LLM-answered
        text goes, instead of leaving it with whichever part keeps the id."""
        resolve = self.clf.space.resolve
        follows = [n is not None and resolve(n[0]) == label for _, label, _, n in answered]
        ids = [n[2] for (_, _, _, n), f in zip(answered, follows) if f]
        raws = self.clf.store.items.raw_labels(ids) if ids else {}
        for (it, label, conf, n), follow in zip(answered, follows):
            if follow and raws.get(n[2]) is not None:
                hits.append(self._hit(it, n[0], raws[n[2]], "model", conf, n[2]))
            else:
                hits.append(self._hit(it, label, None, "model", conf, None))

    def _neighbours(self, pending: list[Item]) -> list[tuple[int, float, int] | None]:
        """Each item's nearest cached neighbour: (stored label, similarity, item id)."""
        clf = self.clf
        start = time.perf_counter()
        sims, keys = clf.cache.search(_vectors(pending), 1)
        labels = clf.item_labels([int(k) for k in keys[:, 0] if k >= 0])
        per_item = (time.perf_counter() - start) / len(pending)
        for it in pending:
            it.timings["search"] += per_item
        return [
            (labels[int(k)], float(sim), int(k)) if k >= 0 else None
            for sim, k in zip(sims[:, 0].tolist(), keys[:, 0].tolist())
        ]

    def _search(self, pending: list[Item], hits) -> None:
        pending, near = self._route(pending, self._neighbours(pending), hits)
        if not pending:
            return
        router = self.clf.router
        scores = [
            None if n is None else self._cache_score(it, n[0], n[1]) for it, n in zip(pending, near)
        ]
        if router is not None:
            found = [(n[0], s) for n, s in zip(near, scores) if n is not None]
            if found:
                router.cache_scored(*zip(*found, strict=True))
        follow_at = self.settings.min_similarity if router is None else router.follow_threshold()
        cache_hits: list[tuple[Item, int, int, float]] = []
        for it, n, score in zip(pending, near, scores):
            start = time.perf_counter()
            lead_sim, lead = -1.0, None
            if self._leaders:
                sims = self._leader_vecs[: len(self._leaders)] @ it.vector
                best = int(sims.argmax())
                lead_sim, lead = float(sims[best]), self._leaders[best]
            it.timings["search"] += time.perf_counter() - start
            # (the score is a float wherever there is a neighbour)
            if n is not None:
                it.near = (n[0], cast(float, score), n[2])  # a free audit if it goes to the LLM
            if (
                n is not None
                and n[1] >= lead_sim
                and self._cache_answers(n[0], n[1], cast(float, score))
            ):
                if self._audit_now():
                    self._lead(it)
                else:
                    cache_hits.append((it, n[0], n[2], n[1]))
            elif lead is not None and lead_sim >= follow_at:
                lead.followers.append((it, lead_sim, "cache"))
            else:
                self._lead(it)
        self._cache_hits(cache_hits, hits)

    def _cache_hits(self, cache_hits, hits) -> None:
        """Rows for items the cache answers: (item, stored label, matched item, similarity)."""
        raws = self.clf.store.items.raw_labels([item_id for _, _, item_id, _ in cache_hits])
        for it, label_id, item_id, sim in cache_hits:
            hits.append(self._hit(it, label_id, raws[item_id], "cache", sim, item_id))
            # exact duplicates later in the batch follow this item, not an LLM call
            hits += [
                self._hit(f, label_id, raws[item_id], how, f_sim, item_id)
                for f, f_sim, how in followers_of(it)
            ]

    def _cache_score(self, it: Item, stored_label: int, similarity: float) -> float:
        router = self.clf.router
        if router is None:
            return similarity
        return router.cache_score(stored_label, similarity, it.guess and it.guess[0])

    def _cache_answers(self, stored_label: int, similarity: float, score: float) -> bool:
        """Whether the neighbour answers: under the router, its audited (laned) threshold
        per label; else ``min_similarity``."""
        router = self.clf.router
        if router is None:
            return similarity >= self.settings.min_similarity
        return router.cache_answers(stored_label, score)

    def _audit_now(self) -> bool:
        """Whether this would-be non-LLM answer goes to the LLM too, as a random audit."""
        rate = self.settings.audit_rate
        if self.clf.router is None or rate <= 0 or self._rng.random() >= rate:
            return False
        self.clf.counters["audits"] += 1
        return True

    def _audited(self, it: Item, label_id: int, item_id: int | None = None) -> None:
        """The LLM answered ``it`` (stored as ``item_id``): judge what the router and the
        cache would have said."""
        router = self.clf.router
        if router is None:
            return
        if it.guess is not None:
            router.audit(it.guess[0], it.guess[1], label_id, item_id)
        if it.near is not None:
            router.audit_cache(it.near[0], it.near[1], label_id, item_id, it.near[2])
