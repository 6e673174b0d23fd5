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
from canonlabel.store.base import (
    CORRECTIONS_TABLE,
    HIERARCHY_TABLES,
    SCHEMA_VERSION,
    Store,
    search_words,
)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,                 -- representative: embedding of the name
    merged_into INTEGER REFERENCES labels(id),
    created_at REAL NOT NULL
);
CREATE TABLE aliases (
    raw_label TEXT PRIMARY KEY,
    label_id INTEGER NOT NULL REFERENCES labels(id),
    similarity REAL,                      -- to the representative; NULL if it founded the label
    created_at REAL NOT NULL
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    ext_id TEXT UNIQUE,
    text TEXT NOT NULL,
    text_key TEXT NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0,
    label_id INTEGER NOT NULL REFERENCES labels(id),
    raw_label TEXT,
    source TEXT NOT NULL,                 -- exact | cache | llm | cluster
    similarity REAL,
    matched_item INTEGER,
    vector BLOB,
    cached INTEGER NOT NULL DEFAULT 0,    -- 1: part of the semantic cache
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX items_text_key ON items(text_key);
CREATE INDEX items_label ON items(label_id);
CREATE TABLE merges (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                   -- alias: a raw label joined a label
    raw_label TEXT,
    from_label INTEGER,
    into_label INTEGER NOT NULL,
    similarity REAL,
    undone INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE failures (
    id INTEGER PRIMARY KEY,
    ext_id TEXT,
    text_key TEXT NOT NULL,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,                   -- invalid_output (LLM was paid) | rejected | backend
    error TEXT NOT NULL,
    outputs TEXT,                         -- JSON list of what the LLM said
    created_at REAL NOT NULL
);
CREATE INDEX failures_key ON failures(text_key);
CREATE VIRTUAL TABLE label_fts USING fts5(content, label_id UNINDEXED,
                                          tokenize='porter unicode61');
"""
# Each entry upgrades a store from version i+1 to i+2.
_MIGRATIONS = [
    """
CREATE TABLE categories (
    name TEXT PRIMARY KEY, description TEXT NOT NULL, examples TEXT NOT NULL,
    hash TEXT NOT NULL, vector BLOB NOT NULL, examples_vector BLOB, updated_at REAL NOT NULL);
CREATE TABLE label_categories (
    label_id INTEGER PRIMARY KEY REFERENCES labels(id), category TEXT NOT NULL,
    similarity REAL NOT NULL, method TEXT NOT NULL, updated_at REAL NOT NULL);
""",
    """
CREATE TABLE annotations (
    text_key TEXT NOT NULL, taxonomy TEXT NOT NULL, max_labels INTEGER NOT NULL,
    labels TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (text_key, taxonomy, max_labels));
""",
    """
ALTER TABLE labels ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;  -- named by hand: kept
ALTER TABLE aliases ADD COLUMN vector BLOB;                        -- embedding of the raw label
ALTER TABLE merges ADD COLUMN detail TEXT;                         -- JSON: how to undo it
CREATE INDEX items_raw_label ON items(raw_label);
CREATE TABLE adjudications (pair TEXT PRIMARY KEY, same INTEGER NOT NULL, created_at REAL NOT NULL);
""",
    # An item is its id *and* its text: a reused id with another text is another item.
    """
CREATE TABLE items_v5 AS SELECT * FROM items;
DROP TABLE items;
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    ext_id TEXT,
    text TEXT NOT NULL,
    text_key TEXT NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0,
    label_id INTEGER NOT NULL REFERENCES labels(id),
    raw_label TEXT,
    source TEXT NOT NULL,
    similarity REAL,
    matched_item INTEGER,
    vector BLOB,
    cached INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
INSERT INTO items SELECT * FROM items_v5;
DROP TABLE items_v5;
CREATE INDEX items_text_key ON items(text_key);
CREATE INDEX items_label ON items(label_id);
CREATE INDEX items_raw_label ON items(raw_label);
CREATE UNIQUE INDEX items_identity ON items(ext_id, text_key);
""",
    """
CREATE TABLE router_versions (
    id INTEGER PRIMARY KEY, meta TEXT NOT NULL, weights BLOB NOT NULL, created_at REAL NOT NULL);
""",
    """
CREATE TABLE projection (item_id INTEGER PRIMARY KEY, x REAL NOT NULL, y REAL NOT NULL);
""",
    CORRECTIONS_TABLE,
    HIERARCHY_TABLES,
]


class SqliteStore(Store):
    """SQLite-backed persistence. One instance per process owns the writes."""

    def __init__(self, path: str | Path) -> None:
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
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(
                    f"{self.path} is a SQLite file but not a canonlabel store; "
                    "pass another --db path"
                )
            self.conn.executescript(f"BEGIN;{_SCHEMA}PRAGMA user_version=1;COMMIT;")
            version = 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, newer than this canonlabel "
                f"({SCHEMA_VERSION}); upgrade canonlabel"
            )
        for v in range(version, SCHEMA_VERSION):
            self.conn.executescript(
                f"BEGIN;{_MIGRATIONS[v - 1]}PRAGMA user_version={v + 1};COMMIT;"
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

    def fulltext_labels(self, text: str, k: int) -> list[int]:
        """Label ids ranked by BM25 over label names, aliases and member texts."""
        words = search_words(text)
        if not words:
            return []
        query = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
        rows = self.conn.execute(
            "SELECT label_id, min(s) AS best FROM (SELECT label_id, bm25(label_fts) AS s "
            "FROM label_fts WHERE label_fts MATCH ? ORDER BY s LIMIT 200) "
            "GROUP BY label_id ORDER BY best LIMIT ?",
            (query, k * 3),
        )
        return [int(r[0]) for r in rows]

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def alias_rows(self, after: int = 0) -> list[tuple[str, int, int]]:
        return self.query(
            "SELECT raw_label, label_id, rowid FROM aliases WHERE rowid > ? ORDER BY rowid",
            (after,),
        )
