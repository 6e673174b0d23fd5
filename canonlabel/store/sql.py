"""What every repository of a store shares: the connection it works through, vector
blobs, and chunked ``IN (...)`` lists. SQL here uses ``?`` placeholders; a backend
translates them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np


class Tx(Protocol):
    """The transaction handed out by :meth:`Store.write` (DB-API style, ``?`` params)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


class Connection(Protocol):
    """What a repository needs of its store: reads, and write transactions."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    def write(self, *, label_space: bool = False) -> AbstractContextManager[Tx]: ...


class Repository:
    """One concept's tables, read and written through the store's connections."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._db.query(sql, params)

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        rows = self._db.query(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


def chunks(values: Iterable, size: int = 500) -> Iterator[list]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(n: int) -> str:
    """``n`` comma-separated placeholders."""
    return ",".join("?" * n)


_SEARCH_WORD = re.compile(r"\w+", re.UNICODE)


def search_words(text: str, limit: int = 32) -> list[str]:
    """The distinct lowercased words of ``text`` a full-text label search looks for."""
    return list(dict.fromkeys(w.lower() for w in _SEARCH_WORD.findall(text)))[:limit]
