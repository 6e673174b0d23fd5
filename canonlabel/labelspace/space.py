"""The in-memory label space: canonical labels, aliases, merge pointers, members.

A raw label already seen maps through its alias. A new raw label is embedded and joins
the nearest canonical label whose *representative* is at least ``label_similarity``
similar, else it founds a new label. A representative starts as the embedding of the
label's founding name; consolidation (:mod:`canonlabel.labelspace.consolidate`) recomputes
it from all of the label's raw labels, so it stops depending on which came first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from canonlabel.canon import Decision
from canonlabel.errors import StaleLabelSpaceError
from canonlabel.index import ExactIndex
from canonlabel.store import Store, Tx, from_blobs

if TYPE_CHECKING:
    from canonlabel.embed import Embedder


_MAX_PHRASES = 50_000  # core-name embeddings kept (about 75 MB at 384 dimensions)


class LabelSpace:
    """Canonical labels, their aliases, merge pointers and member centroids.

    Rebuilt from the store on :meth:`load` (and after every curation or consolidation);
    updated in place only after the store committed. ``item_label`` maps each item of the
    semantic cache to the label it was stored with (resolve it for the current one).

    On a shared store other processes add labels too: :meth:`refresh` reads what they
    committed (labels and aliases appended since, or everything after a rewrite).
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.store: Store | None = None
        self.embedder: Embedder | None = None
        self.names: dict[int, str] = {}
        self.parent: dict[int, int] = {}
        self.aliases: dict[str, int] = {}
        self.pinned: set[int] = set()
        self.item_label: dict[int, int] = {}
        self._reps = ExactIndex(dim)
        self._rep_rows: dict[int, np.ndarray] = {}
        self._centroid_rows: dict[int, int] = {}
        self._centroid_sums = np.zeros((0, dim), dtype=np.float32)
        self._centroid_ids: list[int] = []
        self._phrases: dict[str, np.ndarray] = {}  # embeddings of core names (consolidation)
        self.epoch = 0  # the store's rewrite count this space was loaded at
        self._label_mark = 0  # highest label id read
        self._alias_mark = 0  # highest alias sequence number read

    @classmethod
    def load(
        cls,
        store: Store,
        dim: int,
        embedder: Embedder | None = None,
        cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> LabelSpace:
        """Read labels, aliases and the semantic cache's members (``cached`` is
        ``store.items.cached(dim)`` when the caller already has it)."""
        space = cls(dim)
        space.store, space.embedder = store, embedder
        space.epoch = store.epoch()
        rows = store.labels.rows()
        vectors = from_blobs([r.vector for r in rows], dim)
        for (label_id, name, _, merged_into), vector in zip(rows, vectors, strict=False):
            space.names[label_id] = name
            space._rep_rows[label_id] = vector
            if merged_into is not None:
                space.parent[label_id] = merged_into
        space._label_mark = max(space.names, default=0)
        space._rebuild_reps()
        space._read_aliases()
        space.pinned = store.labels.pinned()
        item_ids, item_vectors, label_ids = cached or store.items.cached(dim)
        space.add_members(item_ids, label_ids, item_vectors)
        return space

    def reload(self) -> None:
        """Re-read everything from the store (after curation or consolidation)."""
        assert self.store is not None  # set by load(); only a loaded space is reloaded
        fresh = LabelSpace.load(self.store, self.dim, self.embedder)
        fresh._phrases = self._phrases  # embeddings of phrases do not change with the store
        self.__dict__.update(fresh.__dict__)

    def refresh(self) -> bool:
        """Read what other processes committed to a shared store: the labels and aliases
        appended since the last read, or everything (True) if one rewrote the label space.
        A no-op on a single-writer store."""
        assert self.store is not None
        if not self.store.shared:
            return False
        if self.store.epoch() != self.epoch:
            self.reload()
            return True
        # aliases first: a label and its alias commit together, so every alias read here
        # has its label in the label read that follows (the other way round, one committed
        # in between left an alias pointing at a label this process had not read)
        self._read_aliases()
        rows = self.store.labels.rows(after=self._label_mark)
        for (label_id, name, _, _), vector in zip(
            rows, from_blobs([r.vector for r in rows], self.dim), strict=False
        ):
            self.add_label(label_id, name, vector)
        self._label_mark = max(self._label_mark, *(r.id for r in rows), 0)
        return False

    def _read_aliases(self) -> None:
        assert self.store is not None
        rows = self.store.aliases.rows(after=self._alias_mark)
        self.aliases.update((r.raw_label, r.label_id) for r in rows)
        if rows:
            self._alias_mark = max(self._alias_mark, rows[-1].seq)

    @contextmanager
    def rewrite(self) -> Iterator[Tx]:
        """A transaction that changes existing labels (curation, consolidation): it holds
        the label-space lock, refuses to act on a stale view, and makes other processes
        reload. Call :meth:`reload` after it."""
        assert self.store is not None
        with self.store.write(label_space=True) as c:
            if self.store.shared and self.store.epoch() != self.epoch:
                raise StaleLabelSpaceError(
                    "another process changed the label space while this one was working; "
                    "nothing was written, run the command again"
                )
            yield c
            self.store.bump_epoch(c)

    # -- reads ------------------------------------------------------------------------
    def resolve(self, label_id: int) -> int:
        """Follow merges to the label an id belongs to now."""
        seen = 0
        while label_id in self.parent:
            label_id = self.parent[label_id]
            seen += 1
            if seen > len(self.parent):
                raise RuntimeError("cycle in label merges")
        return label_id

    def name(self, label_id: int) -> str:
        return self.names[self.resolve(label_id)]

    def roots(self) -> list[int]:
        return [i for i in self.names if i not in self.parent]

    def representative(self, label_id: int) -> np.ndarray:
        return self._rep_rows[label_id]

    def __len__(self) -> int:
        return len(self.names) - len(self.parent)

    def decide(self, raw_label: str, vector: np.ndarray | None, threshold: float) -> Decision:
        """Where ``raw_label`` belongs. ``vector`` is needed only for unknown raw labels."""
        if raw_label in self.aliases:
            return Decision(raw_label, self.resolve(self.aliases[raw_label]), None, known=True)
        if vector is None:
            raise ValueError("an unknown raw label needs its embedding")
        sims, keys = self._reps.search(vector[None, :], 1)
        if keys[0, 0] >= 0 and sims[0, 0] >= threshold:
            return Decision(raw_label, int(keys[0, 0]), float(sims[0, 0]))
        return Decision(raw_label, None, None if keys[0, 0] < 0 else float(sims[0, 0]))

    def nearest_by_centroid(
        self, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[int]:
        """Root labels whose member centroid is closest to ``vector`` (at least
        ``min_similarity`` cosine)."""
        if k <= 0 or not self._centroid_ids:
            return []
        sums = self._centroid_sums[: len(self._centroid_ids)]
        norms = np.linalg.norm(sums, axis=1)
        scores = (sums @ vector) / np.maximum(norms, 1e-12)
        order = np.argsort(-scores)
        picked: list[int] = []
        for row in order:
            if scores[row] < min_similarity:
                break
            root = self.resolve(self._centroid_ids[row])
            if norms[row] > 0 and root not in picked:
                picked.append(root)
                if len(picked) == k:
                    break
        return picked

    def candidates(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        source: str = "embedding",
        min_similarity: float = -1.0,
    ) -> tuple[str, ...]:
        """Names of the existing labels shown to the LLM for this text: by member centroid
        (``embedding``), by BM25 over names, aliases and member texts (``fulltext``), or
        interleaved (``both``)."""
        if k == 0 or len(self) == 0:
            return ()
        ids: list[int] = []
        if source in ("embedding", "both"):
            ids += self.nearest_by_centroid(vector, k, min_similarity)
        if source in ("fulltext", "both") and self.store is not None:
            ft = [self.resolve(i) for i in self.store.labels.search(text, k)]
            ids = _interleave(ids, ft) if ids else ft
        names = list(dict.fromkeys(self.names[i] for i in ids))
        return tuple(names[:k])

    def centroids(self, label_ids: list[int]) -> np.ndarray:
        """Normalised member centroid per label (zeros for a label without members)."""
        out = np.zeros((len(label_ids), self.dim), dtype=np.float32)
        for n, label_id in enumerate(label_ids):
            row = self._centroid_rows.get(self.resolve(label_id))
            if row is not None:
                v = self._centroid_sums[row]
                out[n] = v / max(float(np.linalg.norm(v)), 1e-12)
        return out

    def phrase_vectors(self, phrases: list[str]) -> np.ndarray:
        """Embeddings of short phrases, each embedded once per label space (consolidation
        embeds the core names of every raw label on each run)."""
        missing = sorted({p for p in phrases if p not in self._phrases})
        if missing:
            if len(self._phrases) + len(missing) > _MAX_PHRASES:
                self._phrases.clear()
            assert self.embedder is not None
            self._phrases.update(zip(missing, self.embedder.embed(missing)))
        return np.stack([self._phrases[p] for p in phrases])

    # -- canonicalisation (inside the caller's write transaction) ------------------------
    def write_raw_label(
        self, conn, raw_label: str, vector: np.ndarray | None, threshold: float
    ) -> tuple[int, Decision]:
        """Record where ``raw_label`` goes (a new label, a new alias, or nothing for a
        known one) in ``conn``'s transaction; call :meth:`commit_raw_label` after commit."""
        decision = self.decide(raw_label, vector, threshold)
        if decision.label_id is None and (named := self._label_named(conn, raw_label)):
            # a raw label that is literally a label's name (one consolidation or a user
            # gave it) belongs to that label; founding another would repeat the name
            decision = Decision(raw_label, named, 1.0)
        label_id = decision.label_id
        if label_id is None:
            assert self.store is not None
            assert vector is not None  # decide() raised for an unknown raw label without one
            label_id = self.store.labels.insert(conn, raw_label, vector)
            self.store.aliases.insert(conn, raw_label, label_id, None, vector)
        elif not decision.known:
            assert self.store is not None
            self.store.aliases.insert(conn, raw_label, label_id, decision.similarity, vector)
        return label_id, decision

    def _label_named(self, conn, name: str) -> int | None:
        assert self.store is not None
        label_id = self.store.labels.named(conn, name)
        return None if label_id is None else self.resolve(label_id)

    def commit_raw_label(
        self, label_id: int, decision: Decision, vector: np.ndarray | None
    ) -> None:
        if decision.label_id is None:
            assert vector is not None  # a new label was founded from this embedding
            self.add_label(label_id, decision.raw_label, vector)
        if not decision.known:
            self.add_alias(decision.raw_label, label_id)

    # -- updates after a commit ----------------------------------------------------------
    def add_label(self, label_id: int, name: str, vector: np.ndarray) -> None:
        self._label_mark = max(self._label_mark, label_id)
        self.names[label_id] = name
        self._rep_rows[label_id] = vector
        self._reps.add(np.array([label_id]), vector[None, :])

    def add_alias(self, raw_label: str, label_id: int) -> None:
        self.aliases[raw_label] = label_id

    def add_members(self, item_ids, label_ids, vectors: np.ndarray) -> None:
        """Items joined the semantic cache with these (stored) label ids."""
        self.item_label.update(zip(np.asarray(item_ids).tolist(), np.asarray(label_ids).tolist()))
        for label_id, vector in zip(label_ids, vectors, strict=False):
            root = self.resolve(int(label_id))
            row = self._centroid_rows.get(root)
            if row is None:
                row = self._centroid_rows[root] = len(self._centroid_ids)
                self._centroid_ids.append(root)
                if row >= len(self._centroid_sums):
                    grown = np.zeros(
                        (max(64, 2 * len(self._centroid_sums)), self.dim), dtype=np.float32
                    )
                    grown[:row] = self._centroid_sums[:row]
                    self._centroid_sums = grown
            self._centroid_sums[row] += vector

    def _rebuild_reps(self) -> None:
        self._reps = ExactIndex(self.dim)
        roots = self.roots()
        if roots:
            self._reps.add(np.array(roots), np.stack([self._rep_rows[r] for r in roots]))


def _interleave(a: list[int], b: list[int]) -> list[int]:
    out: list[int] = []
    for pair in zip(a, b, strict=False):
        out.extend(pair)
    longer = a if len(a) > len(b) else b
    out.extend(longer[min(len(a), len(b)) :])
    return list(dict.fromkeys(out))
