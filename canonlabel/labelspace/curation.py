"""Curating the label space without re-labelling: merge, rename, split, undo.

Every operation is one transaction, logged in ``merges`` (kind ``merge`` | ``rename`` |
``split`` | ``consolidate``). Label ids are stable: a rename keeps the id (and pins the
name: consolidation never renames it), a merge points the old id at the new one
(``labels.merged_into``), so items follow their label at read time. A split moves items
(and the cache hits that matched them) to new labels. ``undo`` reverts the most recent
merge or consolidation exactly.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.errors import CurationError
from canonlabel.labelspace.space import LabelSpace
from canonlabel.store import Store, from_blobs


def _store(space: LabelSpace) -> Store:
    assert space.store is not None  # curation works on a loaded label space
    return space.store


def _root(space: LabelSpace, label_id: int) -> int:
    if label_id not in space.names:
        raise CurationError(
            f"label {label_id} does not exist; list labels with `canonlabel labels`"
        )
    if label_id in space.parent:
        raise CurationError(
            f"label {label_id} was merged into {space.resolve(label_id)}; use that id"
        )
    return label_id


def merge(space: LabelSpace, source: int, into: int, *, pin: bool = True) -> dict:
    """Merge label ``source`` into ``into``; returns the log entry. A merge by hand pins
    ``into``: consolidation keeps its raw labels together and never renames it."""
    source, into = _root(space, source), _root(space, into)
    if source == into:
        raise CurationError("cannot merge a label into itself")
    sim = float(space.representative(source) @ space.representative(into))
    detail = {"pinned_before": into in space.pinned}
    store = _store(space)
    with space.rewrite() as c:
        store.labels.merge(c, source, into)
        if pin:
            store.labels.pin(c, [into])
        store.log.add(c, "merge", from_label=source, into_label=into, similarity=sim, detail=detail)
    space.reload()
    return {"kind": "merge", "from": source, "into": into, "similarity": round(sim, 4)}


def undo(space: LabelSpace) -> dict:
    """Revert the most recent merge, consolidation or consensus correction that is not
    undone yet (undoing a correction keeps those items' LLM answers from then on). A
    consolidation of several passes is reverted whole, newest pass first."""
    store = _store(space)
    row = store.log.last_undoable()
    if row is None:
        raise CurationError("nothing to undo: no merge or consolidation is left")
    run = row.details().get("run")
    result = _undo_entry(space, row)
    if run is None:
        return result
    reverted = [result]
    while (row := store.log.last_undoable()) is not None and row.details().get("run") == run:
        reverted.append(_undo_entry(space, row))
    return {"kind": "undo", "consolidation": run, "entries": reverted}


def _undo_entry(space: LabelSpace, row) -> dict:
    store = _store(space)
    entry, source, into = row.id, row.from_label, row.into_label
    if row.kind == "consensus":
        from canonlabel.labelspace.consensus import revert as revert_consensus

        return revert_consensus(space, entry, row.details())
    if row.kind == "consolidate":
        from canonlabel.labelspace.consolidate import revert

        return revert(space, entry, row.details())
    assert source is not None  # a merge names the label it merged
    pinned_before = row.details().get("pinned_before", True)
    with space.rewrite() as c:
        store.labels.merge(c, source, None)
        store.labels.pin(c, [into], pinned_before)
        store.log.mark_undone(c, entry)
    space.reload()
    return {"kind": "undo", "merge": entry, "from": source, "into": into}


def rename(space: LabelSpace, label_id: int, name: str) -> dict:
    """Give a label a new name (id unchanged); the name becomes an alias and the
    representative used for canonicalisation."""
    label_id = _root(space, label_id)
    try:
        name = clean_label(name)
    except InvalidLabel as exc:
        raise CurationError(f"invalid name: {exc}") from None
    owner = space.aliases.get(name)
    if owner is not None and space.resolve(owner) != label_id:
        raise CurationError(
            f"{name!r} is already an alias of label "
            f"{space.resolve(owner)}; merge the labels instead"
        )
    if any(n == name for i, n in space.names.items() if i != label_id):
        raise CurationError(f"another label is named {name!r}")
    old = space.names[label_id]
    assert space.embedder is not None
    vector = space.embedder.embed([label_text(name)])[0]
    store = _store(space)
    with space.rewrite() as c:
        store.labels.rename(c, label_id, name, vector=vector, pin=True)
        if owner is None:
            store.aliases.insert(c, name, label_id, None, vector)
        store.log.add(
            c, "rename", raw_label=json.dumps([old, name]), from_label=label_id, into_label=label_id
        )
    space.reload()
    return {"kind": "rename", "id": label_id, "from": old, "to": name}


def split(
    space: LabelSpace,
    label_id: int,
    *,
    k: int | None = None,
    aliases: list[str] | None = None,
    items: list[int] | None = None,
    name: str | None = None,
) -> dict:
    """Split a label: move chosen ``aliases`` or ``items`` to a new label, or re-cluster
    its LLM-labelled members into ``k`` labels (k-means on their vectors)."""
    label_id = _root(space, label_id)
    members = _members(space, label_id)
    if not members:
        raise CurationError(f"label {label_id} has no members to split")
    if sum(x is not None for x in (k, aliases, items)) != 1:
        raise CurationError("give exactly one of k, aliases or items")
    groups: list[list[int]]
    if aliases is not None:
        known = {a for a, lid in space.aliases.items() if space.resolve(lid) == label_id}
        unknown = set(aliases) - known
        if unknown:
            raise CurationError(f"{sorted(unknown)} are not aliases of label {label_id}")
        groups = [[m["id"] for m in members if m["raw_label"] in set(aliases)]]
    elif items is not None:
        ids = {m["id"] for m in members}
        if set(items) - ids:
            raise CurationError(
                f"items {sorted(set(items) - ids)} are not LLM-labelled members of label {label_id}"
            )
        groups = [list(items)]
    else:
        groups = _kmeans_groups(space, members, k)
    moved_sets = [set(g) for g in groups if g]
    if not moved_sets or sum(map(len, moved_sets)) >= len(members):
        raise CurationError("a split must leave some members in the original label")
    created = _apply_split(space, label_id, members, moved_sets, name, aliases)
    space.reload()
    return {"kind": "split", "from": label_id, "created": created}


def _members(space: LabelSpace, label_id: int) -> list[dict]:
    ids = [i for i in space.names if space.resolve(i) == label_id]
    rows = _store(space).members.cached(ids)
    return [{"id": r.id, "raw_label": r.raw_label, "vector": r.vector} for r in rows]


def _kmeans_groups(space: LabelSpace, members: list[dict], k: int | None) -> list[list[int]]:
    from sklearn.cluster import KMeans

    if k is None or k < 2 or k > len(members):
        raise CurationError(f"k must be between 2 and the member count ({len(members)})")
    vectors = from_blobs([m["vector"] for m in members], space.dim)
    assigned = KMeans(n_clusters=k, n_init=4, random_state=0).fit(vectors).labels_
    keep = Counter(assigned.tolist()).most_common(1)[0][0]  # the largest keeps the id
    return [[m["id"] for m, a in zip(members, assigned) if a == c] for c in range(k) if c != keep]


def _apply_split(space, label_id, members, moved_sets, name, aliases) -> list[dict]:
    by_id = {m["id"]: m for m in members}
    created = []
    store = _store(space)
    with space.rewrite() as c:
        for n, moved in enumerate(moved_sets):
            raws = Counter(by_id[i]["raw_label"] for i in moved)
            base = name if (name and n == 0) else raws.most_common(1)[0][0]
            new_name = _free_name(store, c, base)
            vectors = from_blobs([by_id[i]["vector"] for i in moved], space.dim)
            rep = space.embedder.embed([label_text(new_name)])[0]
            new_id = store.labels.insert(c, new_name, rep)
            # split by hand: consolidation must not fold the pieces back together
            store.labels.pin(c, [new_id, label_id])
            store.items.relabel(c, list(moved), new_id)
            store.items.relabel_hits(c, list(moved), new_id)  # hits follow their item
            for raw in aliases or []:
                store.aliases.move(c, raw, new_id)
            if new_name not in space.aliases:
                store.aliases.insert(c, new_name, new_id, None, rep)
            centroid = vectors.mean(0)
            sim = float(centroid @ rep / max(np.linalg.norm(centroid), 1e-12))
            store.log.add(c, "split", from_label=label_id, into_label=new_id, similarity=sim)
            created.append({"id": new_id, "name": new_name, "items": len(moved)})
    return created


def _free_name(store: Store, conn, base: str) -> str:
    taken = store.labels.names(conn)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}"[:60], n + 1
    return name


def typical_centroids(
    space: LabelSpace, keep: float = 0.5
) -> dict[int, tuple[np.ndarray, int, float]]:
    """Per root label: centroid of its most typical members (the ``keep`` share closest to
    the plain centroid), member count, and spread (1 - mean cosine to the centroid)."""
    assert space.store is not None
    ids, vectors, labels = space.store.items.cached(space.dim)
    out = {}
    roots = np.array([space.resolve(int(x)) for x in labels], dtype=np.int64)
    for root in np.unique(roots):
        members = vectors[roots == root]
        plain = members.mean(0)
        plain /= max(float(np.linalg.norm(plain)), 1e-12)
        sims = members @ plain
        top = members[np.argsort(-sims)[: max(1, int(np.ceil(len(members) * keep)))]]
        typical = top.mean(0)
        typical /= max(float(np.linalg.norm(typical)), 1e-12)
        out[int(root)] = (typical, len(members), float(1 - (members @ typical).mean()))
    return out


def maintain(
    space: LabelSpace,
    *,
    merge_similarity: float = 0.9,
    wide_spread: float = 0.45,
    dry_run: bool = False,
) -> dict:
    """Merge labels whose typical centroids became too similar (smaller into larger,
    logged and undoable) and report labels that grew too wide to split by hand."""
    stats = typical_centroids(space)
    roots = sorted(stats, key=lambda r: (-stats[r][1], r))
    merges: list[dict] = []
    if len(roots) > 1:
        mat = np.stack([stats[r][0] for r in roots])
        sims = mat @ mat.T
        gone: set[int] = set()
        for a in range(len(roots)):
            for b in range(a + 1, len(roots)):
                if roots[b] in gone or roots[a] in gone or sims[a, b] < merge_similarity:
                    continue
                entry = {
                    "from": roots[b],
                    "into": roots[a],
                    "similarity": round(float(sims[a, b]), 4),
                }
                if not dry_run:
                    merge(space, roots[b], roots[a], pin=False)
                merges.append(entry)
                gone.add(roots[b])
    wide = [
        {"id": r, "name": space.names[r], "count": stats[r][1], "spread": round(stats[r][2], 4)}
        for r in roots
        if stats[r][1] >= 5 and stats[r][2] >= wide_spread
    ]
    return {"merged": merges, "wide": wide, "dry_run": dry_run}
