"""Consolidation: an order-invariant pass that regroups every raw label.

The streaming path decides greedily, one raw label at a time, in arrival order. This pass
looks at all raw labels at once and regroups them from the evidence of
:mod:`~canonlabel.labelspace.evidence`: core names (the informative words, learned from
the store), member centroids and shared nearest neighbours.

Raw labels are sorted by name and clustered with average linkage on that similarity, cut
at ``threshold`` (no random state, so the result depends only on the set of raw labels and
their members). Beyond :data:`DENSE_UNITS` raw labels the n × n matrix is never built:
the same groups come from clustering each connected component of the pairs that could
reach the cut on its own, found in row blocks. The cut is high on purpose: below it, name
and member evidence cannot tell synonyms from close but distinct intents, so borderline pairs of groups are put to the LLM
(:mod:`~canonlabel.labelspace.adjudicate`) and joined where it says they are the same. Hand curation is respected: the raw labels of a pinned label (renamed,
merged or split by hand) form one block that is never broken up, two pinned blocks never
end up in one group, and a pinned label keeps its name.

Groups are matched to existing label ids by member overlap, so ids stay stable; an old
label that lost all its raw labels points (``merged_into``) at the label that took most of
its items. A group's name is its most typical raw label (the usage-weighted medoid of the
core names, the least padded variant on a tie), and its representative becomes the
usage-weighted mean of its raw labels' name embeddings. Everything is one transaction, logged as a ``consolidate`` entry that
:func:`revert` (``canonlabel undo``) reverses exactly.
"""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canonlabel.labelspace.adjudicate import CONFIRM_ABOVE, PAIRS_PER_CALL, Adjudication
from canonlabel.labelspace.evidence import (
    NEIGHBOUR_WEIGHT,
    NEIGHBOURS,
    Evidence,
    base_similarity,
    gather,
    neighbourhood,
    pooled,
    shared_neighbours,
    similarity,
)
from canonlabel.labelspace.space import LabelSpace
from canonlabel.store.labels import Labels
from canonlabel.types import Grouping

# The generic grouping (one definition: canonlabel.types.Grouping). THRESHOLD is grouped
# without asking; below it, down to a floor, the LLM adjudicates.
NAME_WEIGHT, THRESHOLD = Grouping().name_weight, Grouping().threshold
DENSE_UNITS = 4000  # units clustered on one dense matrix (4,000² float64: 128 MB)

__all__ = ["Evidence", "consolidate", "gather", "group", "plan", "revert"]


@dataclass
class Plan:
    """What a consolidation changes; empty lists mean the label space is already stable."""

    groups: list[list[str]]
    targets: list[int | None]  # label id per group (None: a new label)
    names: list[str]
    moves: list[tuple[str, int, int]] = field(default_factory=list)  # raw, from, group
    merges: list[tuple[int, int]] = field(default_factory=list)  # old label id, group
    renames: list[tuple[int, str, str]] = field(default_factory=list)  # id, old, new

    @property
    def changes(self) -> int:
        return len(self.moves) + len(self.merges) + len(self.renames)


def group(
    ev: Evidence,
    pinned: set[int],
    *,
    name_weight: float = NAME_WEIGHT,
    threshold: float = THRESHOLD,
    dense_units: int = DENSE_UNITS,
) -> np.ndarray:
    """Group index per raw label (order-invariant: depends only on the sorted evidence).
    Up to ``dense_units`` units are clustered on one dense matrix; beyond, per connected
    component of the pairs that could reach the cut (the same groups, in O(n · block)
    memory)."""
    blocks, block_of = _blocks(ev, pinned)
    n = len(blocks)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(len(ev.raw_labels), dtype=np.int64)
    names, content = pooled(ev.core, blocks), pooled(ev.member_sums, blocks)
    if n <= dense_units:
        sim = similarity(names, content, name_weight)
        assigned, sim_of = _cut(sim, threshold), lambda m, a: sim[m, a]
    else:
        assigned, sim_of = _cut_components(names, content, name_weight, threshold)
    return _separate_pinned(assigned, blocks, ev, pinned, sim_of)[block_of]


def _cut(sim: np.ndarray, threshold: float) -> np.ndarray:
    """Average linkage on a dense similarity matrix, cut at ``threshold``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if len(sim) == 1:
        return np.zeros(1, dtype=np.int64)
    dist = np.clip(1.0 - sim, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method="average")
    return fcluster(tree, t=1.0 - threshold, criterion="distance") - 1


def _cut_components(names, content, name_weight: float, threshold: float):
    """The same grouping as the dense path without the n × n matrix (many raw labels).

    Average linkage joins two groups only when some pair across them reaches the cut, and
    a pair's combined similarity reaches it only if its name-and-member part reaches
    ``(cut - w) / (1 - w)`` (the shared-neighbour part, weight w, is at most 1). So every
    group lies inside one connected component of the graph of such pairs, which is found
    in row blocks; each component is then clustered densely on its own."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n, w, k = len(names), NEIGHBOUR_WEIGHT, NEIGHBOURS
    floor = (threshold - w) / (1 - w)
    if floor < 0.5:  # a low cut joins nearly everything: one component, so dense it is
        sim = similarity(names, content, name_weight)
        return _cut(sim, threshold), lambda m, a: sim[m, a]
    nearest, _, pairs = neighbourhood(names, content, name_weight, k, floor)
    hood = shared_neighbours(nearest)
    graph = csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)

    def sim_of(rows, cols) -> np.ndarray:
        rows, cols = np.atleast_1d(rows), np.atleast_1d(cols)
        shared = (hood[rows] @ hood[cols].T).toarray() / (k + 1)
        return (1 - w) * base_similarity(names, content, name_weight, rows, cols) + w * shared

    assigned, next_id = np.zeros(n, dtype=np.int64), 0
    order = np.argsort(component, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(component[order])) + 1):
        local = np.zeros(1, dtype=np.int64)
        if len(members) > 1:
            sim = sim_of(members, members)
            local = _cut((sim + sim.T) / 2, threshold)
        assigned[members] = next_id + local
        next_id += int(local.max()) + 1
    return assigned, sim_of


def _blocks(ev: Evidence, pinned: set[int]) -> tuple[list[list[int]], np.ndarray]:
    """Units of clustering: each pinned label's raw labels together, others alone."""
    blocks: list[list[int]] = []
    by_label: dict[int, int] = {}
    block_of = np.zeros(len(ev.raw_labels), dtype=np.int64)
    for i, label_id in enumerate(ev.current.tolist()):
        if label_id in pinned:
            if label_id not in by_label:
                by_label[label_id] = len(blocks)
                blocks.append([])
            block_of[i] = by_label[label_id]
            blocks[by_label[label_id]].append(i)
        else:
            block_of[i] = len(blocks)
            blocks.append([i])
    return blocks, block_of


def _separate_pinned(assigned, blocks, ev, pinned, sim_of) -> np.ndarray:
    """Two labels curated by hand stay two labels: a group holding several pinned blocks
    is divided among them, each other block going to the pinned block it is closest to."""
    assigned = assigned.copy()
    next_id = int(assigned.max()) + 1
    is_pinned = np.array([ev.current[b[0]] in pinned for b in blocks])
    groups, counts = np.unique(assigned[is_pinned], return_counts=True)
    for g in groups[counts >= 2]:
        members = np.flatnonzero(assigned == g)
        anchors = members[is_pinned[members]]
        ids = {int(a): next_id + n for n, a in enumerate(anchors)}
        next_id += len(anchors)
        for m in members:
            nearest = int(anchors[int(np.argmax(np.ravel(sim_of(m, anchors))))])
            assigned[m] = ids[int(m) if is_pinned[m] else nearest]
    return assigned


def plan(space: LabelSpace, ev: Evidence, assigned: np.ndarray) -> Plan:
    """Match groups to label ids by member overlap, choose names, list the changes."""
    groups = [np.flatnonzero(assigned == g) for g in np.unique(assigned)]
    overlap: dict[tuple[int, int], float] = defaultdict(float)
    for g, rows in enumerate(groups):
        for i in rows:
            overlap[(g, int(ev.current[i]))] += ev.uses[i]
    targets: list[int | None] = [None] * len(groups)
    taken: set[int] = set()
    for (g, label_id), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if targets[g] is None and label_id not in taken:
            targets[g] = label_id
            taken.add(label_id)
    result = Plan([[ev.raw_labels[i] for i in rows] for rows in groups], targets, [])
    for g, rows in enumerate(groups):
        for i in rows:
            if targets[g] != ev.current[i]:
                result.moves.append((ev.raw_labels[i], int(ev.current[i]), g))
    _plan_merges(result, ev, groups, taken)
    _plan_names(space, result, ev, groups)
    return result


def _plan_merges(result: Plan, ev: Evidence, groups, taken: set[int]) -> None:
    """An old label left without raw labels points at the group that took most items."""
    received: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for g, rows in enumerate(groups):
        for i in rows:
            received[int(ev.current[i])][g] += ev.uses[i]
    for old in sorted(set(ev.current.tolist()) - taken):
        best = max(received[old].items(), key=lambda kv: (kv[1], -kv[0]))[0]
        result.merges.append((old, best))


def _plan_names(space: LabelSpace, result: Plan, ev: Evidence, groups) -> None:
    """The usage-weighted medoid of each group's names; pinned labels keep theirs.
    Names that start with a negation (``no_``) are a small model's habit, not a topic:
    they are chosen only when nothing else is available."""
    targets = {t for t in result.targets if t is not None}
    # Labels that will not be roots (merged before or now) give their names up, so the
    # chosen names do not depend on which variant happened to found a label.
    away = set(space.parent) | {old for old, _ in result.merges}
    used = {
        n
        for i, n in space.names.items()
        if (i not in targets and i not in away) or i in space.pinned
    }
    for g, rows in enumerate(groups):
        target = result.targets[g]
        if target is not None and target in space.pinned:
            result.names.append(space.names[target])
            continue
        vecs = ev.core[rows]
        score = np.round((vecs @ vecs.T) @ ev.uses[rows], 6)
        # among variants with the same core, the one with the fewest filler words
        padding = [_padding(ev, i) for i in rows]
        order = sorted(
            range(len(rows)),
            key=lambda j: (
                ev.raw_labels[rows[j]].startswith("no_"),
                -score[j],
                padding[j],
                rows[j],
            ),
        )
        assign_name(space, result, target, [ev.raw_labels[rows[j]] for j in order], used)
    give_up_names(space, result, away)


def assign_name(space: LabelSpace, result, target: int | None, ranked: list[str], used):
    """Name a group (``result`` has ``names`` and ``renames``) by the first of ``ranked``
    no other label holds, else a numbered variant of the first; a kept label is renamed."""
    name = next((r for r in ranked if r not in used), None) or _free(ranked[0], used)
    used.add(name)
    result.names.append(name)
    if target is not None and space.names[target] != name:
        result.renames.append((target, space.names[target], name))


def give_up_names(space: LabelSpace, result, away: set[int]) -> None:
    """Labels that stop being roots give up names a group took (``~`` never appears in a
    label name)."""
    chosen = set(result.names)
    for label_id in sorted(away):
        if space.names[label_id] in chosen:
            old = space.names[label_id]
            result.renames.append((label_id, old, f"{old[:50]}~{label_id}"))


def _padding(ev: Evidence, i: int) -> int:
    """Words of a raw label that its core name left out."""
    return len(ev.raw_labels[i].split("_")) - len(ev.cores[i].split())


def _free(base: str, used: set[str]) -> str:
    n = 2
    while f"{base}_{n}"[:60] in used:
        n += 1
    return f"{base}_{n}"[:60]


def borderline(
    space: LabelSpace, ev: Evidence, *, name_weight: float, threshold: float, floor: float
) -> Adjudication:
    """The grouping at ``threshold``, stored adjudications applied, and the borderline
    pairs (similarity at least ``floor``) still open for the LLM."""
    assigned = group(ev, space.pinned, name_weight=name_weight, threshold=threshold)
    # an LLM the consensus found wrong often must confirm a "same" (see adjudicate.verdict):
    # the low end of the estimate's interval, so a few corrections early in a stream do
    # not switch it on
    assert space.store is not None
    confirm = float(space.store.meta().get("llm_error_low", 0.0)) >= CONFIRM_ABOVE
    floor = min(floor, threshold)
    lean = (floor + 2 * threshold) / 3  # where the evidence leans "same" (see Adjudication)
    return Adjudication(space, ev, assigned, name_weight, floor, confirm, lean)


def consolidate(
    space: LabelSpace,
    *,
    name_weight: float = NAME_WEIGHT,
    threshold: float = THRESHOLD,
    labeler=None,
    adjudication_budget: int = 0,
    adjudication_floor: float = 0.4,
    adjudication_batch: int = PAIRS_PER_CALL,
    adjudication_parallel: int = 1,
    dry_run: bool = False,
) -> dict:
    """Regroup every raw label (see the module docstring); returns a summary of changes.
    Stored adjudications always apply; with a ``labeler`` and ``adjudication_budget`` > 0,
    borderline groups are also put to the LLM. With ``dry_run`` nothing is written (new
    adjudications excepted)."""
    start = time.perf_counter()
    ev = gather(space)
    adj = borderline(
        space, ev, name_weight=name_weight, threshold=threshold, floor=adjudication_floor
    )
    asked = 0
    if labeler is not None and adjudication_budget > 0:
        asked = adj.ask(labeler, adjudication_budget, adjudication_batch, adjudication_parallel)
    result = plan(space, ev, adj.assignment())  # stored answers apply without new questions
    summary: dict[str, Any] = {
        "raw_labels": len(ev.raw_labels),
        "labels_before": len(space),
        "groups": len(result.groups),
        "moved_raw_labels": len(result.moves),
        "merged_labels": len(result.merges),
        "renamed_labels": len(result.renames),
        "new_labels": sum(t is None for t in result.targets),
        "adjudication_calls": asked,
        "dry_run": dry_run,
    }
    if not dry_run and (result.changes or ev.new_vectors or any(t is None for t in result.targets)):
        summary["entry"] = _apply(space, ev, result)
        space.reload()
    summary["labels_after"] = len(space) if not dry_run else len(result.groups)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _apply(space: LabelSpace, ev: Evidence, result: Plan) -> int:
    """Write a plan in one transaction and log it; returns the log entry id."""
    detail: dict = {"moves": [], "merges": [], "renames": [], "created": [], "vectors": {}}
    assert space.store is not None
    with space.rewrite() as c:
        for raw, vector in ev.new_vectors.items():
            space.store.aliases.set_vector(c, raw, vector)
        ids = write_labels(space, c, result, _representatives(ev, result), detail)
        for raw, old, g in result.moves:
            stored = space.aliases[raw]
            _move(space, c, raw, old, ids[g])
            detail["moves"].append([raw, stored, ids[g]])
        return log_consolidation(space, c, result.merges, ids, detail)


def write_labels(space: LabelSpace, c, result, reps, detail: dict) -> list[int]:
    """Renames first (they free names for new labels), then each group's label: created,
    or its representative replaced (the old one logged). Returns the label id per group."""
    assert space.store is not None
    labels = space.store.labels
    _rename(labels, c, [(i, new) for i, _, new in result.renames])
    detail["renames"] = [[i, old] for i, old, _ in result.renames]
    ids = list(result.targets)
    for g, target in enumerate(ids):
        if target is None:
            ids[g] = labels.insert(c, result.names[g], reps[g])
            detail["created"].append(ids[g])
        else:
            detail["vectors"][str(target)] = _b64(space.representative(target))
            labels.set_vector(c, target, reps[g])
    return ids


def log_consolidation(space: LabelSpace, c, merges, ids: list[int], detail: dict) -> int:
    """Point old labels at their groups and log the consolidation; returns the entry id."""
    assert space.store is not None
    for old, g in merges:
        space.store.labels.merge(c, old, ids[g])
        detail["merges"].append([old, ids[g]])
    return space.store.log.add(c, "consolidate", detail=detail)


def _representatives(ev: Evidence, result: Plan) -> list[np.ndarray]:
    index = {r: i for i, r in enumerate(ev.raw_labels)}
    out = []
    for raws in result.groups:
        rows = [index[r] for r in raws]
        out.append(_unit(ev.uses[rows] @ ev.name_vectors[rows]).astype(np.float32))
    return out


def _rename(labels: Labels, c, renames: list[tuple[int, str]]) -> None:
    """Rename in two steps, so names can move between labels without a UNIQUE clash."""
    for label_id, _ in renames:
        labels.rename(c, label_id, f"~consolidating~{label_id}")
    for label_id, name in renames:
        labels.rename(c, label_id, name)


def _move(space: LabelSpace, c, raw: str, old_root: int, new_label: int) -> None:
    """Point a raw label at another label; its items (and the hits that reused it) follow,
    except items a person moved elsewhere by hand."""
    assert space.store is not None
    space.store.aliases.move(c, raw, new_label)
    family = [i for i in space.names if space.resolve(i) == old_root]
    space.store.items.relabel_raw(c, raw, new_label, family)


def revert(space: LabelSpace, entry: int, detail: dict) -> dict:
    """Undo consolidation ``entry``: merges, moves, renames and representatives go back;
    labels it created are removed once nothing refers to them."""
    store = space.store
    assert store is not None
    with space.rewrite() as c:
        for old, _ in detail["merges"]:
            store.labels.merge(c, old, None)
        for item, stored, moved_to in reversed(detail.get("items", [])):  # by items
            store.items.relabel(c, [item], stored, was=moved_to)
        for raw, stored, _ in reversed(detail.get("aliases", [])):
            store.aliases.move(c, raw, stored)
        for raw, stored, moved_to in reversed(detail["moves"]):
            store.aliases.move(c, raw, stored)
            store.items.relabel_raw(c, raw, stored, [moved_to])
        for label_id, blob in detail["vectors"].items():
            vector = np.frombuffer(base64.b64decode(blob), dtype=np.float32)
            store.labels.set_vector(c, int(label_id), vector)
        # Created labels go first: one may hold a name a renamed label takes back.
        wanted = {old for _, old in detail["renames"]}
        for label_id in detail["created"]:
            store.labels.delete_unused(c, label_id)
        _free_names(store.labels, c, wanted, {i for i, _ in detail["renames"]})
        _rename(store.labels, c, [(i, old) for i, old in detail["renames"]])
        store.log.mark_undone(c, entry)
    space.reload()
    return {
        "kind": "undo",
        "consolidation": entry,
        "moves": len(detail["moves"]) + len(detail.get("items", [])),
        "merges": len(detail["merges"]),
        "renames": len(detail["renames"]),
    }


def _free_names(labels: Labels, c, wanted: set[str], renamed: set[int]) -> None:
    """A label that holds a name being given back — created by this consolidation and
    still used, or made since (a split, a new raw label) — keeps its items under a free
    name (``~`` never appears in a label name)."""
    if not wanted:
        return
    for label_id, name in labels.holders(c, sorted(wanted)):
        if label_id not in renamed:
            labels.rename(c, label_id, f"{name}~{label_id}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _b64(v: np.ndarray) -> str:
    return base64.b64encode(np.asarray(v, dtype=np.float32).tobytes()).decode()
