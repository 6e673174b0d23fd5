"""Distilled-classifier benchmark: accuracy, F1, learning curve, speed (gold labels).

    .venv/bin/python benchmarks/distill.py --out benchmarks/results/distill.json

Banking77 (train 10,003 / test 3,080): top-1 accuracy of logreg and MLP heads on
all-MiniLM-L6-v2 embeddings, the learning curve at 10/25/50/100 examples per label, and
training time. NLU++ banking and GoEmotions (multi-label): micro/macro F1, exact match.
Speed: predictions/s from precomputed embeddings, and end to end (embedding included)
relative to the embedding model alone. Embeddings are cached in ~/.cache/canonlabel.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonlabel.config import Settings
from canonlabel.distill import DistilledClassifier, multilabel_metrics
from canonlabel.embed import make_embedder
from canonlabel.embed.cache import cached

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load(name: str, split: str):
    rows = [json.loads(x) for x in (DATA / f"{name}.jsonl").open()]
    rows = [r for r in rows if r["split"] == split and r["labels"]]
    return [r["text"] for r in rows], [r["labels"] for r in rows]


def evaluate(clf, X, Y) -> dict:
    P = clf.predict_proba(X)
    col = {c: i for i, c in enumerate(clf.classes_)}
    Yb = np.zeros_like(P)
    for i, s in enumerate(Y):
        for x in s:
            if x in col:
                Yb[i, col[x]] = 1
    return multilabel_metrics(P, Yb, clf.thresholds_)


def fit(model, Xtr, Ytr, seed=0, val=0.1):
    n_val = int(len(Xtr) * val)
    order = np.random.default_rng(seed).permutation(len(Xtr))
    Xtr, Ytr = Xtr[order], [Ytr[i] for i in order]
    start = time.perf_counter()
    clf = DistilledClassifier(model, seed=seed).fit(
        Xtr[n_val:], Ytr[n_val:], X_val=Xtr[:n_val], val_sets=Ytr[:n_val]
    )
    return clf, time.perf_counter() - start


def per_label_sample(Y, k, seed=0):
    by = defaultdict(list)
    for i, s in enumerate(Y):
        by[s[0]].append(i)
    rng = random.Random(seed)
    return sorted(i for idx in by.values() for i in rng.sample(idx, min(k, len(idx))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--skip-goemotions", action="store_true")
    args = ap.parse_args()
    settings = Settings()
    base = make_embedder("minilm")
    emb = cached(base, settings.cache_dir)
    report: dict = {"embedder": base.id}

    tr_t, tr_y = load("banking77", "train")
    te_t, te_y = load("banking77", "test")
    Xtr, Xte = emb.embed(tr_t), emb.embed(te_t)
    b77 = {}
    for model in ("logreg", "mlp"):
        clf, seconds = fit(model, Xtr, tr_y)
        m = evaluate(clf, Xte, te_y)
        b77[model] = {
            "accuracy": m["top1_accuracy"],
            "micro_f1": m["micro_f1"],
            "macro_f1": m["macro_f1"],
            "train_seconds": round(seconds, 1),
        }
        print(model, b77[model], flush=True)
    curve = {}
    for k in (10, 25, 50, 100):
        idx = per_label_sample(tr_y, k)
        clf, _ = fit("logreg", Xtr[idx], [tr_y[i] for i in idx], val=0.2)
        curve[k] = evaluate(clf, Xte, te_y)["top1_accuracy"]
        print("per label", k, curve[k], flush=True)
    b77["learning_curve_logreg"] = curve
    report["banking77"] = b77

    # speed: from precomputed embeddings, and end to end
    clf, _ = fit("logreg", Xtr, tr_y)
    big = np.tile(Xte, (10, 1))
    start = time.perf_counter()
    clf.predict(big)
    pred_rate = len(big) / (time.perf_counter() - start)
    sample = te_t[:1000]
    start = time.perf_counter()
    base.embed(sample)
    embed_rate = len(sample) / (time.perf_counter() - start)
    clf.embedder = base
    start = time.perf_counter()
    clf.predict(sample)
    e2e_rate = len(sample) / (time.perf_counter() - start)
    report["speed"] = {
        "predict_per_s_from_embeddings": round(pred_rate),
        "embed_per_s": round(embed_rate, 1),
        "end_to_end_per_s": round(e2e_rate, 1),
        "end_to_end_vs_embedding": round(e2e_rate / embed_rate, 3),
    }
    print(report["speed"], flush=True)

    sets = [("nlupp_banking", "train", "test")]
    if not args.skip_goemotions:
        sets.append(("goemotions", "train", "test"))
    for name, a, b in sets:
        tt, ty = load(name, a)
        st, sy = load(name, b)
        Xa, Xb = emb.embed(tt), emb.embed(st)
        out = {}
        for model in ("logreg", "mlp"):
            clf, seconds = fit(model, Xa, ty)
            m = evaluate(clf, Xb, sy)
            out[model] = {k: m[k] for k in ("micro_f1", "macro_f1", "exact_match")} | {
                "train_seconds": round(seconds, 1)
            }
        out["train"], out["test"] = len(tt), len(st)
        report[name] = out
        print(name, out, flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
