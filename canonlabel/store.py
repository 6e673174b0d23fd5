"""The embedded store: one SQLite file holding items, labels, aliases and the merge log.

WAL mode with ``synchronous=FULL``: a committed LLM result survives a crash or a
SIGKILL, so a resumed job never pays for it again. Writes use ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canonlabel.errors import IncompatibleStoreError, StoreBusyError, StoreError

SCHEMA_VERSION = 7
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
]
_FTS_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class StoredItem:
    id: int
    ext_id: str | None
    text: str
    label_id: int
    raw_label: str | None
    source: str
    similarity: float | None
    truncated: bool


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


class SqliteStore:
    """SQLite-backed persistence. One instance per process owns the writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
        self._writer = None  # open lock file while this process is the writer

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

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed durably on exit."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def set_meta(self, values: dict[str, object]) -> None:
        with self.write() as c:
            c.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def bind_embedder(self, embedder_id: str, dim: int, *, write: bool = True) -> None:
        """Record the embedder on first use; refuse another one afterwards."""
        meta = self.meta()
        if "embedder" not in meta:
            if not write:
                return
            self.set_meta({"embedder": embedder_id, "dim": dim, "created_at": time.time()})
            return
        stored, stored_dim = json.loads(meta["embedder"]), json.loads(meta["dim"])
        if stored != embedder_id or stored_dim != dim:
            raise IncompatibleStoreError(
                f"store {self.path} was built with embedder {stored} (dim {stored_dim}); "
                f"this run uses {embedder_id} (dim {dim}). Use --embedder {stored} or "
                "another --db path; vectors of different models cannot be compared"
            )

    # -- reads ------------------------------------------------------------------------
    def cached_items(self, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(item_ids, vectors, label_ids)`` of every item in the semantic cache."""
        rows = self.conn.execute(
            "SELECT id, vector, label_id FROM items WHERE cached = 1 ORDER BY id"
        ).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        labels = np.array([r[2] for r in rows], dtype=np.int64)
        return ids, from_blobs([r[1] for r in rows], dim), labels

    def label_rows(self) -> list[tuple[int, str, bytes, int | None]]:
        return self.conn.execute(
            "SELECT id, name, vector, merged_into FROM labels ORDER BY id"
        ).fetchall()

    def alias_rows(self) -> list[tuple[str, int]]:
        return self.conn.execute("SELECT raw_label, label_id FROM aliases").fetchall()

    def alias_vectors(self, dim: int) -> dict[str, np.ndarray]:
        """Stored embeddings of raw labels (older stores lack some)."""
        rows = self.conn.execute(
            "SELECT raw_label, vector FROM aliases WHERE vector IS NOT NULL"
        ).fetchall()
        return dict(zip([r[0] for r in rows], from_blobs([r[1] for r in rows], dim)))

    def adjudications(self, pairs: Sequence[str]) -> dict[str, bool]:
        """Stored LLM answers to "same kind of message?" by pair key."""
        found: dict[str, bool] = {}
        for start in range(0, len(pairs), 500):
            chunk = list(pairs[start : start + 500])
            rows = self.conn.execute(
                f"SELECT pair, same FROM adjudications WHERE pair IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((k, bool(v)) for k, v in rows)
        return found

    def member_texts(self, raw_labels: Sequence[str], limit: int) -> list[str]:
        """Texts the LLM gave these raw labels (oldest first), for showing examples."""
        marks = ",".join("?" * len(raw_labels))
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT text FROM items WHERE source = 'llm' AND raw_label IN ({marks}) "
                "ORDER BY id LIMIT ?",
                [*raw_labels, limit],
            )
        ]

    def pinned_labels(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT id FROM labels WHERE pinned = 1")}

    def raw_label_uses(self) -> dict[str, int]:
        """Items per raw label (LLM answers and the hits that reused them)."""
        return dict(
            self.conn.execute(
                "SELECT raw_label, count(*) FROM items WHERE raw_label IS NOT NULL "
                "GROUP BY raw_label"
            )
        )

    def label_item_counts(self) -> dict[int, int]:
        return dict(self.conn.execute("SELECT label_id, count(*) FROM items GROUP BY label_id"))

    def _items_where(self, column: str, values: Sequence[str]) -> dict[str, StoredItem]:
        found: dict[str, StoredItem] = {}
        values = list(dict.fromkeys(v for v in values if v is not None))
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT {column}, id, ext_id, text, label_id, raw_label, source, similarity, "
                f"truncated FROM items WHERE {column} IN ({marks}) ORDER BY id",
                chunk,
            )
            for key, *rest in rows:
                found.setdefault(key, StoredItem(*rest[:7], bool(rest[7])))
        return found

    def items_by_ext_id(self, ext_ids: Sequence[str]) -> dict[str, StoredItem]:
        """The latest item stored under each id (an id may name several texts)."""
        found: dict[str, StoredItem] = {}
        for start in range(0, len(ext_ids), 500):
            chunk = list(ext_ids[start : start + 500])
            rows = self.conn.execute(
                "SELECT ext_id, id, ext_id, text, label_id, raw_label, source, similarity, "
                f"truncated FROM items WHERE ext_id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY id",
                chunk,
            )
            for key, *rest in rows:
                found[key] = StoredItem(*rest[:7], bool(rest[7]))
        return found

    def items_by_identity(
        self, pairs: Sequence[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], StoredItem], set[str]]:
        """Items stored under ``(ext_id, text_key)``, and which of the ids are known at all
        (an id known with another text is a reused id, not a resumed item)."""
        ids = list(dict.fromkeys(i for i, _ in pairs))
        latest = self.items_by_ext_id(ids)
        wanted = [(i, k) for i, k in dict.fromkeys(pairs) if i in latest]
        found: dict[tuple[str, str], StoredItem] = {}
        for start in range(0, len(wanted), 400):
            chunk = wanted[start : start + 400]
            rows = self.conn.execute(
                "SELECT ext_id, text_key, id, ext_id, text, label_id, raw_label, source, "
                "similarity, truncated FROM items WHERE (ext_id, text_key) IN "
                f"(VALUES {','.join(['(?, ?)'] * len(chunk))})",
                [v for pair in chunk for v in pair],
            )
            for ext_id, key, *rest in rows:
                found[(ext_id, key)] = StoredItem(*rest[:7], bool(rest[7]))
        return found, set(latest)

    def items_by_text_key(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        return self._items_where("text_key", keys)

    def raw_labels(self, item_ids: Sequence[int]) -> dict[int, str | None]:
        """Raw label of each item id (one query per 500 ids)."""
        found: dict[int, str | None] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(
                self.conn.execute(
                    f"SELECT id, raw_label FROM items WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return found

    def paid_failures(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Texts already answered with a failure that asking again would repeat:
        invalid LLM answers (paid for) and texts the guard rejected. key -> (kind, error)."""
        found: dict[str, tuple[str, str]] = {}
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.conn.execute(
                "SELECT text_key, kind, error FROM failures WHERE kind IN "
                f"('invalid_output', 'rejected') AND text_key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((key, (kind, error)) for key, kind, error in rows)
        return found

    def count(self, sql: str, *args) -> int:
        return int(self.conn.execute(sql, args).fetchone()[0])

    def fulltext_labels(self, text: str, k: int) -> list[int]:
        """Label ids ranked by BM25 over label names, aliases and member texts."""
        words = list(dict.fromkeys(w.lower() for w in _FTS_WORD.findall(text)))[:32]
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

    # -- writes (call inside ``with store.write() as c``) ------------------------------
    @staticmethod
    def insert_label(c: sqlite3.Connection, name: str, vector: np.ndarray) -> int:
        cur = c.execute(
            "INSERT INTO labels (name, vector, created_at) VALUES (?, ?, ?)",
            (name, to_blob(vector), time.time()),
        )
        c.execute(
            "INSERT INTO label_fts (content, label_id) VALUES (?, ?)",
            (name.replace("_", " "), cur.lastrowid),
        )
        return int(cur.lastrowid)

    @staticmethod
    def insert_alias(
        c: sqlite3.Connection,
        raw_label: str,
        label_id: int,
        similarity: float | None,
        vector: np.ndarray | None = None,
    ) -> None:
        now = time.time()
        c.execute(
            "INSERT INTO aliases (raw_label, label_id, similarity, created_at, vector) "
            "VALUES (?, ?, ?, ?, ?)",
            (raw_label, label_id, similarity, now, None if vector is None else to_blob(vector)),
        )
        if similarity is not None:
            c.execute(
                "INSERT INTO merges (kind, raw_label, into_label, similarity, created_at) "
                "VALUES ('alias', ?, ?, ?, ?)",
                (raw_label, label_id, similarity, now),
            )
            c.execute(
                "INSERT INTO label_fts (content, label_id) VALUES (?, ?)",
                (raw_label.replace("_", " "), label_id),
            )

    @staticmethod
    def insert_items(c: sqlite3.Connection, rows: Iterable[dict]) -> list[int]:
        ids = []
        for r in rows:
            # The same (id, text) twice is one item: the first row stands.
            cur = c.execute(
                "INSERT INTO items (ext_id, text, text_key, truncated, label_id, raw_label, "
                "source, similarity, matched_item, vector, cached, prompt_tokens, "
                "completion_tokens, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (ext_id, text_key) DO NOTHING RETURNING id",
                (
                    r.get("ext_id"),
                    r["text"],
                    r["text_key"],
                    int(r.get("truncated", False)),
                    r["label_id"],
                    r.get("raw_label"),
                    r["source"],
                    r.get("similarity"),
                    r.get("matched_item"),
                    None if r.get("vector") is None else to_blob(r["vector"]),
                    int(r.get("cached", False)),
                    r.get("prompt_tokens", 0),
                    r.get("completion_tokens", 0),
                    time.time(),
                ),
            )
            inserted = cur.fetchone()
            if inserted is None:
                ids.append(
                    c.execute(
                        "SELECT id FROM items WHERE ext_id = ? AND text_key = ?",
                        (r["ext_id"], r["text_key"]),
                    ).fetchone()[0]
                )
                continue
            ids.append(int(inserted[0]))
            if r["source"] == "llm":
                c.execute(
                    "INSERT INTO label_fts (content, label_id) VALUES (?, ?)",
                    (r["text"], r["label_id"]),
                )
        return ids

    def save_router(self, weights: bytes, meta: dict, keep: int = 10) -> None:
        """Store a router head (``.npz`` bytes + JSON); the newest ``keep`` are kept."""
        with self.write() as c:
            c.execute(
                "INSERT INTO router_versions (meta, weights, created_at) VALUES (?, ?, ?)",
                (json.dumps(meta, sort_keys=True), weights, time.time()),
            )
            c.execute(
                "DELETE FROM router_versions WHERE id NOT IN "
                "(SELECT id FROM router_versions ORDER BY id DESC LIMIT ?)",
                (keep,),
            )

    @staticmethod
    def record_failure(
        c: sqlite3.Connection,
        *,
        ext_id: str | None,
        text_key: str,
        text: str,
        kind: str,
        error: str,
        outputs: Sequence[str] = (),
    ) -> None:
        c.execute(
            "INSERT INTO failures (ext_id, text_key, text, kind, error, outputs, "
            "created_at) VALUES (?,?,?,?,?,?,?)",
            (ext_id, text_key, text, kind, error, json.dumps(list(outputs)), time.time()),
        )
