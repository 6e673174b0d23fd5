from __future__ import annotations

import numpy as np

from canonlabel.blas import small_product
from canonlabel.index.base import VectorIndex


class ExactIndex(VectorIndex):
    """Brute-force search over one contiguous float32 matrix (grown by doubling).

    At 100k x 384 a query batch of 256 is one ~10 GFLOP matmul; exact search stays
    fast well past the sizes a semantic cache of labelled texts reaches.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._keys = np.zeros(0, dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        need = self._n + len(keys)
        if need > len(self._vectors):
            cap = max(need, 2 * len(self._vectors), 1024)
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: self._n] = self._vectors[: self._n]
            grown_keys = np.full(cap, -1, dtype=np.int64)
            grown_keys[: self._n] = self._keys[: self._n]
            self._vectors, self._keys = grown, grown_keys
        self._vectors[self._n : need] = vectors
        self._keys[self._n : need] = keys
        self._n = need

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the keys and vectors held now."""
        return self._keys[: self._n].copy(), self._vectors[: self._n].copy()

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        nq = len(queries)
        sims = np.full((nq, k), -np.inf, dtype=np.float32)
        keys = np.full((nq, k), -1, dtype=np.int64)
        if self._n == 0 or nq == 0:
            return sims, keys
        with small_product(nq, self._n, self.dim):
            scores = queries @ self._vectors[: self._n].T
        kk = min(k, self._n)
        if kk == 1:
            top = scores.argmax(axis=1)[:, None]
        else:
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
            top = np.take_along_axis(top, order, axis=1)
        sims[:, :kk] = np.take_along_axis(scores, top, axis=1)
        keys[:, :kk] = self._keys[top]
        return sims, keys
