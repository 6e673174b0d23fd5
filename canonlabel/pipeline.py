"""The streaming classifier: exact hit -> semantic hit -> LLM + canonicalisation."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np

from canonlabel import labelspace
from canonlabel.config import Settings
from canonlabel.embed import Embedder, make_embedder
from canonlabel.engine import Engine
from canonlabel.errors import ConfigError
from canonlabel.index import VectorIndex
from canonlabel.labelspace import LabelSpace
from canonlabel.llm import Labeler, make_labeler
from canonlabel.memory import Memory
from canonlabel.router import Router
from canonlabel.store import Store, open_store
from canonlabel.types import Grouping, Label, Result

_MISS_BATCH = 256  # items normalised, looked up and embedded together
T = TypeVar("T")


class _FromMemory(Generic[T]):
    """A classifier attribute that is its memory's, read and written through (callers
    and tests swap a classifier's settings or backends, and the engine must see it)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _FromMemory[T]: ...
    @overload
    def __get__(self, obj: Classifier, owner: type) -> T: ...
    def __get__(self, obj: Classifier | None, owner: type) -> Any:
        return self if obj is None else getattr(obj.memory, self.name)

    def __set__(self, obj: Classifier, value: T) -> None:
        setattr(obj.memory, self.name, value)


class Classifier:
    """Labels texts consistently, asking the LLM only for texts unlike any seen before.

    >>> clf = Classifier.open("labels.db")               # bundled local models
    >>> clf.classify("my card still hasn't arrived").label
    'card_delivery'
    """

    settings: _FromMemory[Settings] = _FromMemory()
    store: _FromMemory[Store] = _FromMemory()
    embedder: _FromMemory[Embedder] = _FromMemory()
    labeler: _FromMemory[Labeler] = _FromMemory()
    dim: _FromMemory[int] = _FromMemory()
    space: _FromMemory[LabelSpace] = _FromMemory()
    cache: _FromMemory[VectorIndex] = _FromMemory()
    router: _FromMemory[Router | None] = _FromMemory()
    categories: _FromMemory[dict[int, str]] = _FromMemory()
    counters: _FromMemory[dict[str, float]] = _FromMemory()

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        labeler: Labeler,
        settings: Settings | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self.memory = Memory(store, embedder, labeler, settings, read_only=read_only)
        # one engine for the classifier's life; each run starts it afresh (see Engine.start)
        self.engine = Engine(self.memory, consolidate=self.consolidate)

    def close(self) -> None:
        """Finish the engine's work and close the store (releasing the writer lock)."""
        self.engine.close()
        self.memory.close()

    def sync(self, *, force: bool = False) -> None:
        """Take in what other processes committed to a shared store (see Memory.sync)."""
        self.memory.sync(force=force)

    def grouping(self) -> Grouping:
        """Consolidation's settings (see :meth:`Memory.grouping`)."""
        return self.memory.grouping()

    def shown_candidates(self) -> int:
        """How many existing labels the LLM is shown."""
        return self.memory.shown_candidates()

    # -- the label space (see canonlabel.labelspace) ----------------------------------
    def merge(self, source: int, into: int) -> dict:
        """Merge label ``source`` into ``into`` (logged, undoable)."""
        return labelspace.merge(self.space, source, into)

    def rename(self, label_id: int, name: str) -> dict:
        """Rename a label; its id stays and consolidation keeps the name."""
        return labelspace.rename(self.space, label_id, name)

    def split(self, label_id: int, **how) -> dict:
        """Split a label by ``k=``, ``aliases=`` or ``items=`` (see labelspace.split)."""
        return labelspace.split(self.space, label_id, **how)

    def undo(self) -> dict:
        """Undo the most recent merge or consolidation."""
        return labelspace.undo(self.space)

    @classmethod
    def open(
        cls,
        db: str | Path | None = None,
        *,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        labeler: Labeler | None = None,
        read_only: bool = False,
        **overrides,
    ) -> Classifier:
        """Open (or create) a store and build backends from settings and overrides.

        A writing classifier holds the store's writer lock until :meth:`close`
        (another writer is refused with :class:`~canonlabel.errors.StoreBusyError`, or
        waits ``settings.lock_wait`` seconds); ``read_only`` ones only read."""
        settings = settings or Settings()
        if db is not None:
            overrides["db"] = str(db)
        if overrides:
            settings = settings.model_copy(update=overrides)
        embedder = embedder or make_embedder(settings.embedder, settings)
        labeler = labeler or make_labeler(settings.llm, settings)
        store = open_store(settings.db, pool_size=settings.pool_size)
        return cls(store, embedder, labeler, settings, read_only=read_only)

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API -------------------------------------------------------------------
    def classify(self, text: str, id: str | None = None) -> Result:
        """Classify one text; raises on empty text or when no label can be had."""
        [result], errors = self._run([text], [id], 1, None)
        if errors:
            raise errors[0]
        return result

    def classify_many(
        self,
        texts: Sequence[str],
        ids: Sequence[str | None] | None = None,
        *,
        concurrency: int | None = None,
        progress: Callable[[int], None] | None = None,
        vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[Result]:
        """Classify texts in order; failures come back as results with ``error`` set.

        Up to ``concurrency`` LLM calls run at once; a miss that is a near-duplicate
        of a text already waiting for the LLM shares that call. ``vectors`` are the
        texts' embeddings when they were computed elsewhere (a batch job's embedding
        stage); they must come from this classifier's embedder, of the normalised text.
        """
        ids = list(ids) if ids is not None else [None] * len(texts)
        if len(ids) != len(texts) or (vectors is not None and len(vectors) != len(texts)):
            raise ConfigError("ids, vectors and texts differ in length")
        results, _ = self._run(
            texts, ids, concurrency or self.settings.concurrency, progress, vectors
        )
        return results

    def _run(
        self, texts, ids, concurrency: int, progress, vectors=None
    ) -> tuple[list[Result], dict]:
        """Results in input order, and the exception behind each failed position."""
        results: list[Result | None] = [None] * len(texts)
        errors: dict[int, Exception] = {}

        def done(pos, result, error):
            results[pos] = result
            if error is not None:
                errors[pos] = error
            if progress:
                progress(1)

        engine = self.engine.start(concurrency)
        try:
            for start in range(0, len(texts), _MISS_BATCH):
                stop = start + _MISS_BATCH
                engine.submit(
                    texts[start:stop],
                    ids[start:stop],
                    range(start, min(stop, len(texts))),
                    done,
                    None if vectors is None else vectors[start:stop],
                )
                while engine.busy > 4 * engine.concurrency:
                    engine.poll()
            while engine.busy:
                engine.poll()
        finally:
            engine.close()
        return results, errors  # type: ignore[return-value]

    def labels(self) -> list[Label]:
        """Canonical labels that hold items, most frequent first (a label the consensus
        emptied, founded by stray answers, is not listed)."""
        counts: Counter[int] = Counter()
        for label_id, n in self.store.members.label_counts().items():
            counts[self.space.resolve(label_id)] += n
        moved: Counter[int] = Counter()
        for label_id, n in self.store.corrections.counts().items():
            moved[self.space.resolve(label_id)] += n
        aliases: dict[int, list[str]] = defaultdict(list)
        for raw, label_id in self.space.aliases.items():
            aliases[self.space.resolve(label_id)].append(raw)
        labels = [
            Label(
                i,
                self.space.names[i],
                counts[i],
                tuple(sorted(aliases[i])),
                self.categories.get(i),
                moved[i],
            )
            for i in self.space.roots()
            if counts[i]
        ]
        return sorted(labels, key=lambda lab: (-lab.count, lab.id))

    def consolidate(self, *, dry_run: bool = False, adjudication_budget: int | None = None) -> dict:
        """Regroup every raw label, order-invariantly, and run the consensus (see
        :mod:`canonlabel.labelspace.maintenance`); a stored label hierarchy whose labels
        drifted is refitted too (``report["hierarchy"]``; its calls count as LLM calls),
        unless the consolidation may ask the LLM nothing (``adjudication_budget=0``)."""
        report = self.memory.consolidate(dry_run=dry_run, adjudication_budget=adjudication_budget)
        if dry_run or adjudication_budget == 0 or "skipped" in report:
            return report
        from canonlabel import hierarchy

        refit = hierarchy.refit_if_drifted(self)
        if refit is not None:
            report["hierarchy"] = refit
            self.counters["llm_calls"] += refit["calls"]
        return report

    def hierarchy(self, *, top: int = 12, levels: int = 1, refit: bool = True):
        """The label hierarchy: ``refit`` groups the labels into ``levels`` levels of
        named parents, ``top`` at the top (see :mod:`canonlabel.hierarchy`); otherwise the
        stored one, with labels made since joined to their nearest parent."""
        from canonlabel import hierarchy

        if refit:
            return hierarchy.fit(self, top=top, levels=levels)
        return hierarchy.assign_new(self, hierarchy.load(self.store))

    def label_counts(self) -> dict[int, int]:
        """Items per canonical label (merged labels' items counted with their label)."""
        counts: dict[int, int] = {}
        for label_id, n in self.store.members.label_counts().items():
            root = self.space.resolve(label_id)
            counts[root] = counts.get(root, 0) + n
        return counts

    def label_count(self) -> int:
        """How many canonical labels hold items."""
        return len({self.space.resolve(i) for i in self.store.members.label_counts()})

    def label_detail(self, label_id: int, sample: int = 10) -> dict | None:
        """One label: name, count, aliases, a sample of member texts, merge history."""
        if label_id not in self.space.names:
            return None
        root = self.space.resolve(label_id)
        ids = [i for i in self.space.names if self.space.resolve(i) == root]
        count = self.store.items.count(label_ids=ids)
        members = self.store.members.label_texts(ids, sample)
        history = [
            {
                "kind": e.kind,
                "raw_label": e.raw_label,
                "from": e.from_label,
                "into": e.into_label,
                "similarity": e.similarity,
                "undone": e.undone,
                "at": e.created_at,
            }
            for e in self.store.log.history(ids)
        ]
        aliases = sorted(a for a, i in self.space.aliases.items() if self.space.resolve(i) == root)
        return {
            "id": root,
            "requested_id": label_id,
            "name": self.space.names[root],
            "count": count,
            "aliases": aliases,
            "merged_ids": sorted(set(ids) - {root}),
            "members": members,
            "history": history,
        }

    def stats(self) -> dict[str, object]:
        """Totals over the whole store."""
        s = self.store
        by_source = s.items.count_by_source()
        items = sum(by_source.values())
        hits = by_source.get("exact", 0) + by_source.get("cache", 0) + by_source.get("model", 0)
        return {
            "items": items,
            "exact_hits": by_source.get("exact", 0),
            "cache_hits": by_source.get("cache", 0),
            "model_items": by_source.get("model", 0),
            "llm_items": by_source.get("llm", 0),
            "cached_items": len(self.cache),
            "labels": self.label_count(),
            "raw_labels": len(self.space.aliases),
            "consensus_moved": sum(self.store.corrections.counts().values()),
            "llm_error_estimate": float(s.meta().get("llm_error_estimate", 0.0)),
            "merges": s.log.live_count(),
            "failures": s.failures.count(),
            "hit_rate": round(hits / items, 4) if items else 0.0,
            "llm_tokens": s.items.tokens(),
            "embedder": self.embedder.id,
            "labeler": self.labeler.id,
            "min_similarity": self.settings.min_similarity,
            "label_similarity": self.settings.label_similarity,
            "router": self.router.summary() if self.router is not None else None,
            "router_versions": s.router_versions.count(),
            "audits_this_run": self.counters["audits"],
        }
