"""Cluster-then-name: batch, order-invariant labelling.

Embed everything, cluster (HDBSCAN, k-means or agglomerative), pick representative texts
per cluster (closest to the centroid plus the most different member), ask the LLM once per
cluster for a name, and collapse near-duplicate names with the streaming pipeline's
canonicalisation. Items are sorted by their normalised text before clustering and seeds
are fixed, so a shuffled input gives identical clusters and names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.embed import Embedder
from canonlabel.errors import ConfigError
from canonlabel.labelspace import LabelSpace
from canonlabel.llm import Labeler
from canonlabel.normalize import normalize, text_key
from canonlabel.types import LabelRequest

if TYPE_CHECKING:
    from rich.console import Console

    from canonlabel.config import Settings
    from canonlabel.io import JobIO, Record

UNCLUSTERED = "unclustered"


@dataclass
class ClusterInfo:
    id: int
    label: str
    raw_label: str
    size: int
    representatives: list[str]
    description: str


@dataclass
class ClusterResult:
    labels: list[str]  # per input item, input order
    clusters: list[int]  # cluster id per item (-1: unclustered)
    distances: list[float]  # 1 - cosine to the cluster centroid
    info: list[ClusterInfo] = field(default_factory=list)
    noise_assigned: int = 0
    unclustered: int = 0
    llm_calls: int = 0
    vectors: np.ndarray | None = None
    texts: list[str] = field(default_factory=list)


def assign_clusters(
    vectors: np.ndarray, method: str, k: int | None, min_cluster_size: int, seed: int = 0
) -> np.ndarray:
    if method == "kmeans":
        from sklearn.cluster import KMeans

        if not k:
            raise ConfigError("kmeans needs --k")
        return (
            KMeans(n_clusters=min(k, len(vectors)), n_init=4, random_state=seed)
            .fit(vectors)
            .labels_
        )
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        if k:
            model = AgglomerativeClustering(
                n_clusters=min(k, len(vectors)), metric="cosine", linkage="average"
            )
        else:
            model = AgglomerativeClustering(
                n_clusters=None, distance_threshold=0.5, metric="cosine", linkage="average"
            )
        return model.fit(vectors).labels_
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        if vectors.shape[1] > 50 and len(vectors) > 50:
            # Density estimates in 384-d are slow and noisy; 50 principal components keep
            # the structure (BERTopic reduces with UMAP for the same reason).
            from sklearn.decomposition import PCA

            vectors = PCA(n_components=50, random_state=seed).fit_transform(vectors)
        return HDBSCAN(min_cluster_size=max(2, min_cluster_size), copy=True).fit(vectors).labels_
    raise ConfigError(f"unknown method {method!r}; use hdbscan, kmeans or agglomerative")


def representatives(vectors: np.ndarray, members: np.ndarray, n: int) -> list[int]:
    """``n - 1`` members closest to the centroid, plus the member farthest from them."""
    centroid = vectors[members].mean(0)
    order = members[np.argsort(-(vectors[members] @ centroid), kind="stable")]
    picked = list(order[: max(1, n - 1)])
    rest = [m for m in order if m not in set(picked)]
    if rest and n > 1:
        sims = vectors[rest] @ vectors[picked].T
        picked.append(rest[int(np.argmin(sims.max(1)))])
    return [int(i) for i in picked]


def cluster_texts(
    texts: list[str],
    embedder: Embedder,
    labeler: Labeler,
    *,
    method: str = "hdbscan",
    k: int | None = None,
    min_cluster_size: int = 5,
    samples: int = 5,
    noise_similarity: float = 0.6,
    label_similarity: float = 0.75,
    max_chars: int = 2000,
    space: LabelSpace | None = None,
    seed: int = 0,
) -> ClusterResult:
    """Cluster and name ``texts`` (already validated strings); see the module docstring."""
    norm = [normalize(t, max_chars)[0] for t in texts]
    order = sorted(range(len(norm)), key=lambda i: (text_key(norm[i]), norm[i]))
    sorted_texts = [norm[i] for i in order]
    vectors = embedder.embed(sorted_texts)
    assigned = np.asarray(assign_clusters(vectors, method, k, min_cluster_size, seed))
    ids = sorted(set(assigned.tolist()) - {-1})
    centroids = {c: _unit(vectors[assigned == c].mean(0)) for c in ids}
    result = ClusterResult([""] * len(norm), [-1] * len(norm), [1.0] * len(norm))
    result.noise_assigned = _assign_noise(assigned, vectors, centroids, noise_similarity)
    space = space or LabelSpace(embedder.dim)
    names: dict[int, str] = {}
    for c in sorted(ids, key=lambda c: (-int((assigned == c).sum()), c)):
        members = np.flatnonzero(assigned == c)
        reps = [sorted_texts[i] for i in representatives(vectors, members, samples)]
        info = _name_cluster(c, len(members), reps, embedder, labeler, space, label_similarity)
        result.llm_calls += 1
        names[c] = info.label
        result.info.append(info)
    for pos, i in enumerate(order):
        c = int(assigned[pos])
        result.clusters[i] = c
        result.labels[i] = names.get(c, UNCLUSTERED)
        if c >= 0:
            result.distances[i] = round(float(1 - vectors[pos] @ centroids[c]), 4)
    result.unclustered = sum(c == -1 for c in result.clusters)
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.arange(len(order))
    result.vectors, result.texts = vectors[inverse], norm
    return result


def _assign_noise(
    assigned: np.ndarray, vectors: np.ndarray, centroids: dict, noise_similarity: float
) -> int:
    """Move noise (-1) in ``assigned`` to its nearest cluster if close enough; returns how
    many moved."""
    if not centroids:
        return 0
    ids = list(centroids)
    cmat = np.stack([centroids[c] for c in ids])
    moved = 0
    for j in np.flatnonzero(assigned == -1):
        sims = cmat @ vectors[j]
        if sims.max() >= noise_similarity:
            assigned[j] = ids[int(sims.argmax())]
            moved += 1
    return moved


def _name_cluster(
    c: int,
    size: int,
    rep_texts: list[str],
    embedder: Embedder,
    labeler: Labeler,
    space: LabelSpace,
    label_similarity: float,
) -> ClusterInfo:
    """Ask the LLM to name cluster ``c`` from its representatives; a name close enough to
    a label of ``space`` becomes that label (canonicalised as the streaming pipeline does)."""
    raw = _name(labeler, rep_texts)
    vec = embedder.embed([label_text(raw)])[0]
    decision = space.decide(raw, vec, label_similarity)
    if decision.label_id is None:
        label_id = max(space.names, default=0) + 1
        space.add_label(label_id, raw, vec)
        space.add_alias(raw, label_id)
        label = raw
    else:
        label = space.names[decision.label_id]
        space.add_alias(raw, decision.label_id)
    return ClusterInfo(int(c), label, raw, size, rep_texts, f"Texts like: {rep_texts[0]}")


def _name(labeler: Labeler, rep_texts: list[str]) -> str:
    text = " | ".join(rep_texts)
    for feedback in (None, "Answer with one snake_case label for what these messages share."):
        try:
            return clean_label(labeler.label(LabelRequest(text, (), feedback)).output)
        except InvalidLabel:
            continue
    return "cluster_" + text_key(text)[:8]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def save_to_store(clf, result: ClusterResult, ids: list[str | None]) -> dict[str, int]:
    """Write clusters into a Classifier's store so streaming ``classify`` continues from
    them: cluster names become labels (joining existing ones when similar enough) and
    clustered items join the semantic cache. Returns name -> label id."""
    store = clf.store
    label_ids: dict[str, int] = {}
    decided = []
    with store.write() as c:
        for info in result.info:
            if info.label in label_ids:
                continue
            vec = clf.embedder.embed([label_text(info.label)])[0]
            label_id, decision = clf.space.write_raw_label(
                c, info.label, vec, clf.settings.label_similarity
            )
            decided.append((label_id, decision, vec))
            label_ids[info.label] = label_id
        assert result.vectors is not None  # cluster_texts() sets it
        rows = []
        for i, label in enumerate(result.labels):
            if label == UNCLUSTERED:
                continue
            text = result.texts[i]
            rows.append(
                {
                    "ext_id": ids[i],
                    "text": text,
                    "text_key": text_key(text),
                    "label_id": label_ids[label],
                    "raw_label": label,
                    "source": "cluster",
                    "similarity": 1 - result.distances[i],
                    "vector": result.vectors[i],
                    "cached": True,
                }
            )
        item_ids = store.items.insert(c, rows)
    for label_id, decision, vec in decided:
        clf.space.commit_raw_label(label_id, decision, vec)
    if rows:
        vectors = np.stack([r["vector"] for r in rows])
        label_arr = np.array([r["label_id"] for r in rows])
        clf.cache.add(np.array(item_ids), vectors)
        clf.space.add_members(item_ids, label_arr, vectors)
    return label_ids


@dataclass(frozen=True)
class ClusterOptions:
    """How the ``cluster`` command groups and names texts (see :func:`cluster_texts`)."""

    method: str = "hdbscan"  # hdbscan | kmeans | agglomerative
    k: int | None = None  # clusters (kmeans, agglomerative)
    min_cluster_size: int = 5  # hdbscan
    samples: int = 5  # representative texts shown per cluster
    noise_similarity: float = 0.6  # noise joins its nearest cluster at this similarity


class _Usable(NamedTuple):
    records: list[Record]  # with a usable text
    failed: list[dict]  # output rows of the others, with their error


def run_cluster(
    files: JobIO,
    settings: Settings,
    options: ClusterOptions,
    *,
    save: bool = False,
    console: Console | None = None,
) -> dict:
    """The ``cluster`` job: cluster and name the input texts, write one row per record
    (unreadable ones last, with their error) and, with ``save``, write the clusters into
    the store ``settings.db`` for streaming ``classify``; returns the summary."""
    from rich.console import Console

    from canonlabel.embed import make_embedder
    from canonlabel.llm import make_labeler

    console = console or Console(stderr=True)
    good, bad = _usable(files, settings.max_chars)
    emb = make_embedder(settings.embedder, settings)
    labeler = make_labeler(settings.llm, settings)
    with console.status(f"clustering {len(good)} texts..."):
        result = cluster_texts(
            [cast(str, r.text) for r in good],  # usable_text() checked each
            emb,
            labeler,
            method=options.method,
            k=options.k,
            min_cluster_size=options.min_cluster_size,
            samples=options.samples,
            noise_similarity=options.noise_similarity,
            label_similarity=settings.label_similarity,
            max_chars=settings.max_chars,
        )
    if save:
        from canonlabel.pipeline import Classifier

        with Classifier.open(settings=settings, embedder=emb, labeler=labeler) as clf:
            save_to_store(clf, result, [r.id for r in good])
    with files.writer() as sink:
        for r, label, c, d in zip(good, result.labels, result.clusters, result.distances):
            sink.write({"id": r.id, "text": r.text, "label": label, "cluster": c, "distance": d})
        sink.write_many(bad)
    return {
        "items": len(good) + len(bad),
        "failed": len(bad),
        "clusters": len(result.info),
        "labels": len({i.label for i in result.info}),
        "llm_calls": result.llm_calls,
        "noise_assigned": result.noise_assigned,
        "unclustered": result.unclustered,
    }


def _usable(files: JobIO, max_chars: int) -> _Usable:
    """The input's records split by whether their text is usable (an error when none is)."""
    from canonlabel.errors import CanonlabelError
    from canonlabel.io import usable_text

    usable = _Usable([], [])
    for r in files.records():
        try:
            usable_text(r, max_chars)
            usable.records.append(r)
        except CanonlabelError as exc:
            usable.failed.append(
                {"id": r.id or f"line:{r.line}", "text": r.text, "error": str(exc)}
            )
    if not usable.records:
        raise CanonlabelError(f"{files.input} has no usable texts")
    return usable
