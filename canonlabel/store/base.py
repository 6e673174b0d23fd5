"""The :class:`Store` contract: connections, transactions, locks and meta, and the
repositories that own the tables.

A store holds items, labels, aliases, the merge log, failures, curation, router and
projection state. Two implementations share this code: :class:`~canonlabel.store.SqliteStore`
(one file, one writer process) and :class:`~canonlabel.store.PostgresStore` (one database,
many writer processes). Every SQL statement lives in a repository, one per concept:

* ``store.items``: items (insert, look up, the semantic cache, relabel);
* ``store.members``: the items of labels and raw labels (counts, texts, vectors);
* ``store.labels``: canonical labels, and full-text search (backend-specific);
* ``store.aliases``: raw labels and the label each maps to;
* ``store.log``: the merge log that ``undo`` reads;
* ``store.corrections``: consensus corrections and rechecks;
* ``store.adjudications``: the LLM's answers about pairs of groups;
* the smaller tables: ``store.failures``, ``store.router_versions``, ``store.hierarchy``,
  ``store.categories``, ``store.annotations``, ``store.projection``.

Repositories read with the store's :meth:`Store.query` and write inside
``with store.write() as c:``, whose ``c`` their write methods take: one durable
transaction. ``write(label_space=True)`` also serialises the transaction against every
other writer of the label space (a no-op where there is only one writer), which
canonicalisation, consolidation and curation need.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from canonlabel.errors import IncompatibleStoreError, TransientStoreError
from canonlabel.store.auxiliary import (
    Annotations,
    Categories,
    Failures,
    Hierarchy,
    Projection,
    RouterVersions,
)
from canonlabel.store.decisions import Adjudications, Corrections
from canonlabel.store.items import Items
from canonlabel.store.labels import Aliases, Labels
from canonlabel.store.log import MergeLog
from canonlabel.store.members import Members
from canonlabel.store.sql import Tx

T = TypeVar("T")
EPOCH_KEY = "label_space_epoch"  # bumped by every change that rewrites existing labels


class Store(ABC):
    """Persistence for one label space. Implementations: SQLite and PostgreSQL.

    What differs between backends is abstract here (connections and transactions, the
    writer lock, text-key claims and the integrity check) or a repository subclass
    (full-text search, the order of aliases, items' pgvector column).
    """

    #: True where several processes may write at once (they then sync their memory).
    shared: bool = False
    location: str

    def __init__(
        self,
        *,
        labels: type[Labels],
        aliases: type[Aliases] = Aliases,
        items: type[Items] = Items,
    ) -> None:
        self.log = MergeLog(self)
        self.labels = labels(self, self.log)
        self.aliases = aliases(self, self.labels, self.log)
        self.items = items(self, self.labels)
        self.members = Members(self)
        self.corrections = Corrections(self, self.log)
        self.adjudications = Adjudications(self)
        self.failures = Failures(self)
        self.router_versions = RouterVersions(self)
        self.hierarchy = Hierarchy(self)
        self.categories = Categories(self)
        self.annotations = Annotations(self)
        self.projection = Projection(self)

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
