"""The semantic cache searched inside PostgreSQL (pgvector HNSW) instead of in memory."""

from __future__ import annotations

import numpy as np

from canonlabel.index.base import VectorIndex


class PgVectorIndex(VectorIndex):
    """Cached items of a :class:`~canonlabel.store.PostgresStore`, searched by HNSW.

    The store writes each cached item's embedding with the item, so :meth:`add` has
    nothing to do, and every process sees every other's items as soon as they commit.
    Approximate: recall depends on ``ef_search`` (benchmarks/scaling.py measures it).
    """

    def __init__(self, store, dim: int, ef_search: int = 64) -> None:
        self.store, self.dim, self.ef_search = store, dim, ef_search
        store.ensure_vector_index()

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        return self.store.nearest_cached(queries, k, self.ef_search)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Nothing to do: the rows already carry their embeddings."""

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors, _ = self.store.items.cached(self.dim)
        return ids, vectors

    def __len__(self) -> int:
        return self.store.items.count(cached=True)
