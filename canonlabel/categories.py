"""Fixed categories matched by embeddings, and a category layer over open-set labels.

A category has a name, a description and optional examples. Its vectors are the
embedding of "name: description" and the centroid of its examples; a text scores the
larger of the two cosine similarities. Below ``min_similarity`` the answer is ``other``.
Definitions live in the store (table ``categories``) with a hash of their content, so
editing one category re-embeds only that one. Mapping canonical labels to categories
(table ``label_categories``) changes no item: labels are the stable middle layer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.embed import Embedder
from canonlabel.errors import ConfigError
from canonlabel.store import Store, from_blobs, open_store, to_blob
from canonlabel.types import LabelRequest

if TYPE_CHECKING:
    from canonlabel.config import Settings

OTHER = "other"


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    examples: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        payload = json.dumps([self.name, self.description, list(self.examples)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_categories(path: Path) -> list[Category]:
    """Read ``categories.yaml`` (a list, or ``{categories: [...]}``) of name/description/examples."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read categories file {path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("categories")
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"{path} must hold a non-empty list of categories "
            "(name, description, optional examples)"
        )
    out, seen = [], set()
    for n, entry in enumerate(data, 1):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{path}: category {n} needs a name")
        try:
            name = clean_label(str(entry["name"]))
        except InvalidLabel as exc:
            raise ConfigError(f"{path}: category {n} name: {exc}") from None
        if name in seen or name == OTHER:
            raise ConfigError(f"{path}: category name {name!r} is repeated or reserved")
        seen.add(name)
        examples = entry.get("examples") or []
        if not isinstance(examples, list):
            raise ConfigError(f"{path}: examples of {name!r} must be a list")
        out.append(
            Category(
                name,
                str(entry.get("description") or label_text(name)),
                tuple(str(e) for e in examples),
            )
        )
    return out


class CategoryIndex:
    """Category vectors (description and examples centroid) for cosine matching."""

    def __init__(
        self, names: list[str], desc: np.ndarray, examples: np.ndarray, has_examples: np.ndarray
    ) -> None:
        self.names, self.desc, self.examples, self.has_examples = (
            names,
            desc,
            examples,
            has_examples,
        )

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(n, categories) similarity: max of description and examples similarity."""
        s = vectors @ self.desc.T
        if self.has_examples.any():
            ex = vectors @ self.examples.T
            s = np.where(self.has_examples[None, :], np.maximum(s, ex), s)
        return s


def define(
    store: Store, embedder: Embedder, categories: list[Category], *, prune: bool = True
) -> dict[str, int]:
    """Store category definitions, embedding only new or changed ones."""
    current = store.categories.hashes()
    changed = [c for c in categories if current.get(c.name) != c.hash]
    desc = embedder.embed([f"{label_text(c.name)}: {c.description}" for c in changed])
    with store.write() as conn:
        for c, vec in zip(changed, desc):
            ex = embedder.embed(list(c.examples)).mean(0) if c.examples else None
            store.categories.save(
                conn,
                c.name,
                c.description,
                c.examples,
                c.hash,
                to_blob(vec),
                None if ex is None else to_blob(_unit(ex)),
            )
        removed = set(current) - {c.name for c in categories} if prune else set()
        for name in removed:
            store.categories.delete(conn, name)
    return {
        "embedded": len(changed),
        "unchanged": len(categories) - len(changed),
        "removed": len(removed),
    }


def load_index(store: Store, dim: int) -> CategoryIndex:
    rows = store.categories.vectors()
    if not rows:
        raise ConfigError("no categories defined; run `canonlabel categories define FILE`")
    desc = from_blobs([r.vector for r in rows], dim)
    has = np.array([r.examples_vector is not None for r in rows])
    ex = np.stack(
        [
            np.frombuffer(r.examples_vector, dtype=np.float32)
            if r.examples_vector is not None
            else np.zeros(dim, dtype=np.float32)
            for r in rows
        ]
    )
    return CategoryIndex([r.name for r in rows], desc, ex, has)


@dataclass(frozen=True)
class Assignment:
    categories: tuple[str, ...]  # best first; ("other",) below the threshold
    scores: tuple[float, ...]
    source: str  # embedding | llm


def assign(
    index: CategoryIndex,
    vectors: np.ndarray,
    texts: list[str],
    *,
    min_similarity: float,
    top_k: int = 1,
    multi_threshold: float | None = None,
    labeler=None,
    margin: float = 0.0,
) -> list[Assignment]:
    """Match texts to categories; optional LLM tie-break when the top two are within
    ``margin``, constrained to those categories."""
    scores = index.scores(vectors)
    out = []
    for text, row in zip(texts, scores):
        order = np.argsort(-row, kind="stable")
        best = float(row[order[0]])
        if best < min_similarity:
            out.append(Assignment((OTHER,), (round(best, 4),), "embedding"))
            continue
        threshold = multi_threshold if multi_threshold is not None else min_similarity
        picked = [int(order[0])] + [int(j) for j in order[1:top_k] if row[j] >= threshold]
        source = "embedding"
        if labeler is not None and len(order) > 1 and best - row[order[1]] <= margin:
            close = tuple(index.names[int(j)] for j in order[:3] if best - row[j] <= margin)
            answer = labeler.label(LabelRequest(text, close, closed=True)).output.strip()
            if answer in close:  # an answer outside the set is never accepted
                picked = [index.names.index(answer)] + [
                    j for j in picked if index.names[j] != answer
                ]
                source = "llm"
        out.append(
            Assignment(
                tuple(index.names[j] for j in picked),
                tuple(round(float(row[j]), 4) for j in picked),
                source,
            )
        )
    return out


def map_labels(clf, *, labeler=None, margin: float = 0.02) -> dict:
    """Assign every canonical label to its nearest category (name + member centroid);
    re-mapping touches only ``label_categories``, never items."""
    index = load_index(clf.store, clf.dim)
    roots = clf.space.roots()
    if not roots:
        return {"labels": 0}
    names = [clf.space.names[r] for r in roots]
    vecs = clf.embedder.embed([label_text(n) for n in names])
    centroids = clf.space.centroids(roots)
    vecs = np.stack([_unit(v + c) if np.any(c) else v for v, c in zip(vecs, centroids)])
    assignments = assign(
        index,
        vecs,
        [label_text(n) for n in names],
        min_similarity=-1.0,
        labeler=labeler,
        margin=margin if labeler else -1.0,
    )
    with clf.store.write() as conn:
        rows = [(r, a.categories[0], a.scores[0], a.source) for r, a in zip(roots, assignments)]
        clf.store.categories.map_labels(conn, rows)
    clf.categories = {root: a.categories[0] for root, a in zip(roots, assignments)}
    counts: dict[str, int] = {}
    for a in assignments:
        counts[a.categories[0]] = counts.get(a.categories[0], 0) + 1
    return {"labels": len(roots), "by_category": counts}


def label_categories(store: Store) -> dict[int, str]:
    return store.categories.of_labels()


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


class CategoryStore(NamedTuple):
    """A store holding the writer lock, with category definitions stored in it."""

    store: Store
    embedder: Embedder
    defined: dict  # what ``categories.define`` did: embedded, unchanged, removed


def open_categories(settings: Settings, file: Path) -> CategoryStore:
    """Open ``settings.db`` for writing and store the categories of ``file`` in it (only
    changed ones are re-embedded); the caller closes the store."""
    from canonlabel.embed import make_embedder

    embedder = make_embedder(settings.embedder, settings)
    store = open_store(settings.db)
    try:
        store.lock_writer(settings.lock_wait)
        store.bind_embedder(embedder.id, embedder.dim)
        defined = define(store, embedder, load_categories(file))
    except BaseException:
        store.close()
        raise
    return CategoryStore(store, embedder, defined)
