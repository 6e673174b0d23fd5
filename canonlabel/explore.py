"""What the exploration page shows: a 2-D map of the items, labels, members and curves.

The map is a projection of the item embeddings, computed once and cached in the store
(``projection`` table); new items are placed with the stored transform (PCA) or at the
weighted mean of their nearest placed items (UMAP), so a reload only projects what is new.
``pca`` (default: instant, linear, deterministic) or ``umap`` (``umap-learn``, seed 42:
better separated clusters, about a minute per 10,000 items here).
Items answered without a vector of their own (exact and cache hits) sit next to the item
they matched.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any

import numpy as np

from canonlabel.store import from_blobs

MAX_FIT = 20_000  # items a projection is fitted on; the rest are transformed


def _fit(vectors: np.ndarray, method: str) -> dict:
    if method == "umap":
        import umap

        model = umap.UMAP(
            n_components=2, random_state=42, n_neighbors=15, min_dist=0.1, n_jobs=1
        )  # a seed makes UMAP single-threaded anyway
        model.fit(vectors[:MAX_FIT])
        return {"method": "umap", "model": model, "fitted_on": vectors[:MAX_FIT]}
    mean = vectors[:MAX_FIT].mean(axis=0)
    _, _, vt = np.linalg.svd(vectors[:MAX_FIT] - mean, full_matrices=False)
    components = vt[:2]
    for row in components:  # a deterministic sign: SVD's is arbitrary
        if row[np.abs(row).argmax()] < 0:
            row *= -1
    return {"method": "pca", "mean": mean.tolist(), "components": components.tolist()}


def _transform(fitted: dict, vectors: np.ndarray) -> np.ndarray:
    if fitted["method"] == "umap":
        fit_xy = fitted["model"].embedding_
        n = len(fit_xy)
        return np.vstack([fit_xy, _near_positions(vectors[n:], fitted["fitted_on"], fit_xy)])
    return (vectors - np.array(fitted["mean"])) @ np.array(fitted["components"]).T


def project(store, dim: int, method: str = "pca") -> int:
    """Place every item with a vector that has no position yet; returns how many."""
    meta = store.meta().get("projection")
    fitted = json.loads(json.loads(meta)) if meta else None
    if fitted is not None and fitted["method"] != method:
        store.projection.clear()
        fitted = None
    rows = store.projection.unplaced()
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    vectors = from_blobs([r[1] for r in rows], dim)
    # UMAP models are not stored (no pickle): new items join the map by their neighbours
    xy = _place_near(store, dim, vectors) if fitted and fitted["method"] == "umap" else None
    if xy is None:
        if fitted is None or fitted["method"] == "umap":
            fitted = _fit(vectors, method)
        xy = _transform(fitted, vectors)
    assert fitted is not None  # set above, or _place_near ran because it was
    kept = fitted if fitted["method"] == "pca" else {"method": "umap"}
    with store.write() as c:
        store.projection.save(c, [(i, float(x), float(y)) for i, (x, y) in zip(ids, xy)])
        store.set_meta({"projection": json.dumps(kept)}, c)
    return len(ids)


def _place_near(store, dim: int, vectors: np.ndarray, k: int = 10) -> np.ndarray | None:
    """Positions for new items on an existing map: the similarity-weighted mean position of
    their ``k`` nearest placed items (how UMAP itself starts placing new points)."""
    rows = store.projection.placed()
    if not rows:
        return None
    placed = from_blobs([r.vector for r in rows], dim)
    return _near_positions(vectors, placed, np.array([(r.x, r.y) for r in rows]), k)


def _near_positions(vectors, placed, where, k: int = 10) -> np.ndarray:
    k = min(k, len(placed))
    where = np.asarray(where, dtype=np.float64)
    out = np.zeros((len(vectors), 2))
    for start in range(0, len(vectors), 512):  # bounded memory: 512 × placed similarities
        sims = vectors[start : start + 512] @ placed.T
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sims, near, axis=1), 0.0) ** 4 + 1e-9
        out[start : start + 512] = np.einsum("nk,nkd->nd", w / w.sum(1, keepdims=True), where[near])
    return out


def points(clf) -> dict:
    """Every item on the map: coordinates, label index, source; labels with centres."""
    space, store = clf.space, clf.store
    placed = store.projection.positions()
    ids, xs, ys, label_of, sources = [], [], [], [], []
    for item in store.items.summaries():
        at = placed.get(item.id) or placed.get(item.matched_item)
        if at is None:
            continue
        # a hit sits on its matched item, nudged so that both stay visible
        nudge = (zlib.crc32(str(item.id).encode()) % 200) / 100 - 1
        jitter = 0.0 if item.id in placed else 0.004 * nudge
        ids.append(item.id)
        xs.append(at[0] + jitter)
        ys.append(at[1] - jitter)
        label_of.append(space.resolve(item.label_id))
        sources.append(item.source)
    roots = [r for r, _ in Counter(label_of).most_common()]
    index = {r: k for k, r in enumerate(roots)}
    x, y, lab = np.array(xs), np.array(ys), np.array([index[r] for r in label_of], dtype=np.int64)
    moved: Counter[int] = Counter()
    for label_id, n in store.corrections.counts().items():
        moved[space.resolve(label_id)] += n
    labels = []
    for r in roots:
        members = lab == index[r]
        labels.append(
            {
                "id": r,
                "name": space.names[r],
                "count": int(members.sum()),
                "moved": moved[r],  # members the consensus moved here
                "x": round(float(np.median(x[members])), 5),
                "y": round(float(np.median(y[members])), 5),
                "category": clf.categories.get(r),
            }
        )
    spread = _spreads(clf)
    for entry in labels:
        entry["spread"] = spread.get(entry["id"])
    kinds = ["llm", "cache", "exact", "model", "cluster"]
    return {
        "ids": ids,
        "x": [round(v, 5) for v in x.tolist()],
        "y": [round(v, 5) for v in y.tolist()],
        "label": lab.tolist(),
        "source": [kinds.index(s) if s in kinds else 0 for s in sources],
        "sources": kinds,
        "labels": labels,
    }


def _spreads(clf) -> dict[int, float]:
    """Per label: mean cosine distance of its cached members to their centroid (wide
    labels, above about 0.45 with MiniLM, are worth a look: see ``maintain``)."""
    keys, vectors = clf.cache.snapshot()
    if not len(keys):
        return {}
    space = clf.space
    roots = np.array([space.resolve(space.item_label[int(k)]) for k in keys])
    out = {}
    for root in np.unique(roots):
        members = vectors[roots == root]
        centre = members.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        out[int(root)] = round(float(1.0 - (members @ centre).mean()), 4)
    return out


def item_detail(clf, item_id: int) -> dict | None:
    item = clf.store.items.get(item_id)
    if item is None:
        return None
    keys = ("id", "ext_id", "text", "label_id", "raw_label", "source", "similarity")
    out = {k: getattr(item, k) for k in keys}
    out["label_id"] = clf.space.resolve(out["label_id"])
    out["label"] = clf.space.names[out["label_id"]]
    return out


def members(clf, label_id: int, limit: int = 200) -> list[dict]:
    """Items whose current label is ``label_id`` (newest first)."""
    space = clf.space
    family = [i for i in space.names if space.resolve(i) == label_id]
    if not family:
        return []
    keys = ("id", "ext_id", "text", "raw_label", "source", "similarity")
    fixes = clf.store.corrections.all()
    out = []
    for item in clf.store.members.newest(family, limit):
        row = {k: getattr(item, k) for k in keys}
        fix = fixes.get(row["id"])
        if fix is not None and not fix.kept:  # the LLM said otherwise; the evidence moved it
            row["moved_from"] = space.name(fix.answer_label)
            row["support"] = fix.support
        out.append(row)
    return out


def search_labels(clf, query: str, mode: str, k: int = 20) -> list[int]:
    """Label ids matching ``query``: by name (FTS5/BM25) or by meaning (the embedder)."""
    space = clf.space
    if mode == "text":
        vector = clf.embedder.embed([query])[0]
        roots = space.roots()
        if not roots:
            return []
        centroids = space.centroids(roots)
        order = np.argsort(-(centroids @ vector))[:k]
        return [roots[i] for i in order]
    seen: list[int] = []
    for label_id in clf.store.labels.search(query, k):
        root = space.resolve(label_id)
        if root not in seen:
            seen.append(root)
    return seen[:k]


CURVE_POINTS = 50  # windows per curve


def curves(clf, window: int | None = None) -> dict:
    """Per window of ``window`` items in arrival order (by default the store split into
    about ``CURVE_POINTS`` windows, so a small store has a curve too): hit rate, LLM calls
    per 1,000 items, the router's share, and the labels created by the window's end; with
    the router's current estimated error."""
    rows = [(r.source, r.created_at) for r in clf.store.items.summaries()]
    window = window or max(1, -(-len(rows) // CURVE_POINTS))
    created = clf.store.labels.created_times()
    out: dict[str, Any] = {
        "window": window,
        "end": [],
        "hit_rate": [],
        "llm_per_1000": [],
        "router_share": [],
        "labels": [],
    }
    for start in range(0, len(rows), window):
        chunk = rows[start : start + window]
        llm = sum(s == "llm" for s, _ in chunk)
        out["end"].append(start + len(chunk))
        out["hit_rate"].append(round(1 - llm / len(chunk), 4))
        out["llm_per_1000"].append(round(1000 * llm / len(chunk), 1))
        out["router_share"].append(round(sum(s == "model" for s, _ in chunk) / len(chunk), 4))
        out["labels"].append(int(np.searchsorted(created, chunk[-1][1], side="right")))
    out["router"] = clf.router.summary() if getattr(clf, "router", None) is not None else None
    return out
