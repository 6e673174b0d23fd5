"""A tiny multi-label classifier on embeddings, distilled from LLM (or gold) labels.

Follows scikit-learn conventions: ``__init__`` stores parameters, ``fit`` returns self,
learned attributes end in ``_``. Heads: one-vs-rest logistic regression (scikit-learn)
or a one-hidden-layer MLP with sigmoid outputs (torch, trained in a few seconds on CPU).
Prediction is plain numpy. A decision threshold per label is tuned on a validation
split. Saved as ``weights.npz`` + ``meta.json``; never pickle.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from canonlabel.errors import CanonlabelError, ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from canonlabel.config import Settings
    from canonlabel.io import JobIO, Record

FORMAT_VERSION = 1


class NotFittedError(CanonlabelError, ValueError):
    """The model is used before ``fit`` or ``load``."""


class DataWarning(UserWarning):
    """The training data breaks a rule of thumb (too few examples)."""


def check_training_data(label_sets: Sequence[Sequence[str]], min_per_label: int = 5) -> list[str]:
    """Practitioners' rules of thumb; returns the warnings (also issued as DataWarning)."""
    counts = Counter(x for s in label_sets for x in s)
    messages = []
    rare = sorted(k for k, v in counts.items() if v < min_per_label)
    if rare:
        messages.append(
            f"{len(rare)} labels have fewer than {min_per_label} examples "
            f"({', '.join(rare[:5])}{'...' if len(rare) > 5 else ''}): their "
            "thresholds and recall will be unreliable; annotate more or merge them"
        )
    n = len(counts)
    if len(label_sets) < n * n:
        messages.append(
            f"{len(label_sets)} examples for {n} labels is fewer than about "
            f"N^2 = {n * n}; expect weak results on rare labels"
        )
    for m in messages:
        warnings.warn(m, DataWarning, stacklevel=2)
    return messages


class DistilledClassifier:
    """Multi-label classifier over embedding vectors (or texts, given an embedder).

    Parameters: ``model`` ("logreg" | "mlp"), ``C`` (logreg inverse regularisation),
    ``hidden`` / ``epochs`` / ``lr`` (mlp), ``seed``.
    Learned: ``classes_``, ``coef_``/``intercept_`` or ``layers_``, ``thresholds_``,
    ``metrics_``.
    """

    def __init__(
        self,
        model: str = "logreg",
        *,
        C: float = 4.0,
        hidden: int = 256,
        epochs: int = 60,
        lr: float = 3e-3,
        seed: int = 0,
        embedder=None,
        embedder_id: str | None = None,
    ) -> None:
        self.model = model
        self.C = C
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.seed = seed
        self.embedder = embedder
        self.embedder_id = embedder_id

    # -- training ---------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        label_sets: Sequence[Sequence[str]],
        *,
        X_val: np.ndarray | None = None,
        val_sets: Sequence[Sequence[str]] | None = None,
    ) -> DistilledClassifier:
        """Train on vectors ``X`` (n, d) and label lists; tune thresholds on the
        validation data when given (else 0.5)."""
        if self.model not in ("logreg", "mlp"):
            raise ConfigError(f"unknown model {self.model!r}; use logreg or mlp")
        X = np.asarray(X, dtype=np.float32)
        self.classes_ = sorted({x for s in label_sets for x in s})
        if len(self.classes_) < 2:
            raise ConfigError("training data needs at least two distinct labels")
        Y = self._binarize(label_sets)
        start = time.perf_counter()
        if self.model == "logreg":
            self._fit_logreg(X, Y)
        else:
            self._fit_mlp(X, Y)
        self.fit_seconds_ = round(time.perf_counter() - start, 2)
        self.thresholds_ = np.full(len(self.classes_), 0.5, dtype=np.float32)
        self.metrics_: dict = {}
        if X_val is not None and val_sets is not None and len(X_val):
            Yv = self._binarize(val_sets)
            P = self.predict_proba(X_val)
            self.thresholds_ = tune_thresholds(P, Yv)
            self.metrics_ = multilabel_metrics(P, Yv, self.thresholds_)
        return self

    def _binarize(self, label_sets) -> np.ndarray:
        col = {c: i for i, c in enumerate(self.classes_)}
        Y = np.zeros((len(label_sets), len(self.classes_)), dtype=np.float32)
        for i, s in enumerate(label_sets):
            for x in s:
                if x in col:
                    Y[i, col[x]] = 1
        return Y

    def _fit_logreg(self, X, Y) -> None:
        from sklearn.linear_model import LogisticRegression

        coef = np.zeros((Y.shape[1], X.shape[1]), dtype=np.float32)
        intercept = np.zeros(Y.shape[1], dtype=np.float32)
        for j in range(Y.shape[1]):
            y = Y[:, j]
            if y.min() == y.max():  # a label on every (or no) row: a constant
                intercept[j] = 10.0 if y[0] else -10.0
                continue
            lr = LogisticRegression(C=self.C, max_iter=500, class_weight="balanced")
            lr.fit(X, y)
            coef[j], intercept[j] = lr.coef_[0], lr.intercept_[0]
        self.coef_, self.intercept_ = coef, intercept

    def _fit_mlp(self, X, Y) -> None:
        import torch

        torch.manual_seed(self.seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], self.hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(self.hidden, Y.shape[1]),
        )
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=1e-4)
        xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
        pos = yt.mean(0).clamp(min=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=((1 - pos) / pos).clamp(max=50))
        gen = torch.Generator().manual_seed(self.seed)
        net.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(128):
                opt.zero_grad()
                loss_fn(net(xt[idx]), yt[idx]).backward()
                opt.step()
        net.eval()
        first, last = cast(torch.nn.Linear, net[0]), cast(torch.nn.Linear, net[3])
        self.layers_ = [
            (first.weight.detach().numpy().T.copy(), first.bias.detach().numpy()),
            (last.weight.detach().numpy().T.copy(), last.bias.detach().numpy()),
        ]

    # -- prediction -------------------------------------------------------------------
    def _check(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                "This DistilledClassifier is not fitted yet. Call 'fit' "
                "with appropriate arguments, or DistilledClassifier.load(dir)."
            )

    def _vectors(self, X) -> np.ndarray:
        if len(X) and isinstance(X[0], str):
            if self.embedder is None:
                raise ConfigError(
                    "texts need an embedder: DistilledClassifier.load(dir, "
                    "embedder=...) or pass vectors"
                )
            return self.embedder.embed(list(X))
        return np.asarray(X, dtype=np.float32)

    def decision_function(self, X) -> np.ndarray:
        self._check()
        X = self._vectors(X)
        if self.model == "logreg":
            return X @ self.coef_.T + self.intercept_
        (w1, b1), (w2, b2) = self.layers_
        return np.maximum(X @ w1 + b1, 0) @ w2 + b2

    def predict_proba(self, X) -> np.ndarray:
        """Per-label probabilities, shape (n, n_labels), columns in ``classes_`` order."""
        z = np.clip(self.decision_function(X), -30, 30)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def predict(self, X, *, at_least_one: bool = True) -> list[list[str]]:
        """Labels above their thresholds (the top label if none, unless disabled)."""
        P = self.predict_proba(X)
        out = []
        for row in P:
            picked = np.flatnonzero(row >= self.thresholds_)
            picked = picked[np.argsort(-row[picked])]
            if not len(picked) and at_least_one:
                out.append([self.classes_[int(row.argmax())]])
                continue
            out.append([self.classes_[j] for j in picked])
        return out

    # -- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        self._check()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"thresholds": self.thresholds_}
        if self.model == "logreg":
            arrays |= {"coef": self.coef_, "intercept": self.intercept_}
        else:
            (w1, b1), (w2, b2) = self.layers_
            arrays |= {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
        np.savez(d / "weights.npz", **arrays)
        from canonlabel import __version__

        meta = {
            "format": FORMAT_VERSION,
            "model": self.model,
            "labels": self.classes_,
            "embedder": self.embedder_id,
            "metrics": self.metrics_,
            "params": {
                "C": self.C,
                "hidden": self.hidden,
                "epochs": self.epochs,
                "lr": self.lr,
                "seed": self.seed,
            },
            "fit_seconds": getattr(self, "fit_seconds_", None),
            "canonlabel_version": __version__,
        }
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path, *, embedder=None) -> DistilledClassifier:
        d = Path(directory)
        try:
            meta = json.loads((d / "meta.json").read_text())
            weights = np.load(d / "weights.npz", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{d} is not a canonlabel model directory (meta.json + weights.npz): {exc}"
            ) from exc
        if meta.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{d} has model format {meta.get('format')}; retrain it")
        if embedder is not None and meta.get("embedder") not in (None, embedder.id):
            raise ConfigError(
                f"model was trained on {meta['embedder']} vectors but the "
                f"embedder is {embedder.id}; use --embedder {meta['embedder']}"
            )
        obj = cls(
            meta["model"],
            embedder=embedder,
            embedder_id=meta.get("embedder"),
            **meta.get("params", {}),
        )
        obj.classes_ = list(meta["labels"])
        obj.thresholds_ = weights["thresholds"]
        obj.metrics_ = meta.get("metrics", {})
        if obj.model == "logreg":
            obj.coef_, obj.intercept_ = weights["coef"], weights["intercept"]
        else:
            obj.layers_ = [(weights["w1"], weights["b1"]), (weights["w2"], weights["b2"])]
        return obj


def tune_thresholds(P: np.ndarray, Y: np.ndarray, grid=np.arange(0.05, 0.96, 0.05)) -> np.ndarray:
    """Per label, the threshold maximising F1 on validation data (0.5 without positives)."""
    out = np.full(P.shape[1], 0.5, dtype=np.float32)
    for j in range(P.shape[1]):
        y = Y[:, j] > 0
        if not y.any():
            continue
        best, best_f1 = 0.5, -1.0
        for t in grid:
            pred = P[:, j] >= t
            tp = (pred & y).sum()
            f1 = 2 * tp / max(1, pred.sum() + y.sum())
            if f1 > best_f1:
                best, best_f1 = float(t), f1
        out[j] = best
    return out


def multilabel_metrics(P: np.ndarray, Y: np.ndarray, thresholds: np.ndarray) -> dict:
    pred = thresholds <= P
    none = ~pred.any(1)
    pred[none, P[none].argmax(1)] = True  # at least one label, as predict() does
    y = Y > 0
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)
    per = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
    present = y.any(0)
    single = y.sum(1) == 1
    top1 = P.argmax(1)
    return {
        "micro_f1": round(float(2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())), 4),
        "macro_f1": round(float(per[present].mean()) if present.any() else 0.0, 4),
        "exact_match": round(float((pred == y).all(1).mean()), 4),
        "top1_accuracy": round(float(y[np.arange(len(y)), top1][single].mean()), 4)
        if single.any()
        else None,
        "n": len(y),
    }


# -- the train and predict jobs ------------------------------------------------------


@dataclass(frozen=True)
class TrainOptions:
    """The ``train`` command's choices: the head, the validation share, the rows."""

    model: str = "logreg"  # logreg | mlp
    val: float = 0.2  # validation share, for the thresholds
    split: str | None = None  # only rows of this split
    limit: int | None = None
    seed: int = 0  # shuffles the rows (before ``limit``) and seeds the head
    text_field: str = "text"
    labels_field: str = "labels"


def run_train(
    annotated: str,
    output: Path,
    settings: Settings,
    options: TrainOptions,
    *,
    console: Console | None = None,
) -> dict:
    """The ``train`` job: fit a head on the embeddings of the labelled texts of
    ``annotated`` and save it to the directory ``output``; returns the summary."""
    from rich.console import Console

    from canonlabel.embed import make_embedder
    from canonlabel.embed.cache import cached
    from canonlabel.io import read_labelled

    console = console or Console(stderr=True)
    texts, golds = read_labelled(
        annotated,
        text_field=options.text_field,
        labels_field=options.labels_field,
        split=options.split,
        limit=options.limit,
        shuffle_seed=options.seed,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        check_training_data(golds)
    for w in caught:
        console.print(f"[yellow]warning:[/] {w.message}", soft_wrap=True)
    emb = cached(make_embedder(settings.embedder, settings), settings.cache_dir)
    with console.status(f"embedding {len(texts)} texts..."):
        X = emb.embed(texts)
    n_val = int(len(texts) * options.val)
    clf = DistilledClassifier(options.model, seed=options.seed, embedder_id=emb.id)
    with console.status(f"training {options.model}..."):
        clf.fit(
            X[n_val:],
            golds[n_val:],
            X_val=X[:n_val] if n_val else None,
            val_sets=golds[:n_val] if n_val else None,
        )
    clf.save(output)
    return {
        "model": str(output),
        "labels": len(clf.classes_),
        "train": len(texts) - n_val,
        "val": n_val,
        "fit_seconds": clf.fit_seconds_,
        "val_metrics": clf.metrics_,
    }


def run_predict(model_dir: Path, files: JobIO, settings: Settings, *, top: int = 3) -> None:
    """The ``predict`` job: per input record, the labels of the model in ``model_dir``
    above their thresholds (at least the most probable) and the ``top`` probabilities;
    a record without a usable text gets its error instead."""
    from canonlabel.embed import make_embedder

    model = DistilledClassifier.load(model_dir, embedder=make_embedder(settings.embedder, settings))
    records = list(files.records())
    with files.writer() as sink:
        for start in range(0, len(records), 1024):
            sink.write_many(_predicted(model, records[start : start + 1024], settings, top))


def _predicted(
    model: DistilledClassifier, chunk: list[Record], settings: Settings, top: int
) -> list[dict[str, object]]:
    """The output rows of ``chunk``, predicted together."""
    from canonlabel.io import usable_text

    good, rows = [], []
    for r in chunk:
        row: dict[str, object] = {"id": r.id or f"line:{r.line}", "text": r.text}
        try:
            good.append(usable_text(r, settings.max_chars))
        except CanonlabelError as exc:
            row["error"] = str(exc)
        rows.append(row)
    P = model.predict_proba(good) if good else None
    it = iter(range(len(good)))
    for row in rows:
        if "error" not in row:
            assert P is not None  # a row without an error means ``good`` is not empty
            p = P[next(it)]
            order = p.argsort()[::-1]
            picked = [model.classes_[j] for j in order if p[j] >= model.thresholds_[j]]
            order = order[:top]
            row |= {
                "labels": picked or [model.classes_[int(order[0])]],
                "top": [[model.classes_[j], round(float(p[j]), 4)] for j in order],
            }
    return rows
