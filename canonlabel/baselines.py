"""Reference strategies to compare canonlabel against.

:class:`SeedClassifier` follows the Go original (FrenchMajesty/consistent-classifier)
faithfully: top-1 content cache, raw label returned on a miss, top-1 label neighbour
union-find with no representative check, no candidates. In memory only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.embed import Embedder
from canonlabel.index import ExactIndex
from canonlabel.llm import Labeler
from canonlabel.normalize import normalize
from canonlabel.types import LabelRequest


@dataclass(frozen=True)
class SeedResult:
    label: str | None
    source: str  # cache | llm | failed
    similarity: float | None = None
    matched: int | None = None  # position of the matched earlier item


class SeedClassifier:
    """The Go original's rules (content threshold 0.80, label threshold 0.80 by default)."""

    def __init__(
        self,
        embedder: Embedder,
        labeler: Labeler,
        *,
        min_similarity: float = 0.8,
        label_similarity: float = 0.8,
        max_chars: int = 2000,
    ) -> None:
        self.embedder, self.labeler = embedder, labeler
        self.min_similarity, self.label_similarity = min_similarity, label_similarity
        self.max_chars = max_chars
        self.content = ExactIndex(embedder.dim)
        self.labels = ExactIndex(embedder.dim)
        self._content_label: list[str] = []
        self._content_pos: list[int] = []
        self._label_names: list[str] = []
        self._label_ids: dict[str, int] = {}
        self.parent: dict[str, str] = {}
        self.llm_calls = 0
        self._seen = 0

    def find(self, label: str) -> str:
        root = label
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while label != root:  # path compression
            self.parent[label], label = root, self.parent[label]
        return root

    def classify(self, text: str, vector: np.ndarray | None = None) -> SeedResult:
        pos, self._seen = self._seen, self._seen + 1
        text, _ = normalize(text, self.max_chars)
        if vector is None:
            vector = self.embedder.embed_one(text)
        sims, keys = self.content.search(vector[None, :], 1)
        if keys[0, 0] >= 0 and sims[0, 0] >= self.min_similarity:
            row = int(keys[0, 0])
            return SeedResult(
                self.find(self._content_label[row]),
                "cache",
                float(sims[0, 0]),
                self._content_pos[row],
            )
        self.llm_calls += 1
        try:
            raw = clean_label(self.labeler.label(LabelRequest(text)).output)
        except InvalidLabel:
            return SeedResult(None, "failed")
        if raw not in self._label_ids:
            label_vec = self.embedder.embed_one(label_text(raw))
            lsims, lkeys = self.labels.search(label_vec[None, :], 1)
            self._label_ids[raw] = len(self._label_names)
            self._label_names.append(raw)
            self.parent.setdefault(raw, raw)
            if lkeys[0, 0] >= 0 and lsims[0, 0] >= self.label_similarity:
                other = self.find(self._label_names[int(lkeys[0, 0])])
                if other != self.find(raw):
                    self.parent[self.find(raw)] = other
            self.labels.add(np.array([self._label_ids[raw]]), label_vec[None, :])
        self.content.add(np.array([len(self._content_label)]), vector[None, :])
        self._content_label.append(raw)
        self._content_pos.append(pos)
        return SeedResult(raw, "llm")  # the Go original returns the raw label on a miss

    def canonical(self, label: str | None) -> str | None:
        """The label an item would get if asked again now (its DSU root)."""
        return None if label is None else self.find(label)

    @property
    def raw_label_count(self) -> int:
        return len(self._label_names)

    @property
    def label_count(self) -> int:
        return len({self.find(x) for x in self._label_names})
