"""Key-value caches in their own SQLite files, kept across runs and stores: LLM answers
(:class:`~canonlabel.llm.cache.CachingLabeler`) and embeddings
(:class:`~canonlabel.embed.cache.CachingEmbedder`). Safe to share between threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from canonlabel.store.sql import chunks, marks


class _File:
    def __init__(self, path: str | Path, table: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(table)


class CachedAnswer(NamedTuple):
    output: str
    prompt_tokens: int
    completion_tokens: int


class AnswerCache(_File):
    """LLM answers by request key."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(
            path,
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, "
            "output TEXT NOT NULL, prompt_tokens INT, completion_tokens INT)",
        )

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT output, prompt_tokens, completion_tokens FROM answers WHERE key = ?",
                (key,),
            ).fetchone()
        return None if row is None else CachedAnswer(*row)

    def put(self, key: str, output: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                (key, output, prompt_tokens, completion_tokens),
            )


class VectorCache(_File):
    """Vectors (float32 bytes) by key."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, v BLOB)")

    def get(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored vectors of these keys (missing keys are left out)."""
        found: dict[str, bytes] = {}
        with self._lock:
            for chunk in chunks(dict.fromkeys(keys)):
                found.update(self._conn.execute(
                    f"SELECT key, v FROM vectors WHERE key IN ({marks(len(chunk))})", chunk
                ))  # fmt: skip
        return found

    def put(self, rows: Sequence[tuple[str, bytes]]) -> None:
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
