"""The merge log (``merges``): every change to the label space, and how to undo it.

Kinds: ``alias`` (a raw label joined a label), ``merge``, ``rename``, ``split`` (curation),
``consolidate``, ``consensus`` and ``emptied``. ``detail`` is JSON: what an undo needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import NamedTuple

from canonlabel.store.sql import Repository, Tx, marks

UNDOABLE = ("merge", "consolidate", "consensus")


class LogEntry(NamedTuple):
    """An undoable entry: its id, labels and kind, and its detail (JSON or None)."""

    id: int
    from_label: int | None
    into_label: int
    kind: str
    detail: str | None

    def details(self) -> dict:
        """The detail, parsed (empty when there is none)."""
        return json.loads(self.detail or "{}")


class HistoryEntry(NamedTuple):
    kind: str
    raw_label: str | None
    from_label: int | None
    into_label: int
    similarity: float | None
    undone: int
    created_at: float


class MergeLog(Repository):
    """Entries of the merge log: written with the change they record, read by ``undo``."""

    @staticmethod
    def add(
        c: Tx,
        kind: str,
        *,
        into_label: int = 0,
        from_label: int | None = None,
        raw_label: str | None = None,
        similarity: float | None = None,
        detail: dict | None = None,
        at: float | None = None,
    ) -> int:
        """Log a change (in its transaction); returns the entry id."""
        return int(c.execute(
            "INSERT INTO merges (kind, raw_label, from_label, into_label, similarity, "
            "created_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                kind,
                raw_label,
                from_label,
                into_label,
                similarity,
                time.time() if at is None else at,
                None if detail is None else json.dumps(detail),
            ),
        ).fetchone()[0])  # fmt: skip

    @staticmethod
    def mark_undone(c: Tx, entry: int) -> None:
        c.execute("UPDATE merges SET undone = 1 WHERE id = ?", (entry,))

    def last_id(self) -> int:
        """The newest entry's id (0 for an empty log)."""
        rows = self._query("SELECT max(id) FROM merges")
        return int(rows[0][0] or 0) if rows else 0

    def group(self, c: Tx, after: int) -> list[int]:
        """Mark the consolidation and consensus entries after entry ``after`` as one
        change (``run`` in their detail: the first one's id), so one undo reverts them all;
        returns their ids."""
        rows = c.execute(
            "SELECT id, detail FROM merges "
            "WHERE id > ? AND kind IN ('consolidate', 'consensus') ORDER BY id",
            (after,),
        ).fetchall()
        if len(rows) < 2:
            return [int(r[0]) for r in rows]
        run = int(rows[0][0])
        for entry, detail in rows:
            marked = json.loads(detail or "{}") | {"run": run}
            c.execute("UPDATE merges SET detail = ? WHERE id = ?", (json.dumps(marked), entry))
        return [int(r[0]) for r in rows]

    def last_undoable(self) -> LogEntry | None:
        """The newest merge, consolidation or consensus entry not undone yet."""
        rows = self._query(
            "SELECT id, from_label, into_label, kind, detail FROM merges "
            f"WHERE kind IN ({marks(len(UNDOABLE))}) AND undone = 0 ORDER BY id DESC LIMIT 1",
            UNDOABLE,
        )
        return LogEntry(*rows[0]) if rows else None

    def emptied(self) -> set[int]:
        """Labels the consensus left without items and merged away (kind ``emptied``)."""
        rows = self._query("SELECT from_label FROM merges WHERE kind = 'emptied' AND undone = 0")
        return {int(r[0]) for r in rows}

    def emptied_after(self, entry: int) -> list[tuple[int, int]]:
        """(entry id, label) of the ``emptied`` merges after entry ``entry`` not undone,
        newest first: those a consensus entry's corrections caused, when it is the newest
        entry left to undo."""
        rows = self._query(
            "SELECT id, from_label FROM merges WHERE kind = 'emptied' AND undone = 0 "
            "AND id > ? ORDER BY id DESC",
            (entry,),
        )
        return [(int(i), int(label)) for i, label in rows]

    def history(self, label_ids: Sequence[int]) -> list[HistoryEntry]:
        """Entries from or into these label ids, oldest first."""
        return [HistoryEntry(*r) for r in self._query(
            f"SELECT kind, raw_label, from_label, into_label, similarity, undone, created_at "
            f"FROM merges WHERE into_label IN ({marks(len(label_ids))}) "
            f"OR from_label IN ({marks(len(label_ids))}) ORDER BY id",
            [*label_ids, *label_ids],
        )]  # fmt: skip

    def live_count(self) -> int:
        """Entries not undone."""
        return self._count("SELECT count(*) FROM merges WHERE undone = 0")
