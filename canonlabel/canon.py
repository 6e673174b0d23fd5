"""Canonicalisation: raw labels from the LLM collapse into canonical labels.

A raw label already seen maps through its alias. A new raw label is embedded and
joins the nearest canonical label whose *representative* (the embedding of the
label's own name, fixed at creation) is at least ``label_similarity`` similar; else
it founds a new label. Comparing with the representative, not with every member,
is what stops union-find chains (A~B, B~C => A~C) from drifting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from canonlabel.index import ExactIndex
from canonlabel.store import SqliteStore, from_blobs

LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,59}$")
_REFUSAL = re.compile(
    r"\b(sorry|apologi[sz]e|i can ?not|i can't|i cannot|as an ai|unable to|i won't|"
    r"not able to)\b"
)
_WRAP = "`'\"*[](){}<>.,;: "


class InvalidLabel(ValueError):
    """The LLM output is not a usable label; the message is fed back on re-ask."""


def clean_label(output: str) -> str:
    """Light cleanup of an LLM answer into a snake_case label, or :class:`InvalidLabel`.

    Accepts ``"Card Arrival"``, ```` `card-arrival` ````, ``Label: card_arrival``;
    rejects refusals, sentences and empty output.
    """
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("```")]
    if not lines:
        raise InvalidLabel("the answer was empty")
    text = lines[0]
    if _REFUSAL.search(text.lower()):
        raise InvalidLabel("the answer was a refusal, not a label")
    text = re.sub(r"^(label|answer|category)\s*[:=-]\s*", "", text.strip(_WRAP), flags=re.I)
    text = text.strip(_WRAP).lower()
    words = re.split(r"[\s\-./_]+", text)
    if len([w for w in words if w]) > 8:
        raise InvalidLabel("the answer was a sentence, not a short label")
    text = re.sub(r"[^a-z0-9_]", "", "_".join(words))
    text = re.sub(r"_+", "_", text).strip("_")
    if not LABEL_PATTERN.match(text):
        raise InvalidLabel(
            f"{output.strip()[:80]!r} is not a snake_case label "
            "(2-60 characters, a-z, 0-9 and _, starting with a letter)"
        )
    return text


def label_text(label: str) -> str:
    """What gets embedded for a label name: words, not underscores."""
    return label.replace("_", " ")


@dataclass(frozen=True)
class Decision:
    """Where a raw label goes: an existing label (``label_id``) or a new one (``None``)."""

    raw_label: str
    label_id: int | None
    similarity: float | None
    known: bool = False  # the raw label was already an alias


class LabelSpace:
    """In-memory view of canonical labels: names, aliases, merge parents, centroids.

    Rebuilt from the store on open; updated only after the store committed.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.names: dict[int, str] = {}
        self.parent: dict[int, int] = {}
        self.aliases: dict[str, int] = {}
        self._reps = ExactIndex(dim)
        self._rep_rows: dict[int, np.ndarray] = {}
        self._centroid_rows: dict[int, int] = {}
        self._centroid_sums = np.zeros((0, dim), dtype=np.float32)
        self._centroid_ids: list[int] = []

    @classmethod
    def load(cls, store: SqliteStore, dim: int) -> LabelSpace:
        space = cls(dim)
        rows = store.label_rows()
        vectors = from_blobs([r[2] for r in rows], dim)
        for (label_id, name, _, merged_into), vector in zip(rows, vectors, strict=False):
            space.names[label_id] = name
            space._rep_rows[label_id] = vector
            if merged_into is not None:
                space.parent[label_id] = merged_into
        space._rebuild_reps()
        space.aliases = dict(store.alias_rows())
        return space

    # -- reads ------------------------------------------------------------------------
    def resolve(self, label_id: int) -> int:
        """Follow merges to the label an id belongs to now."""
        seen = 0
        while label_id in self.parent:
            label_id = self.parent[label_id]
            seen += 1
            if seen > len(self.parent):
                raise RuntimeError("cycle in label merges")
        return label_id

    def name(self, label_id: int) -> str:
        return self.names[self.resolve(label_id)]

    def roots(self) -> list[int]:
        return [i for i in self.names if i not in self.parent]

    def __len__(self) -> int:
        return len(self.names) - len(self.parent)

    def decide(self, raw_label: str, vector: np.ndarray | None, threshold: float) -> Decision:
        """Where ``raw_label`` belongs. ``vector`` is needed only for unknown raw labels."""
        if raw_label in self.aliases:
            return Decision(raw_label, self.resolve(self.aliases[raw_label]), None, known=True)
        if vector is None:
            raise ValueError("an unknown raw label needs its embedding")
        sims, keys = self._reps.search(vector[None, :], 1)
        if keys[0, 0] >= 0 and sims[0, 0] >= threshold:
            return Decision(raw_label, int(keys[0, 0]), float(sims[0, 0]))
        return Decision(raw_label, None, None if keys[0, 0] < 0 else float(sims[0, 0]))

    def nearest_by_centroid(
        self, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[int]:
        """Root labels whose member centroid is closest to ``vector`` (at least
        ``min_similarity`` cosine)."""
        if k <= 0 or not self._centroid_ids:
            return []
        sums = self._centroid_sums[: len(self._centroid_ids)]
        norms = np.linalg.norm(sums, axis=1)
        scores = (sums @ vector) / np.maximum(norms, 1e-12)
        order = np.argsort(-scores)
        picked: list[int] = []
        for row in order:
            if scores[row] < min_similarity:
                break
            root = self.resolve(self._centroid_ids[row])
            if norms[row] > 0 and root not in picked:
                picked.append(root)
                if len(picked) == k:
                    break
        return picked

    def centroids(self, label_ids: list[int]) -> np.ndarray:
        """Normalised member centroid per label (zeros for a label without members)."""
        out = np.zeros((len(label_ids), self.dim), dtype=np.float32)
        for n, label_id in enumerate(label_ids):
            row = self._centroid_rows.get(self.resolve(label_id))
            if row is not None:
                v = self._centroid_sums[row]
                out[n] = v / max(float(np.linalg.norm(v)), 1e-12)
        return out

    # -- updates after a commit ----------------------------------------------------------
    def add_label(self, label_id: int, name: str, vector: np.ndarray) -> None:
        self.names[label_id] = name
        self._rep_rows[label_id] = vector
        self._reps.add(np.array([label_id]), vector[None, :])

    def add_alias(self, raw_label: str, label_id: int) -> None:
        self.aliases[raw_label] = label_id

    def add_members(self, label_ids: np.ndarray, vectors: np.ndarray) -> None:
        for label_id, vector in zip(label_ids, vectors, strict=False):
            root = self.resolve(int(label_id))
            row = self._centroid_rows.get(root)
            if row is None:
                row = self._centroid_rows[root] = len(self._centroid_ids)
                self._centroid_ids.append(root)
                if row >= len(self._centroid_sums):
                    grown = np.zeros(
                        (max(64, 2 * len(self._centroid_sums)), self.dim), dtype=np.float32
                    )
                    grown[:row] = self._centroid_sums[:row]
                    self._centroid_sums = grown
            self._centroid_sums[row] += vector

    def _rebuild_reps(self) -> None:
        self._reps = ExactIndex(self.dim)
        roots = self.roots()
        if roots:
            self._reps.add(np.array(roots), np.stack([self._rep_rows[r] for r in roots]))
