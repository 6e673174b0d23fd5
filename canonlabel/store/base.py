"""The :class:`Store` contract and everything about it that is plain, portable SQL.

A store holds items, labels, aliases, the merge log, failures, curation, router and
projection state. Two implementations share this code: :class:`~canonlabel.store.SqliteStore`
(one file, one writer process) and :class:`~canonlabel.store.PostgresStore` (one database,
many writer processes). SQL here uses ``?`` placeholders; a backend translates them.

Callers read with :meth:`Store.query` and write inside ``with store.write() as c:``, whose
``c.execute`` runs in one durable transaction. ``write(label_space=True)`` also serialises
the transaction against every other writer of the label space (a no-op where there is only
one writer), which canonicalisation, consolidation and curation need.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from canonlabel.errors import IncompatibleStoreError, TransientStoreError
from canonlabel.types import Source

SCHEMA_VERSION = 9
T = TypeVar("T")
EPOCH_KEY = "label_space_epoch"  # bumped by every change that rewrites existing labels


@dataclass(frozen=True)
class Correction:
    """An LLM-answered item the consensus moved: from ``answer_label`` (the label of the
    LLM's answer) to ``label_id``, with ``support`` (the evidence's share for it)."""

    item_id: int
    answer_label: int
    label_id: int
    support: float
    kept: bool = False


@dataclass(frozen=True)
class Recheck:
    """The LLM's second answer about a contested item: whether, asked to choose between
    its first answer's label and ``label_id``, it chose ``label_id``."""

    item_id: int
    label_id: int
    chose: bool


@dataclass(frozen=True)
class StoredItem:
    id: int
    ext_id: str | None
    text: str
    label_id: int
    raw_label: str | None
    source: Source
    similarity: float | None
    truncated: bool


class Tx(Protocol):
    """The transaction handed out by :meth:`Store.write` (DB-API style, ``?`` params)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


# Consensus corrections (canonlabel.labelspace.consensus): an LLM-answered item whose
# label the evidence moved away from the LLM's answer. ``kept``: a person undid the move,
# so the item keeps the LLM's answer from then on. (Same SQL on SQLite and PostgreSQL.)
CORRECTIONS_TABLE = """
CREATE TABLE corrections (
    item_id BIGINT PRIMARY KEY,
    answer_label BIGINT NOT NULL,
    label_id BIGINT NOT NULL,
    support REAL NOT NULL,
    kept INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX corrections_label ON corrections(label_id);
CREATE TABLE rechecks (
    item_id BIGINT PRIMARY KEY,
    label_id BIGINT NOT NULL,
    chose INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


# The label hierarchy (canonlabel.hierarchy): parents by level, the level-1 parent of
# each label, and the parent of each parent above level 1.
HIERARCHY_TABLES = """
CREATE TABLE parents (
    id BIGINT PRIMARY KEY,
    level INTEGER NOT NULL,
    name TEXT NOT NULL,
    parent_id BIGINT,
    count BIGINT NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE label_parents (label_id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL);
"""


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


def _chunks(values: Sequence, size: int = 500) -> Iterator[list]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


_SEARCH_WORD = re.compile(r"\w+", re.UNICODE)


def search_words(text: str, limit: int = 32) -> list[str]:
    """The distinct lowercased words of ``text`` a full-text label search looks for."""
    return list(dict.fromkeys(w.lower() for w in _SEARCH_WORD.findall(text)))[:limit]


def _marks(n: int) -> str:
    return ",".join("?" * n)


_ITEM = "id, ext_id, text, label_id, raw_label, source, similarity, truncated"


def _item(row: Sequence) -> StoredItem:
    return StoredItem(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


class Store(ABC):
    """Persistence for one label space. Implementations: SQLite and PostgreSQL.

    What differs between backends is abstract here: connections and transactions,
    the writer lock, full-text search, text-key claims and the integrity check.
    """

    #: True where several processes may write at once (they then sync their memory).
    shared: bool = False
    location: str

    # -- backend ------------------------------------------------------------------------
    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one read statement and return every row."""

    @abstractmethod
    def write(self, *, label_space: bool = False) -> AbstractContextManager[Tx]:
        """One write transaction, committed durably on exit, rolled back on error."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def lock_writer(self, wait: float = 0.0) -> None:
        """Make sure this process may write (SQLite: the only writer; PostgreSQL: no-op)."""

    @abstractmethod
    def fulltext_labels(self, text: str, k: int) -> list[int]:
        """Label ids ranked by relevance of their names, aliases and member texts."""

    @abstractmethod
    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong with the stored data."""

    def claim(self, text_key: str) -> bool:
        """Try to become the one process that asks the LLM about ``text_key``; True when
        no other live process holds it. Single-writer stores always say True."""
        return True

    def release(self, text_key: str) -> None:  # noqa: B027 (optional hook)
        """Give a claim back (after the answer is committed, or on failure)."""

    def try_exclusive(self, name: str) -> bool:
        """Take a process-wide named lock without waiting (for example to be the one
        consolidating); released by :meth:`end_exclusive` or when the process dies."""
        return True

    def end_exclusive(self, name: str) -> None:  # noqa: B027 (optional hook)
        """Release a lock from :meth:`try_exclusive`."""

    def transaction(
        self, fn: Callable[[Tx], T], *, label_space: bool = False, attempts: int = 3
    ) -> T:
        """``fn(c)`` in one write transaction, run again (up to ``attempts`` times in all)
        when the store rolled it back for a transient reason. ``fn`` must not change
        anything outside the transaction before it commits."""
        for attempt in range(attempts):
            try:
                with self.write(label_space=label_space) as c:
                    return fn(c)
            except TransientStoreError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    # -- small helpers ------------------------------------------------------------------
    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def count(self, sql: str, *args) -> int:
        row = self.query_one(sql, args)
        return int(row[0]) if row and row[0] is not None else 0

    # -- meta ---------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.query("SELECT key, value FROM meta"))

    def set_meta(self, values: dict[str, object], c: Tx | None = None) -> None:
        rows = [(k, json.dumps(v)) for k, v in values.items()]
        sql = (
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        if c is not None:
            c.executemany(sql, rows)
            return
        with self.write() as tx:
            tx.executemany(sql, rows)

    def epoch(self) -> int:
        """How many times existing labels were rewritten (merge, split, consolidation...)."""
        row = self.query_one("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,))
        return int(json.loads(row[0])) if row else 0

    def bump_epoch(self, c: Tx) -> None:
        """Tell other processes' label spaces to reload (call in the changing transaction)."""
        row = c.execute("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,)).fetchone()
        self.set_meta({EPOCH_KEY: int(json.loads(row[0])) + 1 if row else 1}, c)

    def bind_embedder(self, embedder_id: str, dim: int, *, write: bool = True) -> None:
        """Record the embedder on first use; refuse another one afterwards."""
        meta = self.meta()
        if "embedder" not in meta:
            if not write:
                return
            with self.write(label_space=True) as c:  # two first writers: one wins
                if c.execute("SELECT 1 FROM meta WHERE key = 'embedder'").fetchone() is None:
                    self.set_meta(
                        {"embedder": embedder_id, "dim": dim, "created_at": time.time()}, c
                    )
                    self._on_bind(c, dim)
            meta = self.meta()
        stored, stored_dim = json.loads(meta["embedder"]), json.loads(meta["dim"])
        if stored != embedder_id or stored_dim != dim:
            raise IncompatibleStoreError(
                f"store {self.location} was built with embedder {stored} (dim {stored_dim}); "
                f"this run uses {embedder_id} (dim {dim}). Use --embedder {stored} or "
                "another --db; vectors of different models cannot be compared"
            )

    def _on_bind(self, c: Tx, dim: int) -> None:  # noqa: B027 (optional hook)
        """Backend hook: the vector dimension is known (PostgreSQL builds its index)."""

    # -- reads --------------------------------------------------------------------------
    def cached_items(self, dim: int, after: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(item_ids, vectors, label_ids)`` of the semantic cache's items (id > after)."""
        rows = self.query(
            "SELECT id, vector, label_id FROM items WHERE cached = 1 AND id > ? ORDER BY id",
            (after,),
        )
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        labels = np.array([r[2] for r in rows], dtype=np.int64)
        return ids, from_blobs([bytes(r[1]) for r in rows], dim), labels

    def cached_ids(self, after: int = 0) -> list[int]:
        """Ids of the semantic cache's items with id > after (no vectors: cheap)."""
        return [r[0] for r in self.query(
            "SELECT id FROM items WHERE cached = 1 AND id > ? ORDER BY id", (after,)
        )]  # fmt: skip

    def cached_items_by_id(self, item_ids: Sequence[int], dim: int):
        """``(item_ids, vectors, label_ids)`` of these cached items."""
        rows: list = []
        for chunk in _chunks(list(item_ids)):
            rows += self.query(
                f"SELECT id, vector, label_id FROM items WHERE cached = 1 AND id IN "
                f"({_marks(len(chunk))}) ORDER BY id",
                chunk,
            )
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        labels = np.array([r[2] for r in rows], dtype=np.int64)
        return ids, from_blobs([bytes(r[1]) for r in rows], dim), labels

    def label_rows(self, after: int = 0) -> list[tuple[int, str, bytes, int | None]]:
        return [
            (r[0], r[1], bytes(r[2]), r[3])
            for r in self.query(
                "SELECT id, name, vector, merged_into FROM labels WHERE id > ? ORDER BY id",
                (after,),
            )
        ]

    def alias_rows(self, after: int = 0) -> list[tuple[str, int, int]]:
        """``(raw_label, label_id, seq)`` in the order the aliases were written."""
        return self.query(
            "SELECT raw_label, label_id, seq FROM aliases WHERE seq > ? ORDER BY seq", (after,)
        )

    def alias_vectors(self, dim: int) -> dict[str, np.ndarray]:
        """Stored embeddings of raw labels (older stores lack some)."""
        rows = self.query("SELECT raw_label, vector FROM aliases WHERE vector IS NOT NULL")
        return dict(zip([r[0] for r in rows], from_blobs([bytes(r[1]) for r in rows], dim)))

    def adjudications(self, pairs: Sequence[str] | None = None) -> dict[str, bool]:
        """Stored LLM answers to "same kind of message?" by pair key (all of them when
        ``pairs`` is None)."""
        if pairs is None:
            return {k: bool(v) for k, v in self.query("SELECT pair, same FROM adjudications")}
        found: dict[str, bool] = {}
        for chunk in _chunks(pairs):
            rows = self.query(
                f"SELECT pair, same FROM adjudications WHERE pair IN ({_marks(len(chunk))})",
                chunk,
            )
            found.update((k, bool(v)) for k, v in rows)
        return found

    def member_texts(self, raw_labels: Sequence[str], limit: int) -> list[str]:
        """Texts the LLM gave these raw labels (oldest first), for showing examples."""
        rows = self.query(
            f"SELECT text FROM items WHERE source = 'llm' AND raw_label IN "
            f"({_marks(len(raw_labels))}) ORDER BY id LIMIT ?",
            [*raw_labels, limit],
        )
        return [r[0] for r in rows]

    def typical_member_texts(
        self, raw_labels: Sequence[str], centroid: np.ndarray, limit: int
    ) -> list[str]:
        """The texts the LLM gave these raw labels that lie nearest ``centroid`` (ties by
        text), so the examples shown do not depend on arrival order."""
        rows = self.query(
            f"SELECT text, vector FROM items WHERE source = 'llm' AND vector IS NOT NULL "
            f"AND raw_label IN ({_marks(len(raw_labels))})",
            list(raw_labels),
        )
        if not rows:
            return []
        sims = from_blobs([r[1] for r in rows], len(centroid)) @ centroid
        order = sorted(range(len(rows)), key=lambda i: (-round(float(sims[i]), 6), rows[i][0]))
        return [rows[i][0] for i in order[:limit]]

    def pinned_labels(self) -> set[int]:
        return {r[0] for r in self.query("SELECT id FROM labels WHERE pinned = 1")}

    def raw_label_uses(self) -> dict[str, int]:
        """Items per raw label (LLM answers and the hits that reused them)."""
        return dict(
            self.query(
                "SELECT raw_label, count(*) FROM items WHERE raw_label IS NOT NULL "
                "GROUP BY raw_label"
            )
        )

    def label_item_counts(self) -> dict[int, int]:
        return dict(self.query("SELECT label_id, count(*) FROM items GROUP BY label_id"))

    def items_by_ext_id(self, ext_ids: Sequence[str]) -> dict[str, StoredItem]:
        """The latest item stored under each id (an id may name several texts)."""
        found: dict[str, StoredItem] = {}
        for chunk in _chunks(ext_ids):
            rows = self.query(
                f"SELECT ext_id, {_ITEM} FROM items WHERE ext_id IN ({_marks(len(chunk))}) "
                "ORDER BY id",
                chunk,
            )
            for key, *rest in rows:
                found[key] = _item(rest)
        return found

    def items_by_identity(
        self, pairs: Sequence[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], StoredItem], set[str]]:
        """Items stored under ``(ext_id, text_key)``, and which of the ids are known at all
        (an id known with another text is a reused id, not a resumed item)."""
        latest = self.items_by_ext_id(list(dict.fromkeys(i for i, _ in pairs)))
        wanted = [(i, k) for i, k in dict.fromkeys(pairs) if i in latest]
        found: dict[tuple[str, str], StoredItem] = {}
        for chunk in _chunks(wanted, 400):
            rows = self.query(
                f"SELECT ext_id, text_key, {_ITEM} FROM items WHERE (ext_id, text_key) IN "
                f"(VALUES {','.join(['(?, ?)'] * len(chunk))})",
                [v for pair in chunk for v in pair],
            )
            for ext_id, key, *rest in rows:
                found[(ext_id, key)] = _item(rest)
        return found, set(latest)

    def items_by_text_key(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        """The first item stored with each text key."""
        found: dict[str, StoredItem] = {}
        for chunk in _chunks(list(dict.fromkeys(k for k in keys if k is not None))):
            rows = self.query(
                f"SELECT text_key, {_ITEM} FROM items WHERE text_key IN ({_marks(len(chunk))}) "
                "ORDER BY id",
                chunk,
            )
            for key, *rest in rows:
                found.setdefault(key, _item(rest))
        return found

    def item_labels(self, keys: Sequence[str]) -> dict[tuple[str | None, str], int]:
        """The label of the items stored with each text key, by (ext id, text key) and,
        for the first such item, by (None, text key)."""
        found: dict[tuple[str | None, str], int] = {}
        for chunk in _chunks(sorted(set(keys))):
            rows = self.query(
                f"SELECT ext_id, text_key, label_id FROM items WHERE text_key IN "
                f"({_marks(len(chunk))}) AND label_id IS NOT NULL ORDER BY id",
                chunk,
            )
            for ext_id, key, label_id in rows:
                found.setdefault((ext_id, key), label_id)
                found.setdefault((None, key), label_id)
        return found

    def corrections(self) -> dict[int, Correction]:
        """Every consensus correction, by item id (see ``CORRECTIONS_TABLE``)."""
        rows = self.query(
            "SELECT item_id, answer_label, label_id, support, kept FROM corrections"
        )
        return {int(r[0]): Correction(int(r[0]), int(r[1]), int(r[2]), float(r[3]), bool(r[4]))
                for r in rows}  # fmt: skip

    def write_corrections(
        self,
        c: Tx,
        moved: Sequence[Correction],
        restored: Sequence[Correction],
        *,
        log: bool = True,
    ) -> None:
        """Move items back to the LLM's answer (``restored``), then to their consensus
        label (``moved``; a ``kept`` one only records that a person kept the answer); the
        cache hits that followed an item follow it. ``log``: one ``merges`` entry of kind
        ``consensus`` that ``undo`` reverts."""
        now = time.time()
        for fix in restored:
            c.execute("DELETE FROM corrections WHERE item_id = ?", (fix.item_id,))
            self._relabel_item(c, fix.item_id, fix.label_id, fix.answer_label)
        for fix in moved:
            c.execute("DELETE FROM corrections WHERE item_id = ?", (fix.item_id,))
            c.execute(
                "INSERT INTO corrections (item_id, answer_label, label_id, support, kept, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (fix.item_id, fix.answer_label, fix.label_id, fix.support, int(fix.kept), now),
            )
            if not fix.kept:
                self._relabel_item(c, fix.item_id, fix.answer_label, fix.label_id)
        if not log:
            return
        detail = {
            "moved": [[m.item_id, m.answer_label, m.label_id, m.support] for m in moved],
            "restored": [[r.item_id, r.answer_label, r.label_id, r.support] for r in restored],
        }
        c.execute(
            "INSERT INTO merges (kind, into_label, created_at, detail) "
            "VALUES ('consensus', 0, ?, ?)",
            (now, json.dumps(detail)),
        )

    @staticmethod
    def _relabel_item(c: Tx, item: int, was: int, now: int) -> None:
        c.execute("UPDATE items SET label_id = ? WHERE id = ?", (now, item))
        c.execute(
            "UPDATE items SET label_id = ? WHERE matched_item = ? AND label_id = ?",
            (now, item, was),
        )

    def rechecks(self) -> dict[int, Recheck]:
        """The LLM's second answers about contested items, by item id."""
        rows = self.query("SELECT item_id, label_id, chose FROM rechecks")
        return {int(r[0]): Recheck(int(r[0]), int(r[1]), bool(r[2])) for r in rows}

    def save_rechecks(self, found: Sequence[Recheck]) -> None:
        with self.write() as c:
            for r in found:
                c.execute("DELETE FROM rechecks WHERE item_id = ?", (r.item_id,))
                c.execute(
                    "INSERT INTO rechecks (item_id, label_id, chose, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (r.item_id, r.label_id, int(r.chose), time.time()),
                )

    def texts_by_id(self, item_ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for chunk in _chunks(list(item_ids)):
            rows = self.query(
                f"SELECT id, text FROM items WHERE id IN ({_marks(len(chunk))})", chunk
            )
            found.update((int(i), t) for i, t in rows)
        return found

    def merge_emptied(self, c: Tx, merges: Sequence[tuple[int, int, float]]) -> None:
        """Merge labels left without items (``(label, into, similarity)``), logged as
        kind ``emptied``."""
        now = time.time()
        for label, into, sim in merges:
            c.execute("UPDATE labels SET merged_into = ? WHERE id = ?", (into, label))
            c.execute(
                "INSERT INTO merges (kind, from_label, into_label, similarity, created_at) "
                "VALUES ('emptied', ?, ?, ?, ?)",
                (label, into, sim, now),
            )

    def hierarchy_rows(self) -> tuple[list[tuple], list[tuple]]:
        """The stored label hierarchy as rows: parents ``(id, level, name, parent_id,
        count)`` and links ``(label_id, parent_id)`` (see ``canonlabel.hierarchy.load``)."""
        parents = self.query("SELECT id, level, name, parent_id, count FROM parents ORDER BY id")
        return parents, self.query("SELECT label_id, parent_id FROM label_parents")

    def save_hierarchy(self, parents: Sequence[tuple], links: Sequence[tuple]) -> None:
        """Replace the stored hierarchy with these rows (as :meth:`hierarchy_rows`)."""
        now = time.time()
        with self.write() as c:
            c.execute("DELETE FROM label_parents")
            c.execute("DELETE FROM parents")
            c.executemany(
                "INSERT INTO parents (id, level, name, parent_id, count, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, now) for row in parents],
            )
            c.executemany("INSERT INTO label_parents VALUES (?, ?)", list(links))

    def typical_label_texts(self, label_id: int, centroid: np.ndarray, limit: int) -> list[str]:
        """The LLM-labelled texts of a label (its id as stored) nearest ``centroid``."""
        rows = self.query(
            "SELECT text, vector FROM items WHERE source = 'llm' AND vector IS NOT NULL "
            "AND label_id = ?",
            (label_id,),
        )
        if not rows:
            return []
        sims = from_blobs([r[1] for r in rows], len(centroid)) @ centroid
        order = sorted(range(len(rows)), key=lambda i: (-round(float(sims[i]), 6), rows[i][0]))
        return [rows[i][0] for i in order[:limit]]

    def mark_undone(self, c: Tx, entry: int) -> None:
        c.execute("UPDATE merges SET undone = 1 WHERE id = ?", (entry,))

    def correction_counts(self) -> dict[int, int]:
        """Members each label gained from consensus corrections (kept ones excluded)."""
        return dict(self.query(
            "SELECT label_id, count(*) FROM corrections WHERE kept = 0 GROUP BY label_id"
        ))  # fmt: skip

    def raw_labels(self, item_ids: Sequence[int]) -> dict[int, str | None]:
        """Raw label of each item id (one query per 500 ids)."""
        found: dict[int, str | None] = {}
        for chunk in _chunks(list(dict.fromkeys(item_ids))):
            found.update(
                self.query(
                    f"SELECT id, raw_label FROM items WHERE id IN ({_marks(len(chunk))})", chunk
                )
            )
        return found

    def paid_failures(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Texts already answered with a failure that asking again would repeat:
        invalid LLM answers (paid for) and texts the guard rejected. key -> (kind, error)."""
        found: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(list(dict.fromkeys(keys))):
            rows = self.query(
                "SELECT text_key, kind, error FROM failures WHERE kind IN "
                f"('invalid_output', 'rejected') AND text_key IN ({_marks(len(chunk))})",
                chunk,
            )
            found.update((key, (kind, error)) for key, kind, error in rows)
        return found

    # -- writes (call inside ``with store.write() as c``) -------------------------------
    def insert_label(self, c: Tx, name: str, vector: np.ndarray) -> int:
        label_id = int(
            c.execute(
                "INSERT INTO labels (name, vector, created_at) VALUES (?, ?, ?) RETURNING id",
                (name, to_blob(vector), time.time()),
            ).fetchone()[0]
        )
        self._index_text(c, name.replace("_", " "), label_id)
        return label_id

    def _index_text(self, c: Tx, content: str, label_id: int) -> None:
        c.execute("INSERT INTO label_fts (content, label_id) VALUES (?, ?)", (content, label_id))

    def insert_alias(
        self,
        c: Tx,
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
            self._index_text(c, raw_label.replace("_", " "), label_id)

    _INSERT_ITEM = (
        "INSERT INTO items (ext_id, text, text_key, truncated, label_id, raw_label, "
        "source, similarity, matched_item, vector, cached, prompt_tokens, "
        "completion_tokens, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (ext_id, text_key) DO NOTHING RETURNING id"
    )

    def insert_items(self, c: Tx, rows: Iterable[dict]) -> list[int]:
        ids = []
        for r in rows:
            # The same (id, text) twice is one item: the first row stands.
            inserted = c.execute(self._INSERT_ITEM, self._item_params(r)).fetchone()
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
                self._index_text(c, r["text"], r["label_id"])
        return ids

    @staticmethod
    def _item_params(r: dict) -> tuple:
        vector = r.get("vector")
        return (
            r.get("ext_id"),
            r["text"],
            r["text_key"],
            int(r.get("truncated", False)),
            r["label_id"],
            r.get("raw_label"),
            r["source"],
            None if r.get("similarity") is None else float(r["similarity"]),
            r.get("matched_item"),
            None if vector is None else to_blob(vector),
            int(r.get("cached", False)),
            r.get("prompt_tokens", 0),
            r.get("completion_tokens", 0),
            time.time(),
        )

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
        c: Tx,
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
