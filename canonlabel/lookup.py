"""Finding what an item's answer can be without the LLM (base of
:class:`~canonlabel.engine.Engine`): normalisation, the resumed and exact-duplicate lookup,
batched embedding, the router, the semantic cache and the audits that keep both honest.

Items these stages cannot answer become *leaders* (:meth:`Engine._lead`) or followers of
a near-duplicate leader already waiting for the LLM.
"""

from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING

import numpy as np

from canonlabel.delivery import Delivery, Item, failure, followers_of
from canonlabel.errors import CanonlabelError, LabelError, RejectedTextError
from canonlabel.normalize import normalize, text_key

if TYPE_CHECKING:
    from canonlabel.memory import Memory


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
        by_id, known_ids = store.items_by_identity(
            [(it.ext_id, it.key) for it in items if it.ext_id]
        )
        by_key = store.items_by_text_key([it.key for it in items])
        paid = {} if self.settings.retry_failed else store.paid_failures([i.key for i in items])
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

    def _route(self, pending: list[Item], hits) -> list[Item]:
        """Items the router answers become ``model`` hits (but an ``audit_rate`` share of
        them goes to the LLM instead); every other item carries the router's guess, so
        the LLM's answer audits it for free. Returns the items left for cache and LLM."""
        router = self.clf.router
        if router is None:
            return pending
        start = time.perf_counter()
        labels, confs = router.predict(np.stack([it.vector for it in pending]))
        router.scored(labels[labels >= 0], confs[labels >= 0])
        rest = []
        for it, label, conf in zip(pending, labels.tolist(), confs.tolist()):
            if label < 0:
                rest.append(it)
                continue
            it.guess = (label, conf)  # a free audit if it goes to the LLM
            if not router.answers(label, conf):
                rest.append(it)
            elif self._audit_now():
                self._lead(it)  # straight to the LLM: an audit of what the router would say
            else:
                hits.append(self._hit(it, label, None, "model", conf, None))
        self.clf.counters["route_seconds"] += time.perf_counter() - start
        return rest

    def _search(self, pending: list[Item], hits) -> None:
        pending = self._route(pending, hits)
        if not pending:
            return
        clf = self.clf
        start = time.perf_counter()
        sims, keys = clf.cache.search(np.stack([it.vector for it in pending]), 1)
        per_item = (time.perf_counter() - start) / len(pending)
        found = keys[:, 0] >= 0
        near = clf.item_labels(keys[found, 0].tolist())
        if clf.router is not None and found.any():
            clf.router.cache_scored([near[int(k)] for k in keys[found, 0]], sims[found, 0])
        follow_at = self._cache_threshold(None)
        cache_hits: list[tuple[Item, int, float]] = []
        for j, it in enumerate(pending):
            start = time.perf_counter()
            lead_sim, lead = -1.0, None
            if self._leaders:
                scores = self._leader_vecs[: len(self._leaders)] @ it.vector
                best = int(scores.argmax())
                lead_sim, lead = float(scores[best]), self._leaders[best]
            it.timings["search"] += per_item + time.perf_counter() - start
            key, cache_sim = int(keys[j, 0]), float(sims[j, 0])
            at = self._cache_threshold(near[key]) if key >= 0 else math.inf
            if key >= 0:
                it.near = (near[key], cache_sim)  # a free audit if it goes to the LLM
            if key >= 0 and cache_sim >= at and cache_sim >= lead_sim:
                if self._audit_now():
                    self._lead(it)
                else:
                    cache_hits.append((it, key, cache_sim))
            elif lead is not None and lead_sim >= follow_at:
                lead.followers.append((it, lead_sim, "cache"))
            else:
                self._lead(it)
        raws = clf.store.raw_labels([item_id for _, item_id, _ in cache_hits])
        for it, item_id, sim in cache_hits:
            label_id = near[item_id]
            hits.append(self._hit(it, label_id, raws[item_id], "cache", sim, item_id))
            # exact duplicates later in the batch follow this item, not an LLM call
            hits += [
                self._hit(f, label_id, raws[item_id], how, f_sim, item_id)
                for f, f_sim, how in followers_of(it)
            ]

    def _cache_threshold(self, stored_label: int | None) -> float:
        """Similarity a cache hit needs: the audited one per label under the router,
        else ``min_similarity``."""
        router = self.clf.router
        if router is None:
            return self.settings.min_similarity
        return router.cache_threshold(stored_label)

    def _audit_now(self) -> bool:
        """Whether this would-be non-LLM answer goes to the LLM too, as a random audit."""
        rate = self.settings.audit_rate
        if self.clf.router is None or rate <= 0 or self._rng.random() >= rate:
            return False
        self.clf.counters["audits"] += 1
        return True

    def _audited(self, it: Item, label_id: int) -> None:
        """The LLM answered ``it``: judge what the router and the cache would have said."""
        router = self.clf.router
        if router is None:
            return
        if it.guess is not None:
            router.audit(it.guess[0], it.guess[1], label_id)
        if it.near is not None:
            router.audit_cache(it.near[0], it.near[1], label_id)
