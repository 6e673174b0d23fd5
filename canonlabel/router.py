"""The self-training router: a head on embeddings that answers confident items without
the LLM, with per-label thresholds learned from audits under a user-set error bound.

* **Head.** Multinomial logistic regression on the semantic cache (every LLM-answered
  item, by its *current* canonical label), refitted in a background thread every
  ``router_retrain_every`` new items; the fitted head replaces the old one in one
  assignment, so a request never waits for training. Each version is kept in the store.
* **Audits.** Every item that goes to the LLM anyway is a free audit: the router's guess
  for it is compared with the label the LLM path gives. A random ``audit_rate`` share of
  the items the router *would* answer also go to the LLM (counted as LLM calls): they keep
  the estimate honest where the router answers, and a disagreeing one corrects its item.
* **Thresholds.** For each label, the lowest confidence ``t`` such that, among the audits
  of that label with confidence >= ``t``, the Wilson upper bound (95%) of disagreement is
  at most ``max_error``; labels with too few audits use the bound pooled over all labels.
  A disagreeing audit therefore raises (tightens) its label's threshold at once.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

Z = 1.96  # 95% one-sided-ish Wilson bound, as vCache-style guarantees use
GRID = np.round(np.arange(0.30, 1.0001, 0.02), 2)


def wilson_upper(errors: int, n: int, z: float = Z) -> float:
    """Upper Wilson score bound of an error rate seen as ``errors`` of ``n``."""
    if n == 0:
        return 1.0
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


class SoftmaxHead:
    """Multinomial logistic regression (scikit-learn conventions; numpy prediction)."""

    def __init__(self, C: float = 32.0, max_iter: int = 200) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> SoftmaxHead:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        model.fit(X, y)
        self.classes_ = model.classes_.astype(np.int64)
        self.coef_ = model.coef_.astype(np.float32)
        self.intercept_ = model.intercept_.astype(np.float32)
        if len(self.classes_) == 2:  # sklearn's binary form: one row
            self.coef_ = np.vstack([-self.coef_, self.coef_]) / 2
            self.intercept_ = np.array([-self.intercept_[0], self.intercept_[0]]) / 2
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = X @ self.coef_.T + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, classes=self.classes_, coef=self.coef_, intercept=self.intercept_)
        return buf.getvalue()


@dataclass
class Audits:
    """Audits as (router label, LLM-path label, confidence), grouped by the router label's
    current root. Agreement is judged with the label space *as it is now*: after a
    consolidation joins two variants, an audit that split them agrees."""

    by_label: dict[int, list[tuple[int, int, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    total: int = 0

    def add(self, root: int, guess: int, truth: int, confidence: float) -> None:
        self.by_label[root].append((guess, truth, confidence))
        self.total += 1

    def regroup(self, resolve) -> None:
        audits = [a for pairs in self.by_label.values() for a in pairs]
        self.by_label = defaultdict(list)
        for guess, truth, confidence in audits:
            self.by_label[resolve(guess)].append((guess, truth, confidence))

    def pairs(self, label: int, resolve) -> list[tuple[float, bool]]:
        return [(c, resolve(g) == resolve(t)) for g, t, c in self.by_label.get(label, ())]


def threshold(pairs: list[tuple[float, bool]], max_error: float, min_audits: int) -> float:
    """Lowest grid confidence whose audits above it keep the error bound (inf if none)."""
    if len(pairs) < min_audits:
        return math.inf
    conf = np.array([c for c, _ in pairs])
    wrong = np.array([not a for _, a in pairs])
    for t in GRID:
        above = conf >= t
        n = int(above.sum())
        if n < min_audits:
            return math.inf
        if wilson_upper(int(wrong[above].sum()), n) <= max_error:
            return float(t)
    return math.inf


class Router:
    """Online head, audits and thresholds; used by the engine on its own thread."""

    def __init__(self, settings, space) -> None:
        self.settings, self.space = settings, space
        self.head: SoftmaxHead | None = None
        self.version = 0
        self.trained_on = 0
        self.audits = Audits()
        self._thresholds: dict[int, float] = {}
        self._pooled = math.inf
        self._training: threading.Thread | None = None
        self._fitted: tuple[SoftmaxHead, int] | None = None
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

    def threshold_for(self, label: int) -> float:
        own = self._thresholds.get(label)
        return own if own is not None else self._pooled

    def answers(self, label: int, confidence: float) -> bool:
        return label >= 0 and confidence >= self.threshold_for(label)

    # -- audits ---------------------------------------------------------------------------
    def audit(self, label: int, confidence: float, truth: int) -> bool:
        """Record one audit; returns whether the router agreed with the LLM path."""
        resolve = self.space.resolve
        self.audits.add(resolve(label), label, truth, confidence)
        self._update(resolve(label))
        if self.audits.total % 25 == 0:  # the pooled bound: every 25 audits is enough
            self._update_pooled()
        return resolve(label) == resolve(truth)

    def refresh(self) -> None:
        """After the label space changed (consolidation, curation): re-judge every audit."""
        self.audits.regroup(self.space.resolve)
        self._thresholds = {}
        for label in list(self.audits.by_label):
            self._update(label)
        self._update_pooled()

    def _update(self, label: int) -> None:
        s = self.settings
        pairs = self.audits.pairs(label, self.space.resolve)
        t = threshold(pairs, s.max_error, s.router_min_audits)
        if math.isinf(t):
            self._thresholds.pop(label, None)
        else:
            self._thresholds[label] = t

    def _update_pooled(self) -> None:
        s = self.settings
        every = [
            p
            for label in self.audits.by_label
            for p in self.audits.pairs(label, self.space.resolve)
        ]
        self._pooled = threshold(every, s.max_error, 4 * s.router_min_audits)

    def estimated_error(self) -> dict:
        """Disagreement of audits the router would have answered, with a Wilson bound."""
        n = wrong = 0
        for label in self.audits.by_label:
            t = self.threshold_for(label)
            for c, agreed in self.audits.pairs(label, self.space.resolve):
                if c >= t:
                    n += 1
                    wrong += not agreed
        return {
            "audits_in_answered_region": n,
            "error": round(wrong / n, 4) if n else None,
            "upper_95": round(wilson_upper(wrong, n), 4) if n else None,
        }

    # -- training -------------------------------------------------------------------------
    def due(self, labelled: int) -> bool:
        s = self.settings
        return (
            labelled >= s.router_min_items
            and labelled - self.trained_on >= s.router_retrain_every
            and self._training is None
        )

    def train(self, keys: np.ndarray, vectors: np.ndarray, store=None) -> None:
        """Fit a new head on a snapshot in a background thread (swapped in by predict)."""
        space, min_support = self.space, self.settings.router_min_support
        labels = np.array([space.resolve(space.item_label[int(k)]) for k in keys])
        values, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, values[counts >= min_support])
        if len(np.unique(labels[keep])) < 2:
            return
        X, y, n = vectors[keep].copy(), labels[keep], len(keys)
        self.trained_on = n

        def fit() -> None:
            start = time.perf_counter()
            head = SoftmaxHead().fit(X, y)
            self.train_seconds += time.perf_counter() - start
            self._fitted = (head, n)
            if store is not None:
                store.save_router(head.to_bytes(), {"items": n, "classes": len(head.classes_)})

        self._training = threading.Thread(target=fit, name="canonlabel-router", daemon=True)
        self._training.start()

    def wait(self) -> None:
        if self._training is not None:
            self._training.join()
            self._swap()

    def _swap(self) -> None:
        if self._fitted is not None:
            self.head, _ = self._fitted
            self._fitted = None
            self.version += 1
            self._training = None
        elif self._training is not None and not self._training.is_alive():
            self._training = None  # it found nothing to fit

    def summary(self) -> dict:
        return {
            "version": self.version,
            "trained_on": self.trained_on,
            "audits": self.audits.total,
            "labels_with_threshold": len(self._thresholds),
            "pooled_threshold": None if math.isinf(self._pooled) else self._pooled,
            **self.estimated_error(),
            "train_seconds": round(self.train_seconds, 2),
        }


def meta_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)
