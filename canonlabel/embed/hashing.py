"""A model-free embedder for tests and offline tries (``--embedder hash``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from canonlabel.embed.base import Embedder

_WORD = re.compile(r"[a-z0-9]+")


def _bucket(token: str, dim: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return h % dim, 1.0 if (h >> 63) & 1 else -1.0


class HashEmbedder(Embedder):
    """Hashed bag of words and character trigrams: no model, deterministic, and
    texts that share words are similar. Good enough to exercise caches in tests."""

    def __init__(self, dim: int = 256) -> None:
        self._dim = dim
        self.id = f"hash:{dim}"
        self.calls = 0
        self.texts_embedded = 0

    @property
    def dim(self) -> int:
        return self._dim

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower().replace("_", " "))
            tokens = [f"w:{w}" for w in words]
            for w in words:
                padded = f"#{w}#"
                tokens += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
            for token in tokens or ["<empty>"]:
                col, sign = _bucket(token, self._dim)
                out[row, col] += sign * (2.0 if token.startswith("w:") else 1.0)
        return out
