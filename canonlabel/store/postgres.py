"""The shared store: PostgreSQL with pgvector, written by many processes at once.

Same tables (built and upgraded by the same steps, :mod:`canonlabel.store.schema`) and
semantics as the SQLite store, with three additions that let several ``serve`` replicas
and batch workers share one label space:

* **Label-space lock.** Transactions that create labels or aliases, consolidate or
  curate take ``pg_advisory_xact_lock`` (``write(label_space=True)``), so exactly one
  process at a time decides where a raw label goes, after reading every label committed
  before it. Hits only insert items and never take it.
* **Claims.** Before paying for an LLM answer a process claims the text key with a
  *session* advisory lock on its own connection. A second process with the same text
  waits for the first's committed answer instead of paying again; if the first dies
  (even by SIGKILL) PostgreSQL drops its connection and the claim with it.
* **pgvector.** Cached items carry an ``embedding vector(dim)`` column; an HNSW index
  (cosine) over it is built when :class:`canonlabel.index.PgVectorIndex` is used
  (``CANONLABEL_INDEX=pgvector``), for a cache too large to hold in each process.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from canonlabel.errors import MissingDependencyError, StoreError, TransientStoreError
from canonlabel.store.base import Store
from canonlabel.store.items import Items
from canonlabel.store.labels import Labels
from canonlabel.store.schema import SCHEMA_VERSION, upgrade
from canonlabel.store.sql import Tx, search_words

_LOCKS = 0x636C  # advisory lock class ids: 0x636C0000 + kind
_LABEL_SPACE, _SCHEMA_LOCK, _CLAIM, _EXCLUSIVE = range(4)


@functools.lru_cache(maxsize=512)
def _sql(sql: str) -> str:
    """``?`` placeholders (the portable form) to psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


def _key32(text: str) -> int:
    """A signed 32-bit advisory lock key; a collision only makes one claim wait."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=4).digest(), "big", signed=True
    )


class _Tx:
    """A psycopg connection inside a transaction, taking ``?`` placeholders."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()):
        return self.conn.execute(_sql(sql), params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        cur = self.conn.cursor()
        cur.executemany(_sql(sql), list(rows))
        return cur


def _import():
    try:
        import psycopg
        import psycopg_pool
        from pgvector.psycopg import register_vector
    except ImportError as exc:
        raise MissingDependencyError(
            f"a postgresql:// store needs psycopg 3, psycopg-pool and pgvector ({exc}); "
            "pip install 'canonlabel[postgres]'"
        ) from exc
    return psycopg, psycopg_pool, register_vector


class PgLabels(Labels):
    def search(self, text: str, k: int) -> list[int]:
        """Label ids ranked by ``ts_rank`` over label names, aliases and member texts."""
        words = search_words(text)
        if not words:
            return []
        rows = self._query(
            "SELECT label_id, max(ts_rank(tsv, q)) AS best FROM label_fts, "
            "websearch_to_tsquery('english', ?) AS q WHERE tsv @@ q "
            "GROUP BY label_id ORDER BY best DESC, label_id LIMIT ?",
            (" or ".join(words), k * 3),
        )
        return [int(r[0]) for r in rows]


class PgItems(Items):
    """Items whose cached rows also carry their vector as a pgvector ``embedding``."""

    _INSERT = (
        "INSERT INTO items (ext_id, text, text_key, truncated, label_id, raw_label, "
        "source, similarity, matched_item, vector, cached, prompt_tokens, "
        "completion_tokens, created_at, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (ext_id, text_key) DO NOTHING RETURNING id"
    )

    @staticmethod
    def _params(r: dict) -> tuple:
        vector = r.get("vector") if r.get("cached") else None
        embedding = None if vector is None else np.asarray(vector, dtype=np.float32)
        return (*Items._params(r), embedding)

    def insert(self, c: Tx, rows: Iterable[dict]) -> list[int]:
        # Rows go in in key order, so two transactions inserting overlapping items wait
        # for each other instead of deadlocking.
        rows = list(rows)
        order = sorted(
            range(len(rows)), key=lambda i: (rows[i].get("ext_id") or "", rows[i]["text_key"])
        )
        ids = super().insert(c, [rows[i] for i in order])
        out = [0] * len(rows)
        for pos, item_id in zip(order, ids):
            out[pos] = item_id
        return out


class PostgresStore(Store):
    """PostgreSQL + pgvector persistence shared by many processes (connection pool)."""

    shared = True

    def __init__(self, url: str, *, pool_size: int = 4, timeout: float = 30.0) -> None:
        psycopg, psycopg_pool, register_vector = _import()
        super().__init__(labels=PgLabels, items=PgItems)
        self.location = _redact(url)
        self._psycopg = psycopg
        try:
            self._claims = psycopg.connect(url, autocommit=True, connect_timeout=int(timeout))
            self._create_schema(self._claims)
            register_vector(self._claims)
            self.pool = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=max(1, pool_size),
                timeout=timeout,
                kwargs={"autocommit": True},
                configure=register_vector,
                open=True,
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open store {self.location}: {exc}; is the server running and the "
                "URL right (postgresql://user:password@host:port/database)?"
            ) from exc
        self._claim_lock = threading.Lock()
        self._held: set[tuple[int, int]] = set()

    def _create_schema(self, conn) -> None:
        """Bring the database to :data:`SCHEMA_VERSION` by the ordered steps of
        :mod:`~canonlabel.store.schema`, in one transaction under the schema lock."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, _SCHEMA_LOCK))
            version = 0
            if conn.execute("SELECT to_regclass('meta')").fetchone()[0] is not None:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None or int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.location} holds tables that are not a canonlabel store of "
                        f"schema {SCHEMA_VERSION} or older; use another database or upgrade "
                        "canonlabel"
                    )
                version = int(row[0])
            for v in range(version, SCHEMA_VERSION):
                conn.execute(upgrade("postgres", v))
            if version < SCHEMA_VERSION:
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )

    def close(self) -> None:
        self.pool.close()
        self._claims.close()

    def lock_writer(self, wait: float = 0.0) -> None:
        """Many writers share a PostgreSQL store: nothing to take."""

    # -- transactions ---------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.pool.connection() as conn:
            return conn.execute(_sql(sql), params or None).fetchall()

    @contextmanager
    def write(self, *, label_space: bool = False) -> Iterator[_Tx]:
        errors = self._psycopg.errors
        try:
            with self.pool.connection() as conn, conn.transaction():
                if label_space:
                    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, _LABEL_SPACE))
                yield _Tx(conn)
        except (
            errors.DeadlockDetected,
            errors.SerializationFailure,
            self._psycopg.OperationalError,
        ) as exc:
            raise TransientStoreError(
                f"store {self.location} rolled a transaction back ({exc.__class__.__name__}: "
                f"{str(exc).strip()[:200]}); nothing of it was written, try again"
            ) from exc

    # -- claims and exclusive locks (session locks on one connection) ---------------------
    def _try_lock(self, kind: int, key: int) -> bool:
        with self._claim_lock:
            if (kind, key) in self._held:
                return True
            got = self._claims.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_LOCKS + 1 + kind, key)
            ).fetchone()[0]
            if got:
                self._held.add((kind, key))
            return bool(got)

    def _unlock(self, kind: int, key: int) -> None:
        with self._claim_lock:
            if (kind, key) in self._held:
                self._held.discard((kind, key))
                self._claims.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCKS + 1 + kind, key))

    def claim(self, text_key: str) -> bool:
        return self._try_lock(_CLAIM, _key32(text_key))

    def release(self, text_key: str) -> None:
        self._unlock(_CLAIM, _key32(text_key))

    def try_exclusive(self, name: str) -> bool:
        return self._try_lock(_EXCLUSIVE, _key32(name))

    def end_exclusive(self, name: str) -> None:
        self._unlock(_EXCLUSIVE, _key32(name))

    # -- backend specifics ----------------------------------------------------------------
    def _on_bind(self, c: Tx, dim: int) -> None:
        c.execute(f"ALTER TABLE items ALTER COLUMN embedding TYPE vector({int(dim)})")

    def ensure_vector_index(self) -> None:
        """Build the HNSW index over cached items' embeddings, if it is not there yet.

        Built on demand (by :class:`~canonlabel.index.PgVectorIndex`): a bulk build is
        far cheaper than keeping it up to date row by row, and processes that search in
        memory do not need it."""
        with self.write(label_space=True) as c:
            c.execute(
                "CREATE INDEX IF NOT EXISTS items_embedding ON items "
                "USING hnsw (embedding vector_cosine_ops) WHERE cached = 1"
            )

    def integrity_check(self) -> str:
        broken = self.count(
            "SELECT count(*) FROM items i LEFT JOIN labels l ON l.id = i.label_id "
            "WHERE l.id IS NULL"
        )
        return "ok" if broken == 0 else f"{broken} items point at missing labels"

    def nearest_cached(self, queries: np.ndarray, k: int, ef_search: int = 64):
        """``(similarities, item_ids)`` of the ``k`` nearest cached items per query (HNSW)."""
        sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
            for n, q in enumerate(np.asarray(queries, dtype=np.float32)):
                rows = conn.execute(
                    "SELECT id, 1 - (embedding <=> %s) FROM items WHERE cached = 1 "
                    "ORDER BY embedding <=> %s LIMIT %s",
                    (q, q, k),
                ).fetchall()
                for j, (item_id, sim) in enumerate(rows):
                    ids[n, j], sims[n, j] = item_id, sim
        return sims, ids


def start_local(pgdata: str) -> str:
    """Start (or find running) a local PostgreSQL 16 with pgvector in ``pgdata`` through
    ``pgserver`` (PyPI, no root); it keeps running after this process. Returns its URL."""
    server = _pgserver().get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def stop_local(pgdata: str) -> None:
    """Stop the local server :func:`start_local` started in ``pgdata``."""
    _pgserver().get_server(pgdata, cleanup_mode="stop").cleanup()


def _pgserver():
    try:
        import pgserver
    except ImportError as exc:
        raise MissingDependencyError(
            f"a local PostgreSQL needs pgserver ({exc}); pip install 'canonlabel[postgres]'"
        ) from exc
    return pgserver


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}@{tail}"
