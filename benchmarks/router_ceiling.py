"""How much of a stream *could* a head on embeddings answer at an error bound?

    .venv/bin/python benchmarks/router_ceiling.py [--data banking77:train:10000] [--max-error 0.05]

An upper bound for the online router, with everything in its favour: the head is trained
on *gold* labels (a perfectly consistent LLM and label space), and its threshold is chosen
with hindsight on the test items themselves (no audits, no confidence bound). For each
number of labelled items it reports the head's accuracy and the share of later items it
could answer with at most ``--max-error`` of them wrong, scored by top probability and by
margin, and in the router's two lanes (items whose nearest labelled neighbour agrees
with the head first, each lane by top probability: what the online router's lanes can
reach at best). The LLM calls a stream needs at that bound are at least the labelled
items plus the uncovered share of the rest, which says what a target such as "8% of
10,000 items" asks of the head.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.consistency import load
from canonlabel import Settings
from canonlabel.embed import make_embedder
from canonlabel.router import SoftmaxHead


def coverage(score: np.ndarray, correct: np.ndarray, max_error: float) -> float:
    """Largest share of items, most confident first, with at most ``max_error`` wrong."""
    order = np.argsort(-score, kind="stable")
    wrong = np.cumsum(~correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(wrong <= max_error)
    return float((ok.max() + 1) / len(order)) if len(ok) else 0.0


def stream_floor(rows: list[dict], items: int, key: str = "coverage_top_probability") -> dict:
    """LLM calls a stream of ``items`` would still need if, after each item, the head were
    trained on every earlier item's gold label: the uncovered share at each point, with
    coverage interpolated between the measured numbers of labelled items (and none
    before the first)."""
    known = [0] + [r["labelled"] for r in rows]
    cover = [0.0] + [r[key] for r in rows]
    uncovered = 1.0 - np.interp(np.arange(items), known, cover)
    last = uncovered[-2000:]
    return {
        "stream_items": items,
        "stream_min_llm_share": round(float(uncovered.mean()), 4),
        "stream_min_llm_share_last_2000": round(float(last.mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="banking77:train:10000")
    ap.add_argument("--max-error", type=float, default=0.05)
    ap.add_argument("--test", type=int, default=2000, help="held-out items scored")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name, texts, gold = load(args.data)
    embedder = make_embedder("minilm", Settings())
    X = np.asarray(embedder.embed(texts), dtype=np.float32)
    y = np.unique(gold, return_inverse=True)[1].astype(np.int64)
    test = slice(len(texts) - args.test, len(texts))
    rows = []
    for n in (250, 500, 1000, 2000, 4000, len(texts) - args.test):
        head = SoftmaxHead().fit(X[:n], y[:n])
        proba = head.predict_proba(X[test])
        top = np.sort(proba, axis=1)
        guess = head.classes_[proba.argmax(1)]
        correct = guess == y[test]
        agrees = y[:n][np.argmax(X[test] @ X[:n].T, axis=1)] == guess
        row = {
            "labelled": n,
            "accuracy": round(float(correct.mean()), 4),
            "coverage_top_probability": round(coverage(top[:, -1], correct, args.max_error), 4),
            "coverage_margin": round(coverage(top[:, -1] - top[:, -2], correct, args.max_error), 4),
            "coverage_lanes": round(
                coverage(top[:, -1] + 2.0 * agrees, correct, args.max_error), 4
            ),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(r["coverage_top_probability"] for r in rows)
    floor = stream_floor(rows, len(texts))
    lanes = {f"lanes_{k}": v for k, v in stream_floor(rows, len(texts), "coverage_lanes").items()}
    report = {"data": name, "max_error": args.max_error, "rows": rows, "best_coverage": best}
    report |= floor | lanes
    print(json.dumps(floor | lanes))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
