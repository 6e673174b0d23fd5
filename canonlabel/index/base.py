from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class VectorIndex(ABC):
    """Maps integer keys to vectors and answers top-k cosine queries in batches.

    Vectors are L2-normalised, so the inner product is the cosine similarity.
    An approximate index only needs to implement these methods.
    """

    @abstractmethod
    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(similarities, keys)``, both of shape (n, k), best first.

        Where fewer than k vectors are stored, missing slots hold similarity -inf and key -1.
        """

    @abstractmethod
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (n, d) under integer keys (n,)."""

    @abstractmethod
    def __len__(self) -> int: ...
