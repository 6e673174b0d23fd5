"""Members: the items of labels and raw labels, read for consolidation, curation, the
hierarchy and reports (counts, example texts, vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from canonlabel.store.items import ITEM_COLUMNS, StoredItem, item_from_row
from canonlabel.store.sql import Repository, from_blobs, marks


class ItemVector(NamedTuple):
    """An item's stored label, raw label and vector (a blob)."""

    id: int
    label_id: int
    raw_label: str | None
    vector: bytes


class RawLabelVector(NamedTuple):
    """The vector of an item labelled with ``raw_label``; ``label_id``: its answer's label
    (where it is stored, unless the consensus moved it)."""

    raw_label: str
    label_id: int
    vector: bytes


def _nearest(rows: list[tuple], centroid: np.ndarray, limit: int) -> list[str]:
    """The texts of ``(text, vector)`` rows nearest ``centroid``, ties by text."""
    if not rows:
        return []
    sims = from_blobs([r[1] for r in rows], len(centroid)) @ centroid
    order = sorted(range(len(rows)), key=lambda i: (-round(float(sims[i]), 6), rows[i][0]))
    return [rows[i][0] for i in order[:limit]]


class Members(Repository):
    """Reads of items grouped by label id or raw label."""

    def label_counts(self) -> dict[int, int]:
        """Items per stored label id."""
        return dict(self._query("SELECT label_id, count(*) FROM items GROUP BY label_id"))

    def raw_label_uses(self) -> dict[str, int]:
        """LLM answers per raw label (the hits that reused one are not the LLM saying it
        again: counting them let the router's answers reweigh the label space)."""
        return dict(self._query(
            "SELECT raw_label, count(*) FROM items WHERE raw_label IS NOT NULL "
            "AND source = 'llm' GROUP BY raw_label"
        ))  # fmt: skip

    def texts(self, raw_labels: Sequence[str], limit: int) -> list[str]:
        """Texts the LLM gave these raw labels (oldest first), for showing examples."""
        rows = self._query(
            f"SELECT text FROM items WHERE source = 'llm' AND raw_label IN "
            f"({marks(len(raw_labels))}) ORDER BY id LIMIT ?",
            [*raw_labels, limit],
        )
        return [r[0] for r in rows]

    def typical_texts(
        self, raw_labels: Sequence[str], centroid: np.ndarray, limit: int
    ) -> list[str]:
        """The texts the LLM gave these raw labels that lie nearest ``centroid`` (ties by
        text), so the examples shown do not depend on arrival order."""
        return _nearest(self._query(
            f"SELECT text, vector FROM items WHERE source = 'llm' AND vector IS NOT NULL "
            f"AND raw_label IN ({marks(len(raw_labels))})",
            list(raw_labels),
        ), centroid, limit)  # fmt: skip

    def typical_label_texts(
        self, label_ids: Sequence[int], centroid: np.ndarray, limit: int
    ) -> list[str]:
        """The LLM-labelled texts stored under these label ids (a label and those merged
        into it) nearest ``centroid``, but for those the consensus moved there: the LLM
        misread them once, and shown to it again as the label's examples they invite the
        same misreading."""
        return _nearest(self._query(
            "SELECT text, vector FROM items WHERE source = 'llm' AND vector IS NOT NULL "
            f"AND label_id IN ({marks(len(label_ids))}) "
            "AND id NOT IN (SELECT item_id FROM corrections WHERE kept = 0)",
            list(label_ids),
        ), centroid, limit)  # fmt: skip

    def label_texts(self, label_ids: Sequence[int], limit: int) -> list[str]:
        """The oldest LLM-labelled texts stored under these label ids."""
        return [r[0] for r in self._query(
            f"SELECT text FROM items WHERE label_id IN ({marks(len(label_ids))}) "
            "AND source = 'llm' ORDER BY id LIMIT ?",
            [*label_ids, limit],
        )]  # fmt: skip

    def newest(self, label_ids: Sequence[int], limit: int) -> list[StoredItem]:
        """The newest items stored under these label ids."""
        return [item_from_row(r) for r in self._query(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE label_id IN ({marks(len(label_ids))}) "
            "ORDER BY id DESC LIMIT ?",
            [*label_ids, limit],
        )]  # fmt: skip

    def cached(self, label_ids: Sequence[int]) -> list[ItemVector]:
        """The cached LLM-answered (or clustered) items stored under these label ids, by id:
        what a split regroups."""
        return [ItemVector(*r) for r in self._query(
            "SELECT id, label_id, raw_label, vector FROM items WHERE cached = 1 "
            f"AND source IN ('llm', 'cluster') AND label_id IN ({marks(len(label_ids))}) "
            "ORDER BY id",
            list(label_ids),
        )]  # fmt: skip

    def vectors(self) -> list[ItemVector]:
        """Every item with a vector: its own, or (an exact duplicate stored without one)
        its original's, so that it lands wherever the original does."""
        return [ItemVector(*r) for r in self._query(
            "SELECT i.id, i.label_id, i.raw_label, COALESCE(i.vector, m.vector) FROM items i "
            "LEFT JOIN items m ON m.id = i.matched_item "
            "WHERE COALESCE(i.vector, m.vector) IS NOT NULL"
        )]  # fmt: skip

    def raw_label_vectors(self) -> list[RawLabelVector]:
        """The vectors of the items labelled with a raw label: LLM answers (and clustered
        items) in the cache, and the cache hits that reused their raw label. Each under
        its answer's label: where it is stored, or, for an item the consensus moved (and
        a hit that followed it), the label its raw label names."""
        return [RawLabelVector(*r) for r in self._query(
            "SELECT i.raw_label, CASE WHEN c.item_id IS NULL THEN i.label_id ELSE a.label_id "
            "END, i.vector FROM items i "
            "LEFT JOIN corrections c ON c.kept = 0 AND c.label_id = i.label_id AND c.item_id = "
            "(CASE WHEN i.source = 'cache' THEN i.matched_item ELSE i.id END) "
            "LEFT JOIN aliases a ON a.raw_label = i.raw_label "
            "WHERE i.vector IS NOT NULL AND i.raw_label IS NOT NULL "
            "AND (i.source = 'cache' OR (i.cached = 1 AND i.source IN ('llm', 'cluster')))"
        )]  # fmt: skip
