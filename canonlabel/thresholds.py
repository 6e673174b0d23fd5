"""Thresholds learned from audits under an error bound (the router's and the cache's).

An *audit* is an item that a non-LLM path (the router, the semantic cache) would answer
with ``guess`` at some ``score`` (confidence, similarity) and that the LLM answered too
(``truth``). Items below the current threshold all go to the LLM, so each is a free
audit; above it, a random ``audit_rate`` share of would-be answers go to the LLM too.

The two are sampled at very different rates, so the error of "everything scoring
``>= t``" is estimated *post-stratified*: per score bin, the disagreement of that bin's
audits (plus one half, so an unaudited bin counts as unknown, not as right), weighted by
how many items the bin *saw*. Its normal-approximation upper bound (95%, one-sided z of
1.645 per the bound's side) must stay at or under ``max_error``. For each label the
threshold is the lowest bin edge whose region keeps the bound; labels with too few
audits use the bound pooled over all labels, and before the pool has enough audits a
fixed default (``inf``: answer nothing; the cache keeps ``min_similarity``). A
disagreeing audit raises its bin's estimate, and so tightens the threshold at once. Old
audits leave a bounded window: the head and the label space change as the stream grows.

*Lanes.* The head and the cache are two views of one item: the head's guess and the
nearest cached neighbour's label. Where they agree, either is wrong far less often than
its score alone says (on Banking77 with gold labels, a head agreeing with the nearest
neighbour is right 86-96% of the time, a disagreeing one 37-44%). So every score lives in
one of two lanes, and an agreeing answer's score is raised by :data:`AGREEING` above any
plain score (:func:`laned`). The grid holds both lanes' edges (:func:`lanes`), so the
regions "scoring ``>= t``" stay nested: a threshold in the upper lane answers agreeing
items only; one in the lower lane answers every agreeing item and the plain ones above
it. The audits decide which, per lane, under the same bound.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable

import numpy as np

Z = 1.645  # one-sided 95%
CONFIDENCE_GRID = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98])
SIMILARITY_GRID = np.array([0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98])
AGREEING = 2.0  # lifts an agreeing answer's score above every plain one (scores are <= 1)

Resolve = Callable[[int], int]


def lanes(grid: np.ndarray) -> np.ndarray:
    """A score grid with both lanes: the plain edges, then the agreeing ones."""
    return np.concatenate([grid, grid + AGREEING])


def laned(score: float, agrees: bool, grid: np.ndarray) -> float:
    """``score`` in its lane: raised by :data:`AGREEING` when the other path agrees (a
    score under the grid stays unscored in either lane)."""
    return score + AGREEING if agrees and score >= grid[0] else score


def plain(score: float) -> tuple[float, bool]:
    """(score, agreeing) of a laned score or threshold."""
    return (score - AGREEING, True) if AGREEING - 0.5 <= score < math.inf else (score, False)


def wilson_interval(errors: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of an error rate seen as ``errors`` of ``n``."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, errors / n))
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def bin_of(score: float, grid: np.ndarray) -> int:
    """Index of the bin ``[grid[i], grid[i+1])`` holding ``score``; -1 below the grid."""
    return int(np.searchsorted(grid, score, side="right")) - 1


def region_bounds(seen: np.ndarray, audited: np.ndarray, wrong: np.ndarray, z: float = Z):
    """For each bin edge t: (estimated error, upper bound, audits) of the region >= t.

    ``seen``, ``audited``, ``wrong``: per bin, items scored, audits, disagreeing audits."""
    p = (wrong + 0.5) / (audited + 1.0)
    # suffix sums: the region above each edge
    n = np.cumsum(seen[::-1])[::-1].astype(float)
    s1 = np.cumsum((seen * p)[::-1])[::-1]
    s2 = np.cumsum((seen**2 * p * (1 - p) / (audited + 1.0))[::-1])[::-1]
    m = np.cumsum(audited[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(n > 0, s1 / n, 1.0)
        upper = np.where(n > 0, est + z * np.sqrt(s2) / n, 1.0)
    return est, upper, m


def threshold(
    seen: np.ndarray,
    audited: np.ndarray,
    wrong: np.ndarray,
    grid: np.ndarray,
    max_error: float,
    min_audits: int,
) -> float:
    """Lowest grid edge whose region keeps the error bound (``inf`` if none does, or the
    region holds fewer than ``min_audits`` audits)."""
    _, upper, m = region_bounds(seen, audited, wrong)
    for i, t in enumerate(grid):
        if m[i] < min_audits:
            return math.inf
        if upper[i] <= max_error:
            return float(t)
    return math.inf


class AuditedThresholds:
    """Per-label score thresholds learned from audits (see the module text).

    Label ids are stored as given and resolved when judged, so an audit that split two
    variants agrees after a consolidation joins them."""

    def __init__(
        self,
        max_error: float,
        min_audits: int,
        grid: np.ndarray = CONFIDENCE_GRID,
        default: float = math.inf,
        window: int = 20_000,
    ) -> None:
        self.max_error, self.min_audits, self.grid = max_error, min_audits, grid
        self.default = default
        nb = len(grid)
        self._seen: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(nb))
        self._audits: deque[tuple[int, int, int]] = deque(maxlen=window)  # guess, truth, bin
        self._by_label: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        self._own: dict[int, float] = {}
        self._pooled = math.inf
        self.total = 0
        self.disagreed = 0

    def threshold_for(self, label: int) -> float:
        """The label's own threshold, else the pooled one once the pool holds enough
        audits to judge (``inf`` if it certifies none), else the default."""
        own = self._own.get(label)
        if own is not None:
            return own
        return self._pooled if self.ready else self.default

    def admits(self, label: int, score: float) -> bool:
        """Whether a (laned) ``score`` on ``label`` clears its threshold. The default,
        used before any audit judged, is a plain score: it knows no lanes."""
        if label not in self._own and not self.ready:
            return plain(score)[0] >= self.default
        return score >= self.threshold_for(label)

    def seen(self, labels, scores) -> None:
        """Items were scored (answered or not): the weights of their bins in the region."""
        bins = np.searchsorted(self.grid, np.asarray(scores, dtype=float), side="right") - 1
        for label, b in zip(np.asarray(labels).tolist(), bins.tolist(), strict=True):
            if b >= 0:
                self._seen[label][b] += 1

    def add(self, guess: int, truth: int, score: float, resolve: Resolve) -> bool:
        """Record one audit; returns whether the guess agreed with the LLM path."""
        audit = (guess, truth, bin_of(score, self.grid))
        if len(self._audits) == self._audits.maxlen:
            self._forget(self._audits[0], resolve)
        self._audits.append(audit)
        root = resolve(guess)
        self._by_label[root].append(audit)
        self.total += 1
        agreed = root == resolve(truth)
        self.disagreed += not agreed
        self._update(root, resolve)
        return agreed

    def restart(
        self, labels, scores, audits: list[tuple[int, int, float]], resolve: Resolve
    ) -> None:
        """Forget every audit and score seen, and start again from items scored (``labels``,
        ``scores``) and ``audits`` (guess, truth, score): a new model is judged on its own."""
        self._seen.clear()
        self._audits.clear()
        self.seen(labels, scores)
        for guess, truth, score in audits:
            self._audits.append((guess, truth, bin_of(score, self.grid)))
        self.refresh(resolve)

    def refresh(self, resolve: Resolve) -> None:
        """After the label space changed: regroup and re-judge every audit."""
        self._by_label = defaultdict(list)
        for audit in self._audits:
            self._by_label[resolve(audit[0])].append(audit)
        self._own = {}
        for label in list(self._by_label):
            self._update(label, resolve)

    def estimated_error(self, resolve: Resolve) -> dict:
        """Estimated disagreement of the region answered now (by the pooled threshold),
        with its upper bound."""
        t = self.threshold_for(-1)
        if math.isinf(t):
            return {"error": None, "upper_95": None}
        seen, audited, wrong = self._counts(self._audits, self._seen.values(), resolve)
        est, upper, m = region_bounds(seen, audited, wrong)
        i = int(np.searchsorted(self.grid, t))
        if i >= len(m) or m[i] == 0:  # no audit there yet: the prior is not an estimate
            return {"error": None, "upper_95": None}
        return {"error": round(float(est[i]), 4), "upper_95": round(float(upper[i]), 4)}

    def lowest_error(self, resolve: Resolve) -> float | None:
        """The lowest estimated disagreement of any region holding ``min_audits`` audits
        (None if none does): the best this path could be certified at."""
        est, _, m = region_bounds(*self.counts(resolve))
        valid = m >= self.min_audits
        return round(float(est[valid].min()), 4) if valid.any() else None

    def summary(self, resolve: Resolve) -> dict:
        t = self.threshold_for(-1)
        pooled, agreeing = (None, None) if math.isinf(t) else plain(t)
        return {
            "audits": self.total,
            "disagreed": self.disagreed,
            "labels_with_threshold": len(self._own),
            "pooled_threshold": None if pooled is None else round(pooled, 4),
            "pooled_agreeing_only": agreeing,
            **self.estimated_error(resolve),
        }

    # -- internals ------------------------------------------------------------------------
    @property
    def _pool_min(self) -> int:
        return 4 * self.min_audits

    def _counts(
        self, audits, seen_rows, resolve: Resolve
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nb = len(self.grid)
        seen = np.zeros(nb)
        for row in seen_rows:
            seen += row
        audited, wrong = np.zeros(nb), np.zeros(nb)
        for guess, truth, b in audits:
            if b >= 0:
                audited[b] += 1
                wrong[b] += resolve(guess) != resolve(truth)
        return np.maximum(seen, audited), audited, wrong

    def _update(self, label: int, resolve: Resolve) -> None:
        rows = [row for lab, row in self._seen.items() if resolve(lab) == label]
        counts = self._counts(self._by_label.get(label, ()), rows, resolve)
        t = threshold(*counts, self.grid, self.max_error, self.min_audits)
        if math.isinf(t):
            self._own.pop(label, None)
        else:
            self._own[label] = t

    def counts(self, resolve: Resolve):
        """Per bin, over all labels: (items scored, audits, disagreeing audits)."""
        return self._counts(self._audits, self._seen.values(), resolve)

    def set_pooled(self, t: float) -> None:
        self._pooled = t

    @property
    def ready(self) -> bool:
        """Whether the pool holds enough audits to judge."""
        return len(self._audits) >= self._pool_min

    def _forget(self, audit, resolve: Resolve) -> None:
        bucket = self._by_label.get(resolve(audit[0]))
        if bucket and bucket[0] is audit:
            bucket.pop(0)
        elif bucket and audit in bucket:
            bucket.remove(audit)


def joint_thresholds(
    parts: list[AuditedThresholds], resolve: Resolve, current: list[float] | None = None
) -> list[float]:
    """Pooled thresholds for several non-LLM paths under *one* bound on their answers
    together (the router's confident region leaves room for a somewhat less sure cache
    region).

    Loosening needs proof: of all combinations of grid edges (or off), the one answering
    the most scored items whose joint upper bound keeps ``max_error``. Tightening needs
    evidence: the ``current`` thresholds stay while their region's estimated error keeps
    the bound, so the noise of a small sample never switches a path off. A path whose
    pool is not ready keeps its default and its share is not counted."""
    counts = [p.counts(resolve) for p in parts]
    options = [list(range(len(p.grid) + 1)) if p.ready else [None] for p in parts]
    best, best_cover = None, -1.0
    for combo in _product(options):
        est, upper, seen, audits = _joint(parts, counts, combo)
        if upper <= parts[0].max_error and audits >= parts[0]._pool_min and seen > best_cover:
            best, best_cover = combo, seen
    if current is not None:
        now = tuple(
            None if not p.ready else _edge(p.grid, t) for p, t in zip(parts, current, strict=True)
        )
        est, _, seen, _ = _joint(parts, counts, now)
        if est <= parts[0].max_error and seen >= best_cover:
            best = now
    if best is None:  # nothing certified: every ready path answers nothing
        best = tuple(None if not p.ready else len(p.grid) for p in parts)
    return [
        p.default if i is None else (math.inf if i == len(p.grid) else float(p.grid[i]))
        for p, i in zip(parts, best, strict=True)
    ]


def _edge(grid: np.ndarray, t: float) -> int:
    """Index of threshold ``t`` on ``grid`` (``len(grid)``: off)."""
    return len(grid) if math.isinf(t) else int(np.searchsorted(grid, t - 1e-9))


def _joint(parts, counts, combo) -> tuple[float, float, float, int]:
    """(estimated error, upper bound, items scored, audits) of the union of regions."""
    seen = p_hat = var_terms = 0.0
    audits = 0
    for (n, m, e), i in zip(counts, combo, strict=True):
        if i is None:
            continue
        ps = (e[i:] + 0.5) / (m[i:] + 1.0)
        seen += n[i:].sum()
        p_hat += (n[i:] * ps).sum()
        var_terms += (n[i:] ** 2 * ps * (1 - ps) / (m[i:] + 1.0)).sum()
        audits += int(m[i:].sum())
    if seen <= 0:
        return 0.0, 0.0, 0.0, audits
    return p_hat / seen, p_hat / seen + Z * math.sqrt(var_terms) / seen, seen, audits


def _product(options):
    if not options:
        yield ()
        return
    for head in options[0]:
        for rest in _product(options[1:]):
            yield (head, *rest)
