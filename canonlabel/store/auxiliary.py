"""The store's smaller tables: failures, router versions, the label hierarchy, categories,
taxonomy annotations and the exploration map's projection."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import NamedTuple

from canonlabel.store.sql import Repository, Tx, chunks, marks


class Failures(Repository):
    """Texts that got no label: invalid LLM answers (paid for), guard rejections and
    backend errors."""

    @staticmethod
    def record(
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

    def paid(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Texts already answered with a failure that asking again would repeat:
        invalid LLM answers (paid for) and texts the guard rejected. key -> (kind, error)."""
        found: dict[str, tuple[str, str]] = {}
        for chunk in chunks(dict.fromkeys(keys)):
            rows = self._query(
                "SELECT text_key, kind, error FROM failures WHERE kind IN "
                f"('invalid_output', 'rejected') AND text_key IN ({marks(len(chunk))})",
                chunk,
            )
            found.update((key, (kind, error)) for key, kind, error in rows)
        return found

    def ext_ids(self) -> set[str | None]:
        """The external ids of every failure."""
        return {e for (e,) in self._query("SELECT ext_id FROM failures")}

    def count(self) -> int:
        return self._count("SELECT count(*) FROM failures")


class RouterVersions(Repository):
    """Fitted router heads (``.npz`` bytes and JSON metadata), newest last."""

    def save(self, weights: bytes, meta: dict, keep: int = 10) -> None:
        """Store a router head; the newest ``keep`` are kept."""
        with self._db.write() as c:
            c.execute(
                "INSERT INTO router_versions (meta, weights, created_at) VALUES (?, ?, ?)",
                (json.dumps(meta, sort_keys=True), weights, time.time()),
            )
            c.execute(
                "DELETE FROM router_versions WHERE id NOT IN "
                "(SELECT id FROM router_versions ORDER BY id DESC LIMIT ?)",
                (keep,),
            )

    def count(self) -> int:
        return self._count("SELECT count(*) FROM router_versions")


class Hierarchy(Repository):
    """The label hierarchy: parents by level, the level-1 parent of each label, and the
    parent of each parent above level 1 (see ``canonlabel.hierarchy``)."""

    def rows(self) -> tuple[list[tuple], list[tuple]]:
        """Parents ``(id, level, name, parent_id, count)`` and links ``(label_id,
        parent_id)``."""
        parents = self._query("SELECT id, level, name, parent_id, count FROM parents ORDER BY id")
        return parents, self._query("SELECT label_id, parent_id FROM label_parents")

    def save(self, parents: Sequence[tuple], links: Sequence[tuple]) -> None:
        """Replace the stored hierarchy with these rows (as :meth:`rows`)."""
        now = time.time()
        with self._db.write() as c:
            c.execute("DELETE FROM label_parents")
            c.execute("DELETE FROM parents")
            c.executemany(
                "INSERT INTO parents (id, level, name, parent_id, count, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, now) for row in parents],
            )
            c.executemany("INSERT INTO label_parents VALUES (?, ?)", list(links))


class CategoryVectors(NamedTuple):
    name: str
    vector: bytes  # of the description
    examples_vector: bytes | None  # mean of the examples' embeddings, if any


class Categories(Repository):
    """Category definitions (embedded) and the category each canonical label maps to."""

    def hashes(self) -> dict[str, str]:
        """Definition hash by category name."""
        return dict(self._query("SELECT name, hash FROM categories"))

    def vectors(self) -> list[CategoryVectors]:
        """Every category's embeddings, by name."""
        return [CategoryVectors(*r) for r in self._query(
            "SELECT name, vector, examples_vector FROM categories ORDER BY name"
        )]  # fmt: skip

    @staticmethod
    def save(
        c: Tx,
        name: str,
        description: str,
        examples: Sequence[str],
        definition_hash: str,
        vector: bytes,
        examples_vector: bytes | None,
    ) -> None:
        """Insert or replace a category definition."""
        c.execute(
            "INSERT INTO categories VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "description = excluded.description, examples = excluded.examples, "
            "hash = excluded.hash, vector = excluded.vector, "
            "examples_vector = excluded.examples_vector, updated_at = excluded.updated_at",
            (
                name,
                description,
                json.dumps(list(examples)),
                definition_hash,
                vector,
                examples_vector,
                time.time(),
            ),
        )

    @staticmethod
    def delete(c: Tx, name: str) -> None:
        c.execute("DELETE FROM categories WHERE name = ?", (name,))

    @staticmethod
    def map_labels(c: Tx, rows: Sequence[tuple[int, str, float, str]]) -> None:
        """Replace every label's category with ``(label_id, category, similarity,
        method)`` rows."""
        c.execute("DELETE FROM label_categories")
        for label_id, category, similarity, method in rows:
            c.execute(
                "INSERT INTO label_categories VALUES (?, ?, ?, ?, ?)",
                (label_id, category, similarity, method, time.time()),
            )

    def of_labels(self) -> dict[int, str]:
        """Category by label id."""
        return dict(self._query("SELECT label_id, category FROM label_categories"))


class Annotations(Repository):
    """Multi-label answers under a fixed taxonomy, by text key, taxonomy and label cap."""

    def get(self, text_key: str, taxonomy: str, max_labels: int) -> list[str] | None:
        rows = self._query(
            "SELECT labels FROM annotations WHERE text_key = ? AND taxonomy = ? AND max_labels = ?",
            (text_key, taxonomy, max_labels),
        )
        return json.loads(rows[0][0]) if rows else None

    def save(self, text_key: str, taxonomy: str, max_labels: int, labels: list[str]) -> None:
        with self._db.write() as c:
            c.execute(
                "INSERT INTO annotations VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                "(text_key, taxonomy, max_labels) DO UPDATE SET labels = excluded.labels",
                (text_key, taxonomy, max_labels, json.dumps(labels), time.time()),
            )


class Placed(NamedTuple):
    """A placed item's vector (a blob) and position on the map."""

    vector: bytes
    x: float
    y: float


class Projection(Repository):
    """Each item's position on the exploration map."""

    def clear(self) -> None:
        with self._db.write() as c:
            c.execute("DELETE FROM projection")

    def unplaced(self) -> list[tuple[int, bytes]]:
        """``(item_id, vector)`` of the items with a vector and no position yet, by id."""
        return self._query(
            "SELECT i.id, i.vector FROM items i LEFT JOIN projection p ON p.item_id = i.id "
            "WHERE i.vector IS NOT NULL AND p.item_id IS NULL ORDER BY i.id"
        )

    def placed(self) -> list[Placed]:
        """The placed items with a vector, by id."""
        return [Placed(*r) for r in self._query(
            "SELECT i.vector, p.x, p.y FROM items i JOIN projection p ON p.item_id = i.id "
            "WHERE i.vector IS NOT NULL ORDER BY i.id"
        )]  # fmt: skip

    def positions(self) -> dict[int, tuple[float, float]]:
        """Position by item id."""
        return {i: (x, y) for i, x, y in self._query("SELECT item_id, x, y FROM projection")}

    @staticmethod
    def save(c: Tx, rows: Sequence[tuple[int, float, float]]) -> None:
        """Place items: ``(item_id, x, y)`` rows."""
        c.executemany(
            "INSERT INTO projection (item_id, x, y) VALUES (?, ?, ?) "
            "ON CONFLICT (item_id) DO UPDATE SET x = excluded.x, y = excluded.y",
            list(rows),
        )
