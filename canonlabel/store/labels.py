"""Labels and aliases: canonical labels (name, representative, merge pointer, pin), the
raw labels that map to them, and the full-text index over both and member texts."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from canonlabel.store.log import MergeLog
from canonlabel.store.sql import Connection, Repository, Tx, from_blobs, marks, to_blob


class LabelRow(NamedTuple):
    id: int
    name: str
    vector: bytes  # the representative, float32
    merged_into: int | None


class AliasRow(NamedTuple):
    raw_label: str
    label_id: int
    seq: int  # write order


class Labels(Repository, ABC):
    """Canonical labels. Full-text search is the backend's (:meth:`search`)."""

    def __init__(self, db: Connection, log: MergeLog) -> None:
        super().__init__(db)
        self._log = log

    @abstractmethod
    def search(self, text: str, k: int) -> list[int]:
        """Label ids ranked by relevance of their names, aliases and member texts."""

    def rows(self, after: int = 0) -> list[LabelRow]:
        return [
            LabelRow(r[0], r[1], bytes(r[2]), r[3])
            for r in self._query(
                "SELECT id, name, vector, merged_into FROM labels WHERE id > ? ORDER BY id",
                (after,),
            )
        ]

    def pinned(self) -> set[int]:
        return {r[0] for r in self._query("SELECT id FROM labels WHERE pinned = 1")}

    def created_times(self) -> list[float]:
        """When each label was made, in order."""
        return sorted(t for (t,) in self._query("SELECT created_at FROM labels"))

    # -- reads inside a write transaction ---------------------------------------------
    @staticmethod
    def named(c: Tx, name: str) -> int | None:
        """The id of the label called ``name`` (as stored: it may be merged)."""
        row = c.execute("SELECT id FROM labels WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def names(c: Tx) -> set[str]:
        return {r[0] for r in c.execute("SELECT name FROM labels")}

    @staticmethod
    def holders(c: Tx, names: Sequence[str]) -> list[tuple[int, str]]:
        """``(id, name)`` of the labels that hold these names."""
        return c.execute(
            f"SELECT id, name FROM labels WHERE name IN ({marks(len(names))})", list(names)
        ).fetchall()

    # -- writes -----------------------------------------------------------------------
    def insert(self, c: Tx, name: str, vector: np.ndarray) -> int:
        label_id = int(
            c.execute(
                "INSERT INTO labels (name, vector, created_at) VALUES (?, ?, ?) RETURNING id",
                (name, to_blob(vector), time.time()),
            ).fetchone()[0]
        )
        self.index_text(c, name.replace("_", " "), label_id)
        return label_id

    @staticmethod
    def index_text(c: Tx, content: str, label_id: int) -> None:
        """Make ``label_id`` findable by the words of ``content``."""
        c.execute("INSERT INTO label_fts (content, label_id) VALUES (?, ?)", (content, label_id))

    @staticmethod
    def rename(
        c: Tx, label_id: int, name: str, *, vector: np.ndarray | None = None, pin: bool = False
    ) -> None:
        """A new name (and representative, pinned, when a person renames it)."""
        sets: list[str] = ["name = ?"]
        params: list[object] = [name]
        if vector is not None:
            sets.append("vector = ?")
            params.append(to_blob(vector))
        if pin:
            sets.append("pinned = 1")
        c.execute(f"UPDATE labels SET {', '.join(sets)} WHERE id = ?", [*params, label_id])

    @staticmethod
    def set_vector(c: Tx, label_id: int, vector: np.ndarray) -> None:
        """Replace a label's representative."""
        c.execute("UPDATE labels SET vector = ? WHERE id = ?", (to_blob(vector), label_id))

    @staticmethod
    def pin(c: Tx, label_ids: Sequence[int], pinned: bool = True) -> None:
        """Pin labels (named, merged or split by hand: consolidation keeps them)."""
        c.execute(
            f"UPDATE labels SET pinned = ? WHERE id IN ({marks(len(label_ids))})",
            [int(pinned), *label_ids],
        )

    @staticmethod
    def merge(c: Tx, label_id: int, into: int | None) -> None:
        """Point ``label_id`` at ``into`` (None: it stands alone again)."""
        c.execute("UPDATE labels SET merged_into = ? WHERE id = ?", (into, label_id))

    def merge_emptied(self, c: Tx, merges: Sequence[tuple[int, int, float]]) -> None:
        """Merge labels left without items (``(label, into, similarity)``), logged as
        kind ``emptied``."""
        now = time.time()
        for label, into, sim in merges:
            self.merge(c, label, into)
            self._log.add(c, "emptied", from_label=label, into_label=into, similarity=sim, at=now)

    @staticmethod
    def delete_unused(c: Tx, label_id: int) -> bool:
        """Delete a label nothing refers to (items, aliases, merged labels); True if it was."""
        used = c.execute(
            "SELECT (SELECT count(*) FROM items WHERE label_id = ?) + "
            "(SELECT count(*) FROM aliases WHERE label_id = ?) + "
            "(SELECT count(*) FROM labels WHERE merged_into = ?)",
            (label_id, label_id, label_id),
        ).fetchone()[0]
        if used:
            return False
        c.execute("DELETE FROM label_fts WHERE label_id = ?", (label_id,))
        c.execute("DELETE FROM labels WHERE id = ?", (label_id,))
        return True


class Aliases(Repository):
    """Raw labels and the label each maps to, in the order they were written."""

    #: the column that numbers aliases in write order
    _SEQ = "seq"

    def __init__(self, db: Connection, labels: Labels, log: MergeLog) -> None:
        super().__init__(db)
        self._labels, self._log = labels, log

    def rows(self, after: int = 0) -> list[AliasRow]:
        """``(raw_label, label_id, seq)`` in the order the aliases were written."""
        return [AliasRow(*r) for r in self._query(
            f"SELECT raw_label, label_id, {self._SEQ} FROM aliases WHERE {self._SEQ} > ? "
            f"ORDER BY {self._SEQ}",
            (after,),
        )]  # fmt: skip

    def vectors(self, dim: int) -> dict[str, np.ndarray]:
        """Stored embeddings of raw labels (older stores lack some)."""
        rows = self._query("SELECT raw_label, vector FROM aliases WHERE vector IS NOT NULL")
        return dict(zip([r[0] for r in rows], from_blobs([bytes(r[1]) for r in rows], dim)))

    def insert(
        self,
        c: Tx,
        raw_label: str,
        label_id: int,
        similarity: float | None,
        vector: np.ndarray | None = None,
    ) -> None:
        """Map ``raw_label`` to ``label_id``; one that joined an existing label (with its
        ``similarity``) is logged and indexed for full-text search."""
        now = time.time()
        c.execute(
            "INSERT INTO aliases (raw_label, label_id, similarity, created_at, vector) "
            "VALUES (?, ?, ?, ?, ?)",
            (raw_label, label_id, similarity, now, None if vector is None else to_blob(vector)),
        )
        if similarity is not None:
            self._log.add(
                c, "alias", raw_label=raw_label, into_label=label_id, similarity=similarity, at=now
            )
            self._labels.index_text(c, raw_label.replace("_", " "), label_id)

    @staticmethod
    def move(c: Tx, raw_label: str, label_id: int) -> None:
        """Point ``raw_label`` at ``label_id``."""
        c.execute("UPDATE aliases SET label_id = ? WHERE raw_label = ?", (label_id, raw_label))

    @staticmethod
    def set_vector(c: Tx, raw_label: str, vector: np.ndarray) -> None:
        """Store a raw label's embedding."""
        c.execute("UPDATE aliases SET vector = ? WHERE raw_label = ?", (to_blob(vector), raw_label))
