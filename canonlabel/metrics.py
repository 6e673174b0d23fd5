"""Label-quality metrics: clustering agreement with gold, cache precision, consistency."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import combinations

import numpy as np

Labels = Sequence[Hashable] | np.ndarray  # one label per item (codes from _codes included)


def _codes(labels: Labels) -> np.ndarray:
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(x, len(index)) for x in labels], dtype=np.int64)


def contingency(gold: Labels, pred: Labels) -> np.ndarray:
    g, p = _codes(gold), _codes(pred)
    table = np.zeros((g.max(initial=-1) + 1, p.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (g, p), 1)
    return table


def cluster_accuracy(gold: Labels, pred: Labels) -> float:
    """ACC: accuracy under the best one-to-one mapping of predicted to gold labels
    (Hungarian matching); predicted labels left unmatched count as wrong."""
    from scipy.optimize import linear_sum_assignment

    if len(gold) == 0:
        return 0.0
    table = contingency(gold, pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(gold))


def clustering_scores(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[str, float]:
    """ACC, NMI, ARI, homogeneity, completeness, V-measure and label counts."""
    from sklearn import metrics as m

    g, p = _codes(gold), _codes(pred)
    h, c, v = m.homogeneity_completeness_v_measure(g, p)
    return {
        "acc": round(cluster_accuracy(g, p), 4),
        "nmi": round(float(m.normalized_mutual_info_score(g, p)), 4),
        "ari": round(float(m.adjusted_rand_score(g, p)), 4),
        "homogeneity": round(float(h), 4),
        "completeness": round(float(c), 4),
        "v_measure": round(float(v), 4),
        "labels": len(set(p.tolist())),
        "gold_labels": len(set(g.tolist())),
    }


def hit_precision(matches: Sequence[tuple[int, int]], gold: Sequence[Hashable]) -> float | None:
    """Share of semantic hits ``(item, matched_item)`` whose gold labels agree."""
    if not matches:
        return None
    return round(sum(gold[i] == gold[j] for i, j in matches) / len(matches), 4)


def mean_pairwise_ari(runs: Sequence[Sequence[Hashable]]) -> float:
    """Order invariance: mean ARI between every pair of runs (aligned by item)."""
    pairs = pairwise_ari(runs)
    return round(float(np.mean(pairs)), 4) if pairs else 1.0


def pairwise_ari(runs: Sequence[Sequence[Hashable]]) -> list[float]:
    """ARI between runs ``a`` and ``b`` for every pair ``a < b``, in that order (so two
    benchmarks over the same orders can be compared pair by pair)."""
    from sklearn.metrics import adjusted_rand_score

    return [
        float(adjusted_rand_score(_codes(runs[a]), _codes(runs[b])))
        for a, b in combinations(range(len(runs)), 2)
    ]


def stable_share(runs: Sequence[Sequence[Hashable]]) -> float:
    """Share of items whose label is the same in every run, after mapping each run's
    labels one-to-one onto the first run's (Hungarian), so arbitrary ids do not matter."""
    from scipy.optimize import linear_sum_assignment

    if len(runs) < 2:
        return 1.0
    base = _codes(runs[0])
    same = np.ones(len(base), dtype=bool)
    for run in runs[1:]:
        codes = _codes(run)
        table = contingency(codes, base)
        rows, cols = linear_sum_assignment(-table)
        mapping = dict(zip(rows.tolist(), cols.tolist()))
        mapped = np.array([mapping.get(x, -1) for x in codes.tolist()])
        same &= mapped == base
    return round(float(same.mean()), 4)


def label_set_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro/macro F1 and exact match for multi-label predictions with the gold names."""
    names = sorted({x for s in gold for x in s} | {x for s in pred for x in s})
    col = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(gold), len(names)), dtype=bool)
    z = np.zeros_like(y)
    for i, (gs, ps) in enumerate(zip(gold, pred)):
        y[i, [col[x] for x in gs]] = True
        z[i, [col[x] for x in ps]] = True
    tp, fp, fn = (y & z).sum(0), (~y & z).sum(0), (y & ~z).sum(0)
    micro = 2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())
    per = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
    present = y.any(0)
    return {
        "micro_f1": round(float(micro), 4),
        "macro_f1": round(float(per[present].mean()) if present.any() else 0.0, 4),
        "exact_match": round(float((y == z).all(1).mean()), 4),
    }
