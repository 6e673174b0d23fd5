"""A durable embedding cache: each text is embedded once per model, ever."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from canonlabel.embed.base import Embedder


class CachingEmbedder(Embedder):
    """Wraps an embedder; vectors are stored in SQLite keyed by model id and text."""

    def __init__(self, base: Embedder, path: str | Path) -> None:
        self.base, self.id, self.batch_size = base, base.id, 4096
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()  # LLM worker threads embed labels too
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, v BLOB)")
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
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            found.update(
                self._conn.execute(
                    f"SELECT key, v FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
            )
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        if missing:
            todo = list(dict.fromkeys(texts[i] for i in missing))
            vectors = self.base.embed(todo)
            rows = [(self._key(t), v.tobytes()) for t, v in zip(todo, vectors)]
            self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            found.update(rows)
        return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])


def cached(embedder: Embedder, cache_dir: Path) -> Embedder:
    return CachingEmbedder(embedder, Path(cache_dir) / "embeddings.db")
