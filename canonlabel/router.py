"""The self-training router: a head on embeddings that answers confident items without
the LLM, and the gate that holds the semantic cache to the same error bound.

* **Head.** Multinomial logistic regression on every labelled item, by its *current*
  canonical label: the semantic cache (LLM answers) and the items answered without the
  LLM (router and cache hits, kept in a bounded reservoir in memory). Self-training on
  its own answers is what lets the share of LLM calls keep falling; the audits below keep
  it honest. The head is refitted in a background thread whenever the labelled items grew
  by ``router_retrain_every`` and by a quarter since the last fit (so a long stream
  refits O(log n) times); the fitted head replaces the old one in one assignment, so a
  request never waits for training. Each version is kept in the store.
* **Audits.** Each new head is first audited *out of fold* (:mod:`canonlabel.head`): four
  heads, each fitted without a quarter of the items, predict that quarter, and every
  LLM-answered item audits the new head's kind of model, judged by its label as it
  stands (consensus included). These replace the audits of earlier heads, which judged
  weaker models: on Banking77 at 10% wrong answers that took the 10,000-text stream
  from 68% to 41% of texts sent to the LLM. A consolidation that changes the label space
  makes a new head due at once. After that, every item that goes to the LLM anyway is a
  free audit of the router's guess and of its nearest cached neighbour's label. A random
  ``audit_rate`` share of the items the router or the cache *would* answer also go to the
  LLM (counted as LLM calls): they keep the estimate honest where those answer, and a
  disagreeing one corrects its item.
* **Thresholds.** :class:`~canonlabel.thresholds.AuditedThresholds`: per label, the
  lowest confidence (router) or similarity (cache) whose audits keep the upper bound of
  disagreement at or under the bound (below), in two lanes: answers on which the head and
  the nearest cached neighbour agree, and the rest (see :mod:`canonlabel.thresholds`).
  The cache keeps ``min_similarity`` until its audits certify a threshold of their own;
  a disagreeing audit raises (tightens) its label's threshold at once.
* **The bound: ``max_error`` above the LLM's floor.** An LLM path whose labels are wrong
  e of the time disagrees with even an always-right answer e of the time, so no bound
  below e could hold against it, and every item would go to the LLM. That is what
  happens when a wrong answer is a *misreading* that a second question repeats: the
  consensus cannot fix it. So answers are held to ``max_error`` *above* the LLM path's
  own error e (:meth:`Router.floor`): the error of one label that the rate at which the
  LLM path labels near-duplicate texts apart implies (1 - (1 - e)² of the time;
  post-stratified, the low end of its one-sided 95% interval, once
  ``router_min_audits`` near-duplicates were audited). An answer that disagrees with
  labels wrong e of the time d of the time is itself wrong about d - e of the time, so
  ``max_error`` bounds answers against the truth. Where the consensus leaves
  near-duplicates agreeing, the floor is 0 and changes nothing (Banking77, NLU++ and
  hotels at 0% and 10% independent errors: identical figures); where half the wrong
  answers are misreadings, it keeps the 10,000-text Banking77 stream at 36% of texts to
  the LLM instead of 106%. When a trained head and enough audits still certify nothing,
  the summary's ``warning`` says so and what to do, instead of silently sending every
  item to the LLM.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import NamedTuple, cast

import numpy as np

from canonlabel.head import CrossFit, SoftmaxHead, cross_fit
from canonlabel.thresholds import (
    CONFIDENCE_GRID,
    SIMILARITY_GRID,
    AuditedThresholds,
    Z,
    joint_thresholds,
    laned,
    lanes,
    plain,
    wilson_interval,
)

NEAR_DUPLICATE = 0.96  # similarity from which two texts are near-duplicates (a grid edge)
# An audit in the agreeing lane that disagrees from these scores on is disputed: the
# consensus asks the LLM again about the audited item (see :meth:`Router.take_disputes`).
# Below them, or in the plain lane, no threshold was ever certified in the benchmarks,
# and disputing the plain lane too cost NLU++ (10% wrong, 8 orders) ARI 0.783 -> 0.759.
DISPUTE_CONFIDENCE = 0.7
DISPUTE_SIMILARITY = 0.85


class Router:
    """Online head, audits and thresholds; used by the engine on its own thread."""

    def __init__(self, settings, space, max_error: float) -> None:
        self.settings, self.space, self.max_error = settings, space, max_error
        self.head: SoftmaxHead | None = None
        self.version = 0
        self.trained_on = 0
        s, m = settings, settings.router_min_audits
        self.head_thresholds = AuditedThresholds(max_error, m, lanes(CONFIDENCE_GRID))
        self.cache_thresholds = AuditedThresholds(
            max_error, m, lanes(SIMILARITY_GRID), default=s.min_similarity
        )
        self._hits = _Reservoir(space.dim, s.router_max_items)
        self._audits = 0
        self._disputes: dict[int, int] = {}  # audited item -> the label the path said
        # audited item -> its label when answered (if the item has left the cache since);
        # the audits' windows hold 20,000 each, so twice that many is all they can refer to
        self._answered: OrderedDict[int, int] = OrderedDict()
        self._training: threading.Thread | None = None
        self._fitted: _Fitted | None = None
        self._relabelled = False  # the label space changed since the head was fitted
        self.train_seconds = 0.0

    # -- answering ------------------------------------------------------------------------
    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(root label id, confidence) per vector; label -1 before the first head."""
        self._swap()
        if self.head is None or not len(vectors):
            n = len(vectors)
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
        P = self.head.predict_proba(vectors)
        top = P.argmax(axis=1)
        labels = np.array([self.space.resolve(int(c)) for c in self.head.classes_[top]])
        return labels, P[np.arange(len(P)), top]

    def head_score(self, label: int, confidence: float, near: int | None) -> float:
        """The head's confidence in its lane: agreeing when the nearest cached neighbour's
        (stored) label ``near`` resolves to the head's ``label``."""
        agrees = near is not None and self.space.resolve(near) == label
        return laned(confidence, agrees, CONFIDENCE_GRID)

    def cache_score(self, near: int, similarity: float, guess: int | None) -> float:
        """The neighbour's similarity in its lane: agreeing when the head's ``guess``
        names the neighbour's label."""
        agrees = guess is not None and self.space.resolve(near) == guess
        return laned(similarity, agrees, SIMILARITY_GRID)

    def answers(self, label: int, score: float) -> bool:
        return label >= 0 and self.head_thresholds.admits(label, score)

    def cache_answers(self, label: int, score: float) -> bool:
        """Whether a cached neighbour with stored ``label`` at (laned) ``score`` answers."""
        return self.cache_thresholds.admits(self.space.resolve(label), score)

    def follow_threshold(self) -> float:
        """Similarity at which a near-duplicate follows an in-flight leader. Nothing can
        agree with an answer not given yet, so it needs the plain lane's threshold."""
        t, agreeing = plain(self.cache_thresholds.threshold_for(-1))
        return math.inf if agreeing else t

    # -- audits ---------------------------------------------------------------------------
    def scored(self, labels, confidences) -> None:
        """The head scored these items (answered or not)."""
        self.head_thresholds.seen(labels, confidences)

    def cache_scored(self, labels, similarities) -> None:
        """The cache found these items' nearest neighbours (stored ``labels``)."""
        self.cache_thresholds.seen(labels, similarities)

    def audit(self, label: int, confidence: float, truth: int, item: int | None = None) -> bool:
        """Record one audit of the head; returns whether it agreed with the LLM path.
        With the audited ``item``'s id, the truth is the label that item has when judged
        (see :meth:`judge`), else ``truth`` as the label space resolves it."""
        agreed = self.head_thresholds.add(label, self._truth(truth, item), confidence, self.judge)
        self._audited()
        if not agreed and _disputes(confidence, DISPUTE_CONFIDENCE):
            self._dispute(item, label)
        return agreed

    def audit_cache(
        self,
        label: int,
        similarity: float,
        truth: int,
        item: int | None = None,
        neighbour: int | None = None,
    ) -> bool:
        """Record one audit of the semantic cache (its nearest neighbour's label). With the
        ``neighbour``'s item id, what the cache said is judged as that item's label then."""
        guess = self._truth(label, neighbour)
        agreed = self.cache_thresholds.add(guess, self._truth(truth, item), similarity, self.judge)
        self._audited()
        if not agreed and _disputes(similarity, DISPUTE_SIMILARITY):
            self._dispute(item, self.judge(guess))  # the neighbour's label now
        return agreed

    def _dispute(self, item: int | None, label: int) -> None:
        if item is not None and label >= 0 and self._certifies():
            self._disputes.setdefault(item, label)

    def _certifies(self) -> bool:
        """Whether the audits certify some answers without the LLM. A head that
        certifies nothing at the bound is no evidence against an answer (NLU++, 988
        texts, 8 orders at 10% wrong: ARI 0.783 -> 0.762 when it disputed anyway)."""
        parts = (self.head_thresholds, self.cache_thresholds)
        return any(p.ready and math.isfinite(p.threshold_for(-1)) for p in parts)

    def take_disputes(self) -> dict[int, int]:
        """Audited LLM items whose answer a confident head or a near cached neighbour
        contradicted (item id -> the label it said), since the last call: the consensus
        asks the LLM again about them, and the audit is judged by the result (an audit
        judged by a single answer cannot certify a bound below that LLM's error)."""
        taken, self._disputes = self._disputes, {}
        return taken

    def _truth(self, label: int, item: int | None) -> int:
        if item is None:
            return label
        self._answered[item] = label
        if len(self._answered) > 40_000:
            self._answered.popitem(last=False)
        return item_ref(item)

    def judge(self, ref: int) -> int:
        """The root label of a label id, or of an audited item as it stands now: a
        consolidation that moves items one by one (grouping by items) moves an item away
        from the label its raw label had, and the LLM path's answer is where it went."""
        item = referred_item(ref)
        if item is None:
            return self.space.resolve(ref)
        label = self.space.item_label.get(item)
        if label is None:
            label = self._answered.get(item)
        # an item forgotten on both counts stays its own reference: unknown never agrees
        return ref if label is None else self.space.resolve(label)

    def _audited(self) -> None:
        self._audits += 1
        if self._audits % 25 == 0:  # the pooled bound moves slowly: every 25 is enough
            self._update_pooled()

    def _update_pooled(self) -> None:
        """One bound on router and cache answers together (see ``joint_thresholds``)."""
        parts = [self.head_thresholds, self.cache_thresholds]
        bound = self.bound()
        if abs(bound - self.head_thresholds.max_error) > 1e-9:
            for part in parts:
                part.max_error = bound
                part.refresh(self.judge)
        current = [part.threshold_for(-1) for part in parts]
        chosen = joint_thresholds(parts, self.judge, current)
        for part, t in zip(parts, chosen, strict=True):
            part.set_pooled(t)

    def refresh(self) -> None:
        """After the label space changed (consolidation, curation): re-judge every audit,
        and fit the head again soon. A head fitted on the old space predicts labels whose
        raw labels a consolidation moved elsewhere: on Banking77 at 10% wrong answers one
        consolidation tripled its surest answers' disagreement and the router answered
        nothing for 2,000 texts, until the next fit."""
        self._relabelled = self.head is not None
        self.head_thresholds.refresh(self.judge)
        self.cache_thresholds.refresh(self.judge)
        self._update_pooled()

    # -- training -------------------------------------------------------------------------
    def remember(self, label_ids, vectors) -> None:
        """Items answered without the LLM (stored label ids) join the training set."""
        self._hits.add(label_ids, vectors)

    def labelled(self, cached: int) -> int:
        return cached + self._hits.seen

    def due(self, cached: int) -> bool:
        s, n = self.settings, self.labelled(cached)
        grown = n - self.trained_on
        grew = grown >= s.router_retrain_every and grown >= self.trained_on // 4
        return n >= s.router_min_items and (grew or self._relabelled) and self._training is None

    def train(self, keys: np.ndarray, vectors: np.ndarray, store=None) -> None:
        """Fit a new head on a snapshot (the cache's ``keys``/``vectors`` and the hits
        remembered) in a background thread; :meth:`predict` swaps it in."""
        space, min_support = self.space, self.settings.router_min_support
        self._relabelled = False
        hit_labels, hit_vectors = self._hits.snapshot()
        labels = np.array(
            [space.resolve(space.item_label[int(k)]) for k in keys]
            + [space.resolve(int(lab)) for lab in hit_labels],
            dtype=np.int64,
        )
        X = np.concatenate([vectors, hit_vectors]) if len(hit_vectors) else vectors
        self.trained_on = self.labelled(len(keys))
        values, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, values[counts >= min_support])
        if len(np.unique(labels[keep])) < 2:
            return
        n, cached = self.trained_on, len(keys)

        def fit() -> None:
            start = time.perf_counter()
            head = SoftmaxHead().fit(X[keep], labels[keep])
            judged = cross_fit(X, labels, keep, cached)
            self.train_seconds += time.perf_counter() - start
            self._fitted = _Fitted(head, np.asarray(keys, dtype=np.int64), judged)
            if store is not None:
                store.router_versions.save(
                    head.to_bytes(), {"items": n, "classes": len(head.classes_)}
                )

        self._training = threading.Thread(target=fit, name="canonlabel-router", daemon=True)
        self._training.start()

    def wait(self) -> None:
        if self._training is not None:
            self._training.join()
            self._swap()

    def _swap(self) -> None:
        if self._fitted is not None:
            fitted, self._fitted = self._fitted, None
            self.head = fitted.head
            self.version += 1
            self._training = None
            if fitted.judged is not None:
                self._rejudge(fitted.keys, fitted.judged)
        elif self._training is not None and not self._training.is_alive():
            self._training = None  # it found nothing to fit

    def _rejudge(self, keys: np.ndarray, judged: CrossFit) -> None:
        """A new head is audited afresh: its out-of-fold predictions on every item in the
        cache (an LLM answer) replace the audits of the heads before it, which judged
        weaker models; items answered without the LLM weigh their score bins."""
        scores = [
            laned(c, g == near, CONFIDENCE_GRID)
            for c, g, near in zip(judged.confidence.tolist(), judged.guess, judged.near)
        ]
        audits = [
            (int(g), item_ref(int(k)), s)
            for g, k, s in zip(judged.guess[: len(keys)], keys, scores, strict=False)
        ]
        self.head_thresholds.restart(judged.guess, scores, audits, self.judge)
        for guess, ref, score in audits:
            if self.judge(guess) != self.judge(ref) and _disputes(score, DISPUTE_CONFIDENCE):
                self._dispute(referred_item(ref), guess)
        self._update_pooled()

    def summary(self) -> dict:
        resolve = self.judge
        return {
            "version": self.version,
            "trained_on": self.trained_on,
            "max_error": self.max_error,
            "bound": round(self.head_thresholds.max_error, 4),
            "llm_floor": round(self.floor(), 4),
            **self.head_thresholds.summary(resolve),
            "cache": self.cache_thresholds.summary(resolve),
            "llm_self_disagreement": self.self_disagreement(),
            "warning": self.warning(),
            "train_seconds": round(self.train_seconds, 2),
        }

    def floor(self) -> float:
        """The LLM path's own error, from how often it labels near-duplicate texts apart
        (at the low end of that rate's one-sided 95% interval; 0 before
        ``router_min_audits`` of them): no answer can disagree with the LLM path less
        than the LLM path is wrong.

        Post-stratified like the bound: near-duplicates the head or cache answer are
        audited at ``audit_rate`` only, the rest all go to the LLM, so a plain rate would
        be the rate of the hard ones, and would rise as more items are answered."""
        seen, audited, wrong = self.cache_thresholds.counts(self.judge)
        near = _near_duplicate_bins(self.cache_thresholds)
        seen, audited, wrong = seen[near], audited[near], wrong[near]
        total = seen.sum()
        if audited.sum() < self.settings.router_min_audits or total <= 0:
            return 0.0
        p = wrong / (audited + 1.0)  # shrunk towards 0: this is a lower bound
        spread = math.sqrt(float((seen**2 * p * (1 - p) / (audited + 1.0)).sum()))
        apart = max(0.0, float((seen * p).sum() - Z * spread) / total)
        return one_answer_error(apart)  # an answer is held to one label, not to a pair

    def bound(self) -> float:
        """The bound the audits hold answers to: ``max_error`` above the LLM's floor."""
        return min(0.5, self.max_error + round(self.floor(), 2))

    def self_disagreement(self) -> dict:
        """How often the LLM path labels near-duplicate texts apart (see
        :func:`self_disagreement`)."""
        return self_disagreement(self.cache_thresholds, self.judge)

    def warning(self) -> str | None:
        """Why every item goes to the LLM, when a trained head and enough audits still
        certify nothing, and what to do about it."""
        parts = (self.head_thresholds, self.cache_thresholds)
        if self.head is None or not all(p.ready for p in parts):
            return None
        if any(not math.isinf(p.threshold_for(-1)) for p in parts):
            return None
        best = [p.lowest_error(self.judge) for p in parts]
        if any(b is None for b in best):
            return None
        own = self.self_disagreement()["llm_error"]
        floor = self.bound() - self.max_error
        return _warning(self.max_error, floor, cast(list[float], best), own)


def _near_duplicate_bins(cache: AuditedThresholds) -> np.ndarray:
    return np.array([plain(t)[0] >= NEAR_DUPLICATE - 1e-9 for t in cache.grid])


def self_disagreement(cache: AuditedThresholds, judge) -> dict:
    """How often the LLM path labels near-duplicate texts apart (the cache's audits
    at similarity >= :data:`NEAR_DUPLICATE`), with its 95% interval, and the LLM's own
    error that implies: two answers, each wrong with chance e independently, differ
    with chance 1 - (1 - e)², so e = 1 - sqrt(1 - rate). An answer that is always
    right still disagrees with such an LLM e of the time: no bound below e holds."""
    _, audited, wrong = cache.counts(judge)
    near = _near_duplicate_bins(cache)
    n, e = int(audited[near].sum()), int(wrong[near].sum())
    if not n:
        return {"near_duplicate_audits": 0, "rate": None, "llm_error": None}
    low, high = wilson_interval(e, n)
    own = [round(one_answer_error(x), 4) for x in (e / n, low, high)]
    return {
        "near_duplicate_audits": n,
        "rate": round(e / n, 4),
        "interval_95": [round(low, 4), round(high, 4)],
        "llm_error": own[0],
        "llm_error_interval_95": own[1:],
    }


def one_answer_error(apart: float) -> float:
    """The error e of one label, from the rate at which two labels, each wrong e of the
    time independently, differ: 1 - (1 - e)² of the time (about 2e)."""
    return 1.0 - math.sqrt(1.0 - min(max(apart, 0.0), 1.0))


def _warning(max_error: float, floor: float, best: list[float], own: float | None) -> str:
    """The summary's warning when nothing is certified: the bound (``max_error`` above
    the LLM's ``floor``), the head's and the cache's best disagreement (``best``), the
    LLM's own error, and what to do."""
    return (
        f"no answer without the LLM is certified at max_error {max_error:.0%}"
        + (f" above the LLM's floor of {floor:.0%}" if floor > 0 else "")
        + ", so every item goes to the LLM: the head's most confident answers disagree "
        f"with the LLM path {best[0]:.0%} of the time, the cache's {best[1]:.0%}"
        + (f", and near-duplicates put the LLM's own error near {own:.0%}" if own else "")
        + f". Raise --max-error (CANONLABEL_MAX_ERROR) above {min(best) - floor:.0%}, "
        "use a more consistent LLM, or set CANONLABEL_ROUTER=0 for the fixed cache rule"
    )


def item_ref(item: int) -> int:
    """How an audit refers to an item's label as it stands when judged (rather than to
    a label id): a negative number, so the two share the audits' integer fields."""
    return -item - 1


def referred_item(ref: int) -> int | None:
    """The item an audit's reference names (None for a label id)."""
    return -ref - 1 if ref < 0 else None


def _disputes(score: float, least: float) -> bool:
    """Whether a disagreeing audit at (laned) ``score`` is disputed: in the agreeing
    lane (the head and the nearest neighbour said the same, against the LLM's answer),
    from ``least`` on."""
    value, agreeing = plain(score)
    return agreeing and value >= least


class _Fitted(NamedTuple):
    """A head fitted in the background, with the cache's item ids it learned from and
    the out-of-fold predictions that audit it (None when folds were too small)."""

    head: SoftmaxHead
    keys: np.ndarray
    judged: CrossFit | None


class _Reservoir:
    """A uniform sample (fixed seed) of at most ``capacity`` (label id, vector) pairs."""

    def __init__(self, dim: int, capacity: int) -> None:
        self.capacity = capacity
        self.labels = np.zeros(0, dtype=np.int64)
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.n = 0  # pairs held
        self.seen = 0  # pairs offered
        self._rng = np.random.default_rng(0)

    def add(self, label_ids, vectors) -> None:
        for label, vector in zip(label_ids, vectors, strict=True):
            self.seen += 1
            if self.n < self.capacity:
                if self.n == len(self.labels):
                    self._grow()
                slot, self.n = self.n, self.n + 1
            else:
                slot = int(self._rng.integers(self.seen))
                if slot >= self.capacity:
                    continue
            self.labels[slot], self.vectors[slot] = int(label), vector

    def _grow(self) -> None:
        cap = min(self.capacity, max(1024, 2 * len(self.labels)))
        vectors = np.zeros((cap, self.vectors.shape[1]), dtype=np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        self.vectors = vectors
        self.labels = np.concatenate([self.labels, np.zeros(cap - len(self.labels), np.int64)])

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.labels[: self.n].copy(), self.vectors[: self.n].copy()
