"""The streaming classifier: exact hit -> semantic hit -> LLM + canonicalisation."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from canonlabel.canon import InvalidLabel, LabelSpace, clean_label, label_text
from canonlabel.config import Settings
from canonlabel.embed import Embedder, make_embedder
from canonlabel.engine import Asked, Engine
from canonlabel.errors import BackendError, ConfigError, LabelError
from canonlabel.index import ExactIndex
from canonlabel.llm import Labeler, make_labeler
from canonlabel.store import SqliteStore, StoredItem
from canonlabel.types import Label, LabelRequest, Result, Usage

_MISS_BATCH = 256  # items normalised, looked up and embedded together


class Classifier:
    """Labels texts consistently, asking the LLM only for texts unlike any seen before.

    >>> clf = Classifier.open("labels.db")               # bundled local models
    >>> clf.classify("my card still hasn't arrived").label
    'card_delivery'
    """

    def __init__(
        self,
        store: SqliteStore,
        embedder: Embedder,
        labeler: Labeler,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.store, self.embedder, self.labeler = store, embedder, labeler
        self.dim = embedder.dim
        store.bind_embedder(embedder.id, self.dim)
        store.set_meta(
            {
                "labeler": labeler.id,
                "min_similarity": self.settings.min_similarity,
                "label_similarity": self.settings.label_similarity,
            }
        )
        self.reload()
        self.counters: Counter[str] = Counter()

    def reload(self) -> None:
        """Rebuild the in-memory label space and cache from the store."""
        self.space = LabelSpace.load(self.store, self.dim)
        item_ids, vectors, label_ids = self.store.cached_items(self.dim)
        self.cache = ExactIndex(self.dim)
        self.cache.add(item_ids, vectors)
        self._item_label: dict[int, int] = dict(zip(item_ids.tolist(), label_ids.tolist()))
        self.space.add_members(label_ids, vectors)
        self.categories: dict[int, str] = dict(
            self.store.conn.execute("SELECT label_id, category FROM label_categories")
        )

    # -- curation (see canonlabel.curation) -------------------------------------------
    def merge(self, source: int, into: int) -> dict:
        """Merge label ``source`` into ``into`` (logged, undoable)."""
        from canonlabel import curation

        return curation.merge(self, source, into)

    def rename(self, label_id: int, name: str) -> dict:
        """Rename a label; its id stays."""
        from canonlabel import curation

        return curation.rename(self, label_id, name)

    def split(self, label_id: int, **how) -> dict:
        """Split a label by ``k=``, ``aliases=`` or ``items=`` (see curation.split)."""
        from canonlabel import curation

        return curation.split(self, label_id, **how)

    def undo(self) -> dict:
        """Undo the most recent merge."""
        from canonlabel import curation

        return curation.undo(self)

    @classmethod
    def open(
        cls,
        db: str | Path | None = None,
        *,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        labeler: Labeler | None = None,
        **overrides,
    ) -> Classifier:
        """Open (or create) a store and build backends from settings and overrides."""
        settings = settings or Settings()
        if db is not None:
            overrides["db"] = Path(db)
        if overrides:
            settings = settings.model_copy(update=overrides)
        embedder = embedder or make_embedder(settings.embedder, settings)
        labeler = labeler or make_labeler(settings.llm, settings)
        return cls(SqliteStore(settings.db), embedder, labeler, settings)

    def close(self) -> None:
        self.store.close()

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
    ) -> list[Result]:
        """Classify texts in order; failures come back as results with ``error`` set.

        Up to ``concurrency`` LLM calls run at once; a miss that is a near-duplicate
        of a text already waiting for the LLM shares that call.
        """
        ids = list(ids) if ids is not None else [None] * len(texts)
        if len(ids) != len(texts):
            raise ConfigError("ids and texts differ in length")
        results, _ = self._run(texts, ids, concurrency or self.settings.concurrency, progress)
        return results

    def _run(self, texts, ids, concurrency: int, progress) -> tuple[list[Result], dict]:
        """Results in input order, and the exception behind each failed position."""
        results: list[Result | None] = [None] * len(texts)
        errors: dict[int, Exception] = {}

        def done(pos, result, error):
            results[pos] = result
            if error is not None:
                errors[pos] = error
            if progress:
                progress(1)

        engine = Engine(self, concurrency)
        try:
            for start in range(0, len(texts), _MISS_BATCH):
                stop = start + _MISS_BATCH
                engine.submit(
                    texts[start:stop], ids[start:stop], range(start, min(stop, len(texts))), done
                )
                while engine.busy > 4 * engine.concurrency:
                    engine.poll()
            while engine.busy:
                engine.poll()
        finally:
            engine.close()
        return results, errors  # type: ignore[return-value]

    def labels(self) -> list[Label]:
        """Canonical labels, most frequent first."""
        counts: Counter[int] = Counter()
        for label_id, n in self.store.label_item_counts().items():
            counts[self.space.resolve(label_id)] += n
        aliases: dict[int, list[str]] = defaultdict(list)
        for raw, label_id in self.space.aliases.items():
            aliases[self.space.resolve(label_id)].append(raw)
        labels = [
            Label(
                i, self.space.names[i], counts[i], tuple(sorted(aliases[i])), self.categories.get(i)
            )
            for i in self.space.roots()
        ]
        return sorted(labels, key=lambda lab: (-lab.count, lab.id))

    def label_detail(self, label_id: int, sample: int = 10) -> dict | None:
        """One label: name, count, aliases, a sample of member texts, merge history."""
        if label_id not in self.space.names:
            return None
        root = self.space.resolve(label_id)
        ids = [i for i in self.space.names if self.space.resolve(i) == root]
        marks = ",".join("?" * len(ids))
        conn = self.store.conn
        count = conn.execute(
            f"SELECT count(*) FROM items WHERE label_id IN ({marks})", ids
        ).fetchone()[0]
        members = [
            r[0]
            for r in conn.execute(
                f"SELECT text FROM items WHERE label_id IN ({marks}) AND source = 'llm' "
                f"ORDER BY id LIMIT ?",
                [*ids, sample],
            )
        ]
        history = [
            dict(zip(("kind", "raw_label", "from", "into", "similarity", "undone", "at"), r))
            for r in conn.execute(
                f"SELECT kind, raw_label, from_label, into_label, similarity, undone, created_at "
                f"FROM merges WHERE into_label IN ({marks}) OR from_label IN ({marks}) ORDER BY id",
                [*ids, *ids],
            )
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
        by_source = dict(s.conn.execute("SELECT source, count(*) FROM items GROUP BY source"))
        items = sum(by_source.values())
        hits = by_source.get("exact", 0) + by_source.get("cache", 0)
        return {
            "items": items,
            "exact_hits": by_source.get("exact", 0),
            "cache_hits": by_source.get("cache", 0),
            "llm_items": by_source.get("llm", 0),
            "cached_items": len(self.cache),
            "labels": len(self.space),
            "raw_labels": len(self.space.aliases),
            "merges": s.count("SELECT count(*) FROM merges WHERE undone = 0"),
            "failures": s.count("SELECT count(*) FROM failures"),
            "hit_rate": round(hits / items, 4) if items else 0.0,
            "llm_tokens": s.count(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM items"
            ),
            "embedder": self.embedder.id,
            "labeler": self.labeler.id,
            "min_similarity": self.settings.min_similarity,
            "label_similarity": self.settings.label_similarity,
        }

    def _result_from_stored(
        self,
        row: StoredItem,
        *,
        source=None,
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
        k = self.settings.candidates
        if k == 0 or len(self.space) == 0:
            return ()
        source = self.settings.candidate_source
        ids: list[int] = []
        if source in ("embedding", "both"):
            ids += self.space.nearest_by_centroid(vector, k, self.settings.candidate_min_similarity)
        if source in ("fulltext", "both"):
            ft = [self.space.resolve(i) for i in self.store.fulltext_labels(text, k)]
            ids = _interleave(ids, ft) if ids else ft
        names = list(dict.fromkeys(self.space.names[i] for i in ids))
        return tuple(names[:k])

    def ask(self, text: str, candidates: tuple[str, ...]) -> Asked:
        """One LLM question with validation and at most one re-ask (runs in workers)."""
        outputs: list[str] = []
        usage, calls, start = Usage(), 0, time.perf_counter()
        feedback = None
        for _ in range(2):
            try:
                response = self.labeler.label(LabelRequest(text, candidates, feedback))
            except BackendError as exc:
                return Asked(None, exc, usage, calls, time.perf_counter() - start, outputs)
            calls += 1
            usage = usage + response.usage
            outputs.append(response.output)
            try:
                raw = clean_label(response.output)
            except InvalidLabel as exc:
                feedback = (
                    f"Your previous answer was rejected: {exc}. Answer with one "
                    "snake_case label only."
                )
                continue
            seconds = time.perf_counter() - start
            vector, embed_seconds = None, 0.0
            if raw not in self.space.aliases:
                # Embedding the label here keeps it off the single writer thread; a race with
                # a concurrent alias only costs one unneeded embedding.
                t = time.perf_counter()
                vector = self.embedder.embed([label_text(raw)])[0]
                embed_seconds = time.perf_counter() - t
            return Asked(raw, None, usage, calls, seconds, outputs, vector, embed_seconds)
        error = LabelError(
            f"no valid label after {calls} answers: {feedback}; the item is "
            "recorded as failed (re-run with --retry-failed to ask again)",
            outputs,
        )
        return Asked(None, error, usage, calls, time.perf_counter() - start, outputs)


def _interleave(a: list[int], b: list[int]) -> list[int]:
    out: list[int] = []
    for pair in zip(a, b, strict=False):
        out.extend(pair)
    longer = a if len(a) > len(b) else b
    out.extend(longer[min(len(a), len(b)) :])
    return list(dict.fromkeys(out))
