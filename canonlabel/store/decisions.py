"""What was decided about items and label pairs after the first answer: consensus
corrections, the LLM's second answers (rechecks) and its pair adjudications."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from canonlabel.store.items import Items
from canonlabel.store.log import MergeLog
from canonlabel.store.sql import Connection, Repository, Tx, chunks, marks


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


class Corrections(Repository):
    """Consensus corrections (``kept``: a person undid the move, so the item keeps the
    LLM's answer from then on) and the rechecks that settled contested items."""

    def __init__(self, db: Connection, log: MergeLog) -> None:
        super().__init__(db)
        self._log = log

    def all(self) -> dict[int, Correction]:
        """Every consensus correction, by item id."""
        rows = self._query("SELECT item_id, answer_label, label_id, support, kept FROM corrections")
        return {int(r[0]): Correction(int(r[0]), int(r[1]), int(r[2]), float(r[3]), bool(r[4]))
                for r in rows}  # fmt: skip

    def counts(self) -> dict[int, int]:
        """Members each label gained from consensus corrections (kept ones excluded)."""
        return dict(self._query(
            "SELECT label_id, count(*) FROM corrections WHERE kept = 0 GROUP BY label_id"
        ))  # fmt: skip

    def write(
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
            _relabel(c, fix.item_id, fix.label_id, fix.answer_label)
        for fix in moved:
            c.execute("DELETE FROM corrections WHERE item_id = ?", (fix.item_id,))
            c.execute(
                "INSERT INTO corrections (item_id, answer_label, label_id, support, kept, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (fix.item_id, fix.answer_label, fix.label_id, fix.support, int(fix.kept), now),
            )
            if not fix.kept:
                _relabel(c, fix.item_id, fix.answer_label, fix.label_id)
        if not log:
            return
        detail = {
            "moved": [[m.item_id, m.answer_label, m.label_id, m.support] for m in moved],
            "restored": [[r.item_id, r.answer_label, r.label_id, r.support] for r in restored],
        }
        self._log.add(c, "consensus", detail=detail, at=now)

    def rechecks(self) -> dict[int, Recheck]:
        """The LLM's second answers about contested items, by item id."""
        rows = self._query("SELECT item_id, label_id, chose FROM rechecks")
        return {int(r[0]): Recheck(int(r[0]), int(r[1]), bool(r[2])) for r in rows}

    def save_rechecks(self, found: Sequence[Recheck]) -> None:
        with self._db.write() as c:
            for r in found:
                c.execute("DELETE FROM rechecks WHERE item_id = ?", (r.item_id,))
                c.execute(
                    "INSERT INTO rechecks (item_id, label_id, chose, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (r.item_id, r.label_id, int(r.chose), time.time()),
                )


def _relabel(c: Tx, item: int, was: int, now: int) -> None:
    """Move an item, and the hits that followed it, from ``was`` to ``now``."""
    Items.relabel(c, [item], now)
    Items.relabel_hits(c, [item], now, was=was)


class Adjudications(Repository):
    """The LLM's answers to "same kind of message?" about two groups, by pair key."""

    def get(self, pairs: Sequence[str] | None = None) -> dict[str, bool]:
        """Stored answers for these pair keys (all of them when ``pairs`` is None)."""
        if pairs is None:
            return {k: bool(v) for k, v in self._query("SELECT pair, same FROM adjudications")}
        found: dict[str, bool] = {}
        for chunk in chunks(pairs):
            rows = self._query(
                f"SELECT pair, same FROM adjudications WHERE pair IN ({marks(len(chunk))})",
                chunk,
            )
            found.update((k, bool(v)) for k, v in rows)
        return found

    def save(self, answers: dict[str, bool]) -> None:
        """Store answers (a new answer about a pair replaces the old one)."""
        if not answers:
            return
        with self._db.write() as c:
            for key, same in answers.items():
                c.execute(
                    "INSERT INTO adjudications VALUES (?, ?, ?) ON CONFLICT (pair) DO UPDATE "
                    "SET same = excluded.same, created_at = excluded.created_at",
                    (key, int(same), time.time()),
                )
