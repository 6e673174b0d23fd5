"""A durable embedding cache: each text is embedded once per model, ever."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from canonlabel.embed.base import Embedder
from canonlabel.store.caches import VectorCache


class CachingEmbedder(Embedder):
    """Wraps an embedder; vectors are stored in SQLite keyed by model id and text."""

    def __init__(self, base: Embedder, path: str | Path) -> None:
        self.base, self.id, self.batch_size = base, base.id, 4096
        self._vectors = VectorCache(path)
        self._lock = threading.Lock()  # LLM worker threads embed labels too
        self.hits = 0

    @property
    def dim(self) -> int:
        return self.base.dim

    def _key(self, text: str) -> str:
        return hashlib.blake2b(f"{self.base.id}\0{text}".encode(), digest_size=16).hexdigest()

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._embed_batch(texts)

    def _embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found = self._vectors.get(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        if missing:
            todo = list(dict.fromkeys(texts[i] for i in missing))
            vectors = self.base.embed(todo)
            rows = [(self._key(t), v.tobytes()) for t, v in zip(todo, vectors)]
            self._vectors.put(rows)
            found.update(rows)
        return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])


def cached(embedder: Embedder, cache_dir: Path) -> Embedder:
    return CachingEmbedder(embedder, Path(cache_dir) / "embeddings.db")
