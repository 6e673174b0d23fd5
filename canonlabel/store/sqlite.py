"""The embedded store: one SQLite file holding items, labels, aliases and the merge log.

WAL mode with ``synchronous=FULL``: a committed LLM result survives a crash or a
SIGKILL, so a resumed job never pays for it again. Writes use ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from canonlabel.errors import StoreBusyError, StoreError
from canonlabel.store.base import Store
from canonlabel.store.labels import Aliases, Labels
from canonlabel.store.schema import SCHEMA_VERSION, upgrade
from canonlabel.store.sql import search_words


class SqliteLabels(Labels):
    def search(self, text: str, k: int) -> list[int]:
        """Label ids ranked by BM25 over label names, aliases and member texts."""
        words = search_words(text)
        if not words:
            return []
        query = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
        rows = self._query(
            "SELECT label_id, min(s) AS best FROM (SELECT label_id, bm25(label_fts) AS s "
            "FROM label_fts WHERE label_fts MATCH ? ORDER BY s LIMIT 200) "
            "GROUP BY label_id ORDER BY best LIMIT ?",
            (query, k * 3),
        )
        return [int(r[0]) for r in rows]


class SqliteAliases(Aliases):
    _SEQ = "rowid"  # SQLite numbers rows in insertion order


class SqliteStore(Store):
    """SQLite-backed persistence. One instance per process owns the writes."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(labels=SqliteLabels, aliases=SqliteAliases)
        self.path = Path(path)
        self.location = str(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=30
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open store {path}: {exc}; is it a canonlabel "
                "SQLite file? Pass another --db path"
            ) from exc
        self._lock = threading.RLock()
        self._writer: TextIO | None = None  # open lock file while this process is the writer

    def close(self) -> None:
        self.conn.close()
        if self._writer is not None:
            self._writer.close()  # releases the lock
            self._writer = None

    def lock_writer(self, wait: float = 0.0) -> None:
        """Become the only process that writes this store, waiting up to ``wait`` seconds.

        Each process keeps its label space and cache in memory, so two writers would
        each miss the other's labels; the second is refused (or queued) instead. The lock
        is an advisory ``flock`` on ``<db>.lock``, released on close or when the process
        dies (even by SIGKILL). Readers (``stats``, ``labels``) never take it.
        """
        if self._writer is not None or str(self.path) == ":memory:":
            return
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one writer is the user's duty
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a+", encoding="utf-8")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    handle.close()
                    raise StoreBusyError(
                        f"store {self.path} is being written by another canonlabel process "
                        f"({holder}); wait for it to finish, queue behind it with --wait "
                        "SECONDS (CANONLABEL_LOCK_WAIT), or use another --db"
                    ) from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
        handle.flush()
        self._writer = handle

    def _migrate(self) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` by the ordered steps of
        :mod:`~canonlabel.store.schema`, each in its own transaction."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(
                    f"{self.path} is a SQLite file but not a canonlabel store; "
                    "pass another --db path"
                )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, newer than this canonlabel "
                f"({SCHEMA_VERSION}); upgrade canonlabel"
            )
        for v in range(version, SCHEMA_VERSION):
            self.conn.executescript(
                f"BEGIN;{upgrade('sqlite', v)}PRAGMA user_version={v + 1};COMMIT;"
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    @contextmanager
    def write(self, *, label_space: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed durably on exit. The
        process holds the writer lock, so ``label_space`` needs nothing more."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
