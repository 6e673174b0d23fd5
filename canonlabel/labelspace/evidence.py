"""The evidence consolidation judges raw labels by, and the similarity it builds from it.

Three kinds, each independent of arrival order:

* **core names** — an LLM pads its labels with words that say nothing about the text
  (``_issue``, ``_request``, ``customer_``, ``question_about_``) and reorders the rest.
  Which words those are is *learned from the store*, not listed: a word is informative
  when the texts of the raw labels that use it lie close together (a high mean resultant
  length of their embeddings), and filler when they are spread like the whole store. A raw
  label's core name keeps its informative words; its embedding is the name evidence.
* **members** — the centroid of the texts labelled with each raw label, by the LLM or by a
  semantic-cache hit that reused it (what the label is *used for*, not what it is called).
  Hits count because which of two near-duplicate texts was asked and which reused the
  answer depends on arrival order; counting both makes a raw label's centroid the same
  whichever came first.
* **shared neighbours** — two raw labels whose nearest raw labels are the same ones belong
  together even when their own similarity falls short (a fragment of an intent sits among
  the other fragments of it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from canonlabel.canon import label_text
from canonlabel.store import from_blobs

if TYPE_CHECKING:
    from canonlabel.labelspace.space import LabelSpace

WORD_FLOOR = 0.15  # informativeness below which a word is dropped from the core name
WORD_PRIOR = 3.0  # pseudo-members that pull a rarely used word towards the store's spread
NEIGHBOURS = 3  # raw labels compared for shared neighbours
NEIGHBOUR_WEIGHT = 0.2  # share of the similarity that shared neighbours decide
ROW_BLOCK = 1024  # rows of a similarity matrix computed at once on large inputs


@dataclass
class Evidence:
    """One row per raw label that has members following its alias, sorted by name."""

    raw_labels: list[str]
    current: np.ndarray  # root label id each raw label belongs to now
    name_vectors: np.ndarray  # unit embeddings of the raw names (representatives)
    member_sums: np.ndarray  # sum of member text vectors
    members: np.ndarray  # items labelled with each raw label (LLM answers and cache hits)
    uses: np.ndarray  # all items per raw label (members and the hits that reused them)
    new_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # to store
    answers: dict[str, int] = field(default_factory=dict)  # LLM answers per raw label, all
    cores: list[str] = field(default_factory=list)  # informative words of each raw label
    core: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # their embeddings


def gather(space: LabelSpace) -> Evidence:
    """Read the evidence: each raw label's name embedding, the vectors of the items
    labelled with it (LLM answers and the cache hits that reused them) that still follow
    its alias (items moved by hand are left alone; an item the consensus moved counts
    under its answer), and its core name's embedding. A raw label whose label the
    consensus emptied and merged away names the label it was merged into: it is not
    regrouped (regrouping it by its answers would undo the consensus, and the consensus
    would undo the regrouping at the next pass)."""
    store = space.store
    assert store is not None  # consolidation works on a loaded label space
    rows = store.members.raw_label_vectors()
    folded = {label for label in store.log.emptied() if label in space.parent}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    rows = sorted(  # by raw label and vector: sums never depend on arrival order
        (
            r
            for r in rows
            if (o := space.aliases.get(r.raw_label)) is not None
            and o not in folded
            and space.resolve(r.label_id) == space.resolve(o)
        ),
        key=lambda r: (r.raw_label, bytes(r.vector)),
    )
    vectors = from_blobs([r.vector for r in rows], space.dim)
    for (raw, _, _), vector in zip(rows, vectors, strict=False):
        sums[raw] = sums[raw] + vector if raw in sums else vector.copy()
        counts[raw] += 1
    raws = sorted(sums)
    uses = store.members.raw_label_uses()
    known = store.aliases.vectors(space.dim)
    missing = [r for r in raws if r not in known]
    new: dict[str, np.ndarray] = {}
    if missing:
        assert space.embedder is not None
        new = dict(zip(missing, space.embedder.embed([label_text(r) for r in missing])))
    dim = space.dim
    ev = Evidence(
        raws,
        np.array([space.resolve(space.aliases[r]) for r in raws], dtype=np.int64),
        # every raw label is known or was just embedded (missing)
        np.stack([cast(np.ndarray, known.get(r, new.get(r))) for r in raws])
        if raws
        else np.zeros((0, dim)),
        np.stack([sums[r] for r in raws]) if raws else np.zeros((0, dim)),
        np.array([counts[r] for r in raws], dtype=np.float64),
        np.array([max(uses.get(r, 0), counts[r]) for r in raws], dtype=np.float64),
        new,
        uses,
    )
    ev.cores = core_names(raws, word_weights(raws, ev.member_sums, ev.members))
    ev.core = space.phrase_vectors(ev.cores) if raws else np.zeros((0, dim))
    return ev


def word_weights(
    raw_labels: list[str], member_sums: np.ndarray, members: np.ndarray, prior: float = WORD_PRIOR
) -> dict[str, float]:
    """Informativeness in [0, 1] of every word of the raw labels: how much more tightly the
    texts of the raw labels using it cluster than the store's texts do (0: as spread as
    everything, a filler word; 1: all its texts point one way)."""
    total = float(members.sum())
    if total == 0:
        return {}
    spread = float(np.linalg.norm(member_sums.sum(0))) / total  # mean resultant length
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, float] = defaultdict(float)
    for raw, vec, n in zip(raw_labels, member_sums, members, strict=False):
        for word in set(raw.split("_")):
            sums[word] = sums[word] + vec if word in sums else vec.copy()
            counts[word] += n
    weights = {}
    for word, vec in sums.items():
        n = counts[word]
        tight = (float(np.linalg.norm(vec)) + prior * spread) / (n + prior)
        weights[word] = max(0.0, (tight - spread) / max(1.0 - spread, 1e-9))
    return weights


def core_names(raw_labels: list[str], weights: dict[str, float], floor: float = WORD_FLOOR):
    """Each raw label's informative words, in its order (all of them if none is)."""
    out = []
    for raw in raw_labels:
        words = raw.split("_")
        kept = [w for w in words if weights.get(w, 1.0) >= floor]
        out.append(" ".join(kept or words))
    return out


def pooled(vectors: np.ndarray, groups: list) -> np.ndarray:
    """One unit vector per group: the normalised sum of its rows of ``vectors``."""
    sums = np.stack([vectors[g].sum(0) for g in groups])
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def similarity(
    names: np.ndarray,
    content: np.ndarray,
    name_weight: float,
    neighbours: int = NEIGHBOURS,
    neighbour_weight: float = NEIGHBOUR_WEIGHT,
) -> np.ndarray:
    """Combined similarity of units (raw labels or blocks of them): names and members,
    blended with the share of nearest neighbours they have in common."""
    sim = name_weight * (names @ names.T) + (1 - name_weight) * (content @ content.T)
    sim = (sim + sim.T) / 2
    n = len(sim)
    if n <= neighbours + 1 or neighbour_weight == 0:
        return sim
    ranked = sim.copy()
    np.fill_diagonal(ranked, -np.inf)
    # stable argsort on a name-sorted input: ties never depend on arrival order
    hood = shared_neighbours(np.argsort(-ranked, axis=1, kind="stable")[:, :neighbours])
    shared = (hood @ hood.T).toarray() / (neighbours + 1)  # sparse: O(n · k²) products
    return (1 - neighbour_weight) * sim + neighbour_weight * shared


def base_similarity(names: np.ndarray, content: np.ndarray, name_weight: float, rows, cols):
    """Names and members blended, for ``rows`` against ``cols`` (index arrays)."""
    return name_weight * (names[rows] @ names[cols].T) + (1 - name_weight) * (
        content[rows] @ content[cols].T
    )


def neighbourhood(
    names: np.ndarray,
    content: np.ndarray,
    name_weight: float,
    k: int,
    floor: float = np.inf,
    block: int | None = None,
):
    """Each unit's ``k`` nearest other units (by similarity, ties by index, as a stable
    sort gives) with their similarities, and every pair ``i < j`` whose similarity
    reaches ``floor``; computed ``block`` rows at a time, so memory is O(n · block),
    never the n × n matrix."""
    n, block = len(names), block or ROW_BLOCK
    every, k = np.arange(n), min(k, n - 1)
    nearest = np.zeros((n, k), dtype=np.int64)
    values = np.zeros((n, k))
    pairs: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(0, n, block):
        rows = every[start : start + block]
        sim = base_similarity(names, content, name_weight, rows, every)
        sim[np.arange(len(rows)), rows] = -np.inf
        if k:
            kth = np.partition(sim, -k, axis=1)[:, -k]
            for i, row in enumerate(sim):  # the k largest, ties broken by index
                cand = np.flatnonzero(row >= kth[i])
                top = cand[np.lexsort((cand, -row[cand]))][:k]
                nearest[rows[i]], values[rows[i]] = top, row[top]
        if np.isfinite(floor):
            r, c = np.nonzero(sim >= floor)
            keep = c > rows[r]
            pairs.append(np.stack([rows[r][keep], c[keep]], axis=1))
    return nearest, values, np.concatenate(pairs)


def shared_neighbours(nearest: np.ndarray):
    """Sparse n × n rows: each unit with its nearest units (``hood @ hood.T`` counts the
    neighbours two units share)."""
    from scipy import sparse

    n, k = nearest.shape
    rows = np.repeat(np.arange(n), k + 1)
    cols = np.concatenate([np.arange(n)[:, None], nearest], axis=1).ravel()
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
