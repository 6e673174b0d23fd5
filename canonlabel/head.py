"""The router's head, and how it is judged on items it was not trained on.

A head fitted on every labelled item cannot be audited on those items (it has seen their
labels), and audits of the heads before it judge a weaker model: on Banking77 at 10% wrong
answers, 3,000 texts in, the audits of all earlier heads certified nothing below 0.8
confidence in the agreeing lane while the head then in use, judged out of fold on the same
items, kept 3.3% errors against gold over 73% of the later texts. So each fit also
*cross-fits*: ``folds`` heads, each on all but one fold, predict the fold they left out
(:func:`cross_fit`). Their predictions audit the new head's kind of model on every
LLM-answered item, judged by that item's label as it stands (so a consolidation that
corrects an answer re-judges its audit).
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np

from canonlabel.blas import small_product

FOLDS = 4  # each fold head learns from 3/4 of the items: a little weaker, so conservative
_CHUNK = 2048


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
        with small_product(len(X), len(self.coef_), X.shape[1]):
            z = X @ self.coef_.T + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, classes=self.classes_, coef=self.coef_, intercept=self.intercept_)
        return buf.getvalue()


class CrossFit(NamedTuple):
    """Out-of-fold predictions for the rows of a training snapshot."""

    guess: np.ndarray  # (N,) label id the fold head that left the row out gives it
    confidence: np.ndarray  # (N,) that head's top probability
    near: np.ndarray  # (N,) label id of the row's nearest *other* cached row


def cross_fit(
    X: np.ndarray, y: np.ndarray, trainable: np.ndarray, cached: int, folds: int = FOLDS
) -> CrossFit | None:
    """Predict every row of ``X`` (labels ``y``) with a head that did not learn it.

    ``trainable`` marks the rows a head may learn (labels with enough support); the
    first ``cached`` rows are the semantic cache (LLM answers), whose nearest other row
    gives each row its lane. None when a fold would leave fewer than two labels, or
    there is no cached row to audit."""
    n = len(X)
    if cached < 2:
        return None
    fold = np.random.default_rng(n).permutation(n) % folds
    guess, confidence = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32)
    for k in range(folds):
        learn = trainable & (fold != k)
        if len(np.unique(y[learn])) < 2:
            return None
        head = SoftmaxHead().fit(X[learn], y[learn])
        rows = np.flatnonzero(fold == k)
        P = head.predict_proba(X[rows])
        guess[rows] = head.classes_[P.argmax(axis=1)]
        confidence[rows] = P.max(axis=1)
    return CrossFit(guess, confidence, y[:cached][nearest_other(X, cached)])


def nearest_other(X: np.ndarray, cached: int) -> np.ndarray:
    """Index among the first ``cached`` rows of each row's nearest row, never itself."""
    pool = X[:cached]
    out = np.zeros(len(X), dtype=np.int64)
    for start in range(0, len(X), _CHUNK):
        sims = X[start : start + _CHUNK] @ pool.T
        own = np.arange(start, min(start + _CHUNK, cached))
        sims[own - start, own] = -np.inf
        out[start : start + len(sims)] = sims.argmax(axis=1)
    return out
