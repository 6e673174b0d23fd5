"""Stores: one :class:`Store` contract, two backends.

``open_store("labels.db")`` opens (or creates) the embedded SQLite store;
``open_store("postgresql://user@host/db")`` a shared PostgreSQL + pgvector one that
several processes may write at once (install ``canonlabel[postgres]``). Both are read
and written through the same repositories (``store.items``, ``store.labels``...; see
:mod:`canonlabel.store.base`), which hold every SQL statement of the package.
"""

from __future__ import annotations

from pathlib import Path

from canonlabel.store.base import Store
from canonlabel.store.decisions import Correction, Recheck
from canonlabel.store.items import CachedItems, StoredItem
from canonlabel.store.schema import SCHEMA_VERSION
from canonlabel.store.sql import Tx, from_blobs, to_blob
from canonlabel.store.sqlite import SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "CachedItems",
    "Correction",
    "PostgresStore",
    "Recheck",
    "SqliteStore",
    "Store",
    "StoredItem",
    "Tx",
    "from_blobs",
    "is_url",
    "open_store",
    "store_exists",
    "to_blob",
]

_PG_SCHEMES = ("postgresql://", "postgres://")


def is_url(db: str | Path) -> bool:
    """True for a PostgreSQL URL, False for a SQLite path."""
    return str(db).startswith(_PG_SCHEMES)


def store_exists(db: str | Path) -> bool:
    """Whether there is a store to read (a server URL is assumed to exist)."""
    return is_url(db) or Path(db).exists()


def open_store(db: str | Path, **options) -> Store:
    """Open the store at a SQLite path or a ``postgresql://`` URL."""
    if is_url(db):
        from canonlabel.store.postgres import PostgresStore

        return PostgresStore(str(db), **options)
    return SqliteStore(db)  # options tune connections to a server


def __getattr__(name: str):
    if name == "PostgresStore":  # psycopg is an optional dependency
        from canonlabel.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)
