"""Items: each labelled text once, with its label, source and (if cached) its vector."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from canonlabel.store.labels import Labels
from canonlabel.store.sql import Connection, Repository, Tx, chunks, from_blobs, marks, to_blob
from canonlabel.types import Source


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


class ItemSummary(NamedTuple):
    """An item without its text or vector, for maps and curves."""

    id: int
    label_id: int
    source: str
    matched_item: int | None
    created_at: float


class HitMatch(NamedTuple):
    """A cache or exact hit's external id and that of the item it matched."""

    ext_id: str
    matched_ext_id: str


ITEM_COLUMNS = "id, ext_id, text, label_id, raw_label, source, similarity, truncated"


def item_from_row(row: Sequence) -> StoredItem:
    return StoredItem(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


class CachedItems(NamedTuple):
    """The semantic cache's items, row-aligned."""

    ids: np.ndarray  # (N,) item ids
    vectors: np.ndarray  # (N, dim)
    labels: np.ndarray  # (N,) stored label ids


def _cached(rows: list[tuple], dim: int) -> CachedItems:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    labels = np.array([r[2] for r in rows], dtype=np.int64)
    return CachedItems(ids, from_blobs([bytes(r[1]) for r in rows], dim), labels)


class Items(Repository):
    """Stored items: inserted once per ``(ext_id, text_key)``, looked up by id, text key or
    identity, and relabelled by curation, consolidation and consensus."""

    _INSERT = (
        "INSERT INTO items (ext_id, text, text_key, truncated, label_id, raw_label, "
        "source, similarity, matched_item, vector, cached, prompt_tokens, "
        "completion_tokens, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (ext_id, text_key) DO NOTHING RETURNING id"
    )

    def __init__(self, db: Connection, labels: Labels) -> None:
        super().__init__(db)
        self._labels = labels

    # -- the semantic cache -------------------------------------------------------------
    def cached(self, dim: int, after: int = 0) -> CachedItems:
        """``(item_ids, vectors, label_ids)`` of the semantic cache's items (id > after)."""
        return _cached(self._query(
            "SELECT id, vector, label_id FROM items WHERE cached = 1 AND id > ? ORDER BY id",
            (after,),
        ), dim)  # fmt: skip

    def cached_ids(self, after: int = 0) -> list[int]:
        """Ids of the semantic cache's items with id > after (no vectors: cheap)."""
        return [r[0] for r in self._query(
            "SELECT id FROM items WHERE cached = 1 AND id > ? ORDER BY id", (after,)
        )]  # fmt: skip

    def cached_by_id(self, item_ids: Sequence[int], dim: int):
        """``(item_ids, vectors, label_ids)`` of these cached items."""
        rows: list = []
        for chunk in chunks(item_ids):
            rows += self._query(
                f"SELECT id, vector, label_id FROM items WHERE cached = 1 AND id IN "
                f"({marks(len(chunk))}) ORDER BY id",
                chunk,
            )
        return _cached(rows, dim)

    # -- lookups --------------------------------------------------------------------------
    def get(self, item_id: int) -> StoredItem | None:
        rows = self._query(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return item_from_row(rows[0]) if rows else None

    def by_ext_id(self, ext_ids: Sequence[str]) -> dict[str, StoredItem]:
        """The latest item stored under each id (an id may name several texts)."""
        found: dict[str, StoredItem] = {}
        for chunk in chunks(ext_ids):
            rows = self._query(
                f"SELECT ext_id, {ITEM_COLUMNS} FROM items WHERE ext_id IN ({marks(len(chunk))}) "
                "ORDER BY id",
                chunk,
            )
            for key, *rest in rows:
                found[key] = item_from_row(rest)
        return found

    def by_identity(
        self, pairs: Sequence[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], StoredItem], set[str]]:
        """Items stored under ``(ext_id, text_key)``, and which of the ids are known at all
        (an id known with another text is a reused id, not a resumed item)."""
        latest = self.by_ext_id(list(dict.fromkeys(i for i, _ in pairs)))
        wanted = [(i, k) for i, k in dict.fromkeys(pairs) if i in latest]
        found: dict[tuple[str, str], StoredItem] = {}
        for chunk in chunks(wanted, 400):
            rows = self._query(
                f"SELECT ext_id, text_key, {ITEM_COLUMNS} FROM items WHERE (ext_id, text_key) IN "
                f"(VALUES {','.join(['(?, ?)'] * len(chunk))})",
                [v for pair in chunk for v in pair],
            )
            for ext_id, key, *rest in rows:
                found[(ext_id, key)] = item_from_row(rest)
        return found, set(latest)

    def by_text_key(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        """The first item stored with each text key."""
        found: dict[str, StoredItem] = {}
        for chunk in chunks(dict.fromkeys(k for k in keys if k is not None)):
            rows = self._query(
                f"SELECT text_key, {ITEM_COLUMNS} FROM items WHERE text_key IN ({marks(len(chunk))}) "
                "ORDER BY id",
                chunk,
            )
            for key, *rest in rows:
                found.setdefault(key, item_from_row(rest))
        return found

    def label_ids_by_key(self, keys: Sequence[str]) -> dict[tuple[str | None, str], int]:
        """The label of the items stored with each text key, by (ext id, text key) and,
        for the first such item, by (None, text key)."""
        found: dict[tuple[str | None, str], int] = {}
        for chunk in chunks(sorted(set(keys))):
            rows = self._query(
                f"SELECT ext_id, text_key, label_id FROM items WHERE text_key IN "
                f"({marks(len(chunk))}) AND label_id IS NOT NULL ORDER BY id",
                chunk,
            )
            for ext_id, key, label_id in rows:
                found.setdefault((ext_id, key), label_id)
                found.setdefault((None, key), label_id)
        return found

    def label_ids(self, item_ids: Sequence[int]) -> dict[int, int]:
        """The stored label id of each of these items."""
        found: dict[int, int] = {}
        for chunk in chunks(item_ids):
            found.update(self._query(
                f"SELECT id, label_id FROM items WHERE id IN ({marks(len(chunk))})", chunk
            ))  # fmt: skip
        return found

    def raw_labels(self, item_ids: Sequence[int]) -> dict[int, str | None]:
        """Raw label of each item id (one query per 500 ids)."""
        found: dict[int, str | None] = {}
        for chunk in chunks(dict.fromkeys(item_ids)):
            found.update(self._query(
                f"SELECT id, raw_label FROM items WHERE id IN ({marks(len(chunk))})", chunk
            ))  # fmt: skip
        return found

    def texts(
        self, item_ids: Sequence[int] | None = None, *, cached: bool = False
    ) -> dict[int, str]:
        """Text by item id: of these items, else of every item (``cached``: of the cache's)."""
        if item_ids is None:
            where = " WHERE cached = 1" if cached else ""
            return dict(self._query(f"SELECT id, text FROM items{where}"))
        found: dict[int, str] = {}
        for chunk in chunks(item_ids):
            rows = self._query(
                f"SELECT id, text FROM items WHERE id IN ({marks(len(chunk))})", chunk
            )
            found.update((int(i), t) for i, t in rows)
        return found

    def identities(self) -> set[tuple[str | None, str]]:
        """``(ext_id, text)`` of every item."""
        return {(e, t) for e, t in self._query("SELECT ext_id, text FROM items")}

    # -- whole-store reads ------------------------------------------------------------------
    def summaries(self) -> list[ItemSummary]:
        """Every item in arrival order, without text or vector."""
        return [ItemSummary(*r) for r in self._query(
            "SELECT id, label_id, source, matched_item, created_at FROM items ORDER BY id"
        )]  # fmt: skip

    def ext_labels(self) -> list[tuple[str, int]]:
        """``(ext_id, label_id)`` of every item stored under an id, as stored."""
        return self._query("SELECT ext_id, label_id FROM items WHERE ext_id IS NOT NULL")

    def hit_matches(self) -> list[HitMatch]:
        """Each cache or exact hit with the item it matched, by external id."""
        return [HitMatch(*r) for r in self._query(
            "SELECT a.ext_id, b.ext_id FROM items a JOIN items b ON a.matched_item = b.id "
            "WHERE a.source IN ('cache', 'exact')"
        )]  # fmt: skip

    def count(
        self,
        *,
        source: str | None = None,
        cached: bool | None = None,
        label_ids: Sequence[int] | None = None,
    ) -> int:
        """Items with this source, in the cache or not, under these stored label ids."""
        where: list[str] = []
        params: list[object] = []
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if cached is not None:
            where.append(f"cached = {int(cached)}")  # a literal: PostgreSQL's partial index
        if label_ids is not None:
            where.append(f"label_id IN ({marks(len(label_ids))})")
            params += list(label_ids)
        sql = "SELECT count(*) FROM items" + (" WHERE " + " AND ".join(where) if where else "")
        return self._count(sql, params)

    def count_by_source(self) -> dict[str, int]:
        return dict(self._query("SELECT source, count(*) FROM items GROUP BY source"))

    def tokens(self) -> int:
        """LLM tokens (prompt and completion) paid for every item."""
        return self._count("SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM items")

    # -- writes (inside ``with store.write() as c``) --------------------------------------
    def insert(self, c: Tx, rows: Iterable[dict]) -> list[int]:
        """Insert items; the same ``(ext_id, text_key)`` twice is one item (the first row
        stands). Returns each row's item id."""
        ids = []
        for r in rows:
            inserted = c.execute(self._INSERT, self._params(r)).fetchone()
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
                self._labels.index_text(c, r["text"], r["label_id"])
        return ids

    @staticmethod
    def _params(r: dict) -> tuple:
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

    @staticmethod
    def relabel(c: Tx, item_ids: Sequence[int], label_id: int, *, was: int | None = None) -> None:
        """Give these items ``label_id`` (only those still at ``was``, if given)."""
        only = "" if was is None else " AND label_id = ?"
        for chunk in chunks(item_ids):
            c.execute(
                f"UPDATE items SET label_id = ? WHERE id IN ({marks(len(chunk))}){only}",
                [label_id, *chunk, *([] if was is None else [was])],
            )

    @staticmethod
    def relabel_hits(
        c: Tx, item_ids: Sequence[int], label_id: int, *, was: int | None = None
    ) -> None:
        """Give ``label_id`` to the hits that matched these items (only those still at
        ``was``, if given): hits follow the item they matched."""
        only = "" if was is None else " AND label_id = ?"
        for chunk in chunks(item_ids):
            c.execute(
                f"UPDATE items SET label_id = ? WHERE matched_item IN ({marks(len(chunk))}){only}",
                [label_id, *chunk, *([] if was is None else [was])],
            )

    @staticmethod
    def relabel_raw(c: Tx, raw_label: str, label_id: int, was: Sequence[int]) -> None:
        """Give ``label_id`` to the items of ``raw_label`` whose stored label is in ``was``
        (items a person moved elsewhere by hand stay)."""
        c.execute(
            f"UPDATE items SET label_id = ? WHERE raw_label = ? AND label_id IN ({marks(len(was))})",
            [label_id, raw_label, *was],
        )
