"""What a classifier has learned and the primitive steps the engine runs on it.

:class:`Memory` holds the store, the backends, the label space and the semantic cache,
keeps them in step with a shared store, and owns the classifier's
:class:`~canonlabel.labelspace.maintenance.Consolidation`. The engine works on a
``Memory``; :class:`~canonlabel.pipeline.Classifier` adds the public API on top.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from dataclasses import asdict
from typing import cast

import numpy as np

from canonlabel.config import Settings
from canonlabel.embed import Embedder
from canonlabel.errors import ConfigError
from canonlabel.index import ExactIndex
from canonlabel.labelspace import LabelSpace
from canonlabel.labelspace.maintenance import Consolidation
from canonlabel.llm import Labeler
from canonlabel.router import Router
from canonlabel.store import CachedItems, Store, StoredItem
from canonlabel.types import Grouping, Result, Source


def shown_candidates(settings: Settings, labeler) -> int:
    """How many existing labels the LLM is shown: the setting, else the LLM's own (0 for
    the bundled 270M model), else 3."""
    if settings.candidates is not None:
        return settings.candidates
    own = getattr(labeler, "candidates", None)
    return 3 if own is None else own


def error_bound(settings: Settings, labeler) -> float:
    """The router's bound on non-LLM answers: the setting, else the LLM's own (0.10 for
    the bundled 270M model, which disagrees with itself about 9% of the time), else 0.05."""
    if settings.max_error is not None:
        return settings.max_error
    own = getattr(labeler, "max_error", None)
    return 0.05 if own is None else own


def _release_memory() -> None:
    """Give the O(R²) similarity matrices of a consolidation back to the OS.

    glibc keeps freed large blocks in the heap once its mmap threshold has adapted, so
    without this a long-running service's RSS climbs in steps at every consolidation
    (benchmarks/faults.py load). A no-op where ``malloc_trim`` does not exist."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_SYNC_LOOKBACK = 10_000  # item ids re-read at each sync (transactions commit out of order)


class Memory:
    """Store, backends, label space and semantic cache of one classifier."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        labeler: Labeler,
        settings: Settings | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        self.store, self.embedder, self.labeler = store, embedder, labeler
        self.dim = embedder.dim
        self.read_only = read_only
        try:
            self._bind()
            self.reload()
        except BaseException:
            store.close()  # a Memory owns its store: release the writer lock at once
            raise
        # counts (int) and seconds (float: embed_seconds, llm_seconds, route_seconds)
        self.counters = cast("dict[str, float]", Counter())
        self.consolidation = Consolidation(self, _release_memory)

    def _bind(self) -> None:
        store = self.store
        if not self.read_only:  # before loading state, so a queued writer sees the first's work
            store.lock_writer(self.settings.lock_wait)
        store.bind_embedder(self.embedder.id, self.dim, write=not self.read_only)
        if not self.read_only:
            meta: dict[str, object] = {
                "min_similarity": self.settings.min_similarity,
                "label_similarity": self.settings.label_similarity,
            }
            if self.labeler.id != "none":  # a command that loads no LLM keeps the record
                grouping = getattr(self.labeler, "grouping", None)
                meta |= {"labeler": self.labeler.id, "grouping": grouping and asdict(grouping)}
            store.set_meta(meta)

    def grouping(self) -> Grouping:
        """Consolidation's settings: what the user set, else the labelling LLM's own (as
        the store recorded it, so a later command that loads no LLM groups the same way),
        else the generic defaults."""
        s = self.settings
        recorded = json.loads(self.store.meta().get("grouping", "null") or "null")
        base = Grouping(**recorded) if recorded else Grouping()
        return Grouping(
            base.name_weight if s.consolidate_name_weight is None else s.consolidate_name_weight,
            base.threshold if s.consolidate_threshold is None else s.consolidate_threshold,
            base.adjudication_share if s.adjudication_share is None else s.adjudication_share,
            base.by if s.consolidate_by is None else s.consolidate_by,
        )

    def reload(self) -> None:
        """Rebuild the in-memory label space and cache from the store."""
        cached = self.store.items.cached(self.dim)
        self.space = LabelSpace.load(self.store, self.dim, self.embedder, cached)
        self._load_cache(cached)
        self.consolidated_at = len(self.space.aliases)  # raw labels at the last consolidation
        self.router = (
            Router(self.settings, self.space, error_bound(self.settings, self.labeler))
            if self.settings.router
            else None
        )
        self.categories: dict[int, str] = self.store.categories.of_labels()
        self._synced = time.monotonic()

    def _load_cache(self, cached: CachedItems) -> None:
        if self.settings.index == "pgvector":
            if not self.store.shared:
                raise ConfigError(
                    "index pgvector needs a postgresql:// store; use index memory with SQLite"
                )
            from canonlabel.index import PgVectorIndex

            self.cache = PgVectorIndex(self.store, self.dim, self.settings.hnsw_ef_search)
        else:
            self.cache = ExactIndex(self.dim)
            self.cache.add(cached.ids, cached.vectors)
        self._cached_ids = set(cached.ids.tolist())
        self._cache_mark = int(cached.ids.max()) if len(cached.ids) else 0

    def add_cached(self, item_ids, label_ids, vectors) -> None:
        """Committed items join the semantic cache (each item once)."""
        keep = [n for n, i in enumerate(item_ids) if int(i) not in self._cached_ids]
        if not keep:
            return
        ids = np.array([int(item_ids[n]) for n in keep], dtype=np.int64)
        labels = np.array([int(label_ids[n]) for n in keep], dtype=np.int64)
        vectors = np.stack([vectors[n] for n in keep])
        self._cached_ids.update(ids.tolist())
        self._cache_mark = max(self._cache_mark, int(ids.max()))
        self.cache.add(ids, vectors)
        self.space.add_members(ids, labels, vectors)

    def sync(self, *, force: bool = False) -> None:
        """On a shared store, take in what other processes committed: new labels, aliases
        and cached items (every ``sync_seconds``), or everything after a rewrite."""
        if not self.store.shared:
            return
        now = time.monotonic()
        if not force and now - self._synced < self.settings.sync_seconds:
            return
        self._synced = now
        # Items first, labels second: an item's label was committed before the item, so
        # every label the items name is read. Ids come from a sequence, not in commit
        # order, so a window of recent ids is read again for late commits.
        after = max(0, self._cache_mark - _SYNC_LOOKBACK)
        new = [i for i in self.store.items.cached_ids(after) if i not in self._cached_ids]
        ids, vectors, labels = self.store.items.cached_by_id(new, self.dim)
        if self.space.refresh():
            self._load_cache(self.store.items.cached(self.dim))
            self.consolidated_at = len(self.space.aliases)
            if self.router is not None:
                self.router.refresh()
            return
        if len(ids):
            self.add_cached(ids, labels, vectors)

    def item_labels(self, item_ids) -> dict[int, int]:
        """The stored label of each cached item (reading items another process just
        committed, which an index searched in the database can return before a sync)."""
        missing = [int(i) for i in item_ids if int(i) not in self.space.item_label]
        if missing:
            rows = self.store.items.label_ids(missing)
            self.space.item_label.update(rows)
            self.ensure_labels(list(rows.values()))
        return {int(i): self.space.item_label[int(i)] for i in item_ids}

    def ensure_labels(self, label_ids) -> None:
        """Make sure the label space holds these ids (read from the store just now,
        perhaps written by another process)."""
        if any(int(i) not in self.space.names for i in label_ids):
            self.sync(force=True)

    def close(self) -> None:
        if self.router is not None:
            self.router.wait()  # a head being fitted is saved, not written to a closed store
        self.store.close()

    def consolidate(self, *, dry_run: bool = False, adjudication_budget: int | None = None) -> dict:
        """Regroup every raw label, order-invariantly, and run the consensus (see
        :meth:`~canonlabel.labelspace.maintenance.Consolidation.run`)."""
        return self.consolidation.run(dry_run=dry_run, adjudication_budget=adjudication_budget)

    def result_from_stored(
        self,
        row: StoredItem,
        *,
        source: Source | None = None,
        similarity=None,
        ext_id=None,
        text=None,
        truncated=None,
        timings=None,
    ) -> Result:
        label_id = self.space.resolve(row.label_id)
        return Result(
            text=text if text is not None else row.text,
            label=self.space.names[label_id],
            label_id=label_id,
            raw_label=row.raw_label,
            source=source or row.source,
            similarity=row.similarity if similarity is None else similarity,
            truncated=row.truncated if truncated is None else truncated,
            id=ext_id if ext_id is not None else row.ext_id,
            timings=timings or {},
        )

    def candidates(self, text: str, vector: np.ndarray) -> tuple[str, ...]:
        """The existing canonical labels shown to the LLM for this text."""
        s = self.settings
        return self.space.candidates(
            text, vector, self.shown_candidates(), s.candidate_source, s.candidate_min_similarity
        )

    def shown_candidates(self) -> int:
        """How many existing labels the LLM is shown (see :func:`shown_candidates`)."""
        return shown_candidates(self.settings, self.labeler)
