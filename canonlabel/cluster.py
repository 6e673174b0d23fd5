"""Cluster-then-name: batch, order-invariant labelling.

Embed everything, cluster (HDBSCAN, k-means or agglomerative), pick representative texts
per cluster (closest to the centroid plus the most different member), ask the LLM once per
cluster for a name, and collapse near-duplicate names with the streaming pipeline's
canonicalisation. Items are sorted by their normalised text before clustering and seeds
are fixed, so a shuffled input gives identical clusters and names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.embed import Embedder
from canonlabel.errors import ConfigError
from canonlabel.labelspace import LabelSpace
from canonlabel.llm import Labeler
from canonlabel.normalize import normalize, text_key
from canonlabel.types import LabelRequest

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
    if ids:
        cmat = np.stack([centroids[c] for c in ids])
        for j in np.flatnonzero(assigned == -1):  # noise: nearest cluster if close enough
            sims = cmat @ vectors[j]
            if sims.max() >= noise_similarity:
                assigned[j] = ids[int(sims.argmax())]
                result.noise_assigned += 1
    space = space or LabelSpace(embedder.dim)
    names: dict[int, str] = {}
    next_id = max(space.names, default=0) + 1
    for c in sorted(ids, key=lambda c: (-int((assigned == c).sum()), c)):
        members = np.flatnonzero(assigned == c)
        reps = representatives(vectors, members, samples)
        rep_texts = [sorted_texts[i] for i in reps]
        raw = _name(labeler, rep_texts)
        result.llm_calls += 1
        vec = embedder.embed([label_text(raw)])[0]
        decision = space.decide(raw, vec, label_similarity)
        if decision.label_id is None:
            space.add_label(next_id, raw, vec)
            space.add_alias(raw, next_id)
            next_id += 1
            label = raw
        else:
            label = space.names[decision.label_id]
            space.add_alias(raw, decision.label_id)
        names[c] = label
        result.info.append(
            ClusterInfo(int(c), label, raw, len(members), rep_texts, f"Texts like: {rep_texts[0]}")
        )
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
