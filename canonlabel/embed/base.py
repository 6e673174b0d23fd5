from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from canonlabel.errors import BackendError


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors of shape (n, d).

    Subclasses implement :meth:`embed_batch`; callers use :meth:`embed`, which
    chunks, validates and normalises. ``id`` names the model so a store can refuse
    vectors from another one.
    """

    id: str = "embedder"
    batch_size: int = 64

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch of texts; returns an array of shape (len(texts), dim)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            vectors = np.asarray(self.embed_batch(batch), dtype=np.float32)
            if vectors.shape != (len(batch), self.dim):
                raise BackendError(
                    f"{self.id} returned shape {vectors.shape} for {len(batch)} texts, "
                    f"expected ({len(batch)}, {self.dim})"
                )
            parts.append(vectors)
        return l2_normalize(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
