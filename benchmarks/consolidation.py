"""Consolidation cost: how long one order-invariant pass takes as the store grows.

    .venv/bin/python benchmarks/consolidation.py --data banking77:train:10000

Streams the texts (shuffled, chunks of 64, simulated accurate-but-inconsistent LLM,
MiniLM) with periodic consolidation off, then times (1) the first consolidation over the
whole store, the worst case: every raw label is regrouped, moved and logged, and (2) a
second pass over the already consolidated store, what a periodic run costs. Reported with
the raw-label count, since the pass is O(R²) in raw labels and linear in items.

    .venv/bin/python benchmarks/consolidation.py --synthetic 5000,20000,50000
    .venv/bin/python benchmarks/consolidation.py --by items [--synthetic 10000,100000]

times the grouping step alone on R synthetic raw labels (384-d name and member vectors
in tight topics of 5, as a large store would hold): above 4,000 units it runs per
connected component, in row blocks, and this reports its seconds and peak memory.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.consistency import load
from canonlabel import Classifier, Settings
from canonlabel.embed import make_embedder
from canonlabel.evaluate import EvalData
from canonlabel.testing import SimulatedLLM

CHUNK = 64


BY_ITEMS = {"consolidate_by": "items", "consolidate_name_weight": 0.0, "consolidate_threshold": 0.8}


def measure(data: EvalData, gold: list[str], by: str = "raw_labels") -> dict:
    order = list(range(len(data.texts)))
    random.Random(0).shuffle(order)
    llm = SimulatedLLM(dict(zip(data.texts, gold)))
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(db=Path(tmp) / "c.db", consolidate_every=0, router=False)
        s = s.model_copy(update=BY_ITEMS if by == "items" else {})
        clf = Classifier.open(settings=s, embedder=data.embedder, labeler=llm)
        for pos in range(0, len(order), CHUNK):
            chunk = order[pos : pos + CHUNK]
            clf.classify_many([data.texts[i] for i in chunk], [str(i) for i in chunk])
        start = time.perf_counter()
        first = clf.consolidate()
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = clf.consolidate()
        again_s = time.perf_counter() - start
        clf.close()
    return {
        "items": len(order),
        "raw_labels": first["raw_labels"],
        "labels_before": first["labels_before"],
        "labels_after": first["labels_after"],
        "first_pass_seconds": round(first_s, 2),
        "moved": first.get("moved_raw_labels", first.get("moved_items")),
        "second_pass_seconds": round(again_s, 2),
        "second_pass_changes": again.get("moved_raw_labels", again.get("moved_items"))
        + again["merged_labels"],
    } | ({"by": "items"} if by == "items" else {})


def synthetic(r: int, dim: int = 384, per_topic: int = 5, seed: int = 0) -> dict:
    """Seconds and peak resident memory of grouping ``r`` synthetic raw labels."""

    import numpy as np

    from canonlabel.labelspace.consolidate import group
    from canonlabel.labelspace.evidence import Evidence

    rng = np.random.default_rng(seed)
    axes = rng.standard_normal((r // per_topic + 1, dim)).astype(np.float32)
    topic = np.arange(r) // per_topic
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    names = unit(axes[topic] + 0.035 * rng.standard_normal((r, dim), dtype=np.float32))
    sums = 3 * unit(axes[topic] + 0.025 * rng.standard_normal((r, dim), dtype=np.float32))
    raws = [f"r{i:07d}" for i in range(r)]
    ev = Evidence(raws, np.arange(r) + 1, names, sums, np.full(r, 3.0), np.full(r, 3.0))
    ev.cores, ev.core = raws, names
    assigned, cost = _timed(lambda: group(ev, set()))
    return {
        "raw_labels": r,
        "groups": len(np.unique(assigned)),
        "topics": int(topic.max() + 1),
    } | cost


def _timed(fn) -> tuple:
    """``fn()``, with its seconds and the growth of this process's peak resident memory."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = fn()
    return out, {
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_growth_mb": round(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 1
        ),
    }


def synthetic_items(n: int, dim: int = 384, per_topic: int = 50, seed: int = 0) -> dict:
    """Seconds and peak resident memory of clustering ``n`` synthetic items by Ward's
    criterion with the coherence cut (grouping by items; reduced first beyond 8,000)."""

    import numpy as np

    from canonlabel.labelspace.regroup import cluster

    rng = np.random.default_rng(seed)
    axes = rng.standard_normal((n // per_topic + 1, dim)).astype(np.float32)
    topic = np.arange(n) // per_topic
    x = axes[topic] / np.sqrt(dim) + 0.03 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assigned, cost = _timed(lambda: cluster(x, 0.8))
    return {"items": n, "labels": len(np.unique(assigned)), "topics": int(topic.max() + 1)} | cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="banking77:train:3000,banking77:train:10000")
    ap.add_argument("--out", default="benchmarks/results/consolidation.json")
    ap.add_argument("--synthetic", default=None, help="raw-label counts: time grouping alone")
    ap.add_argument("--by", default="raw_labels", choices=["raw_labels", "items"])
    args = ap.parse_args()
    if args.synthetic:
        one = synthetic_items if args.by == "items" else synthetic
        rows = [one(int(r)) for r in args.synthetic.split(",")]
        for row in rows:
            print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        return
    embedder = make_embedder("minilm", Settings())
    out = []
    for spec in args.data.split(","):
        name, texts, gold = load(spec)
        row = {"data": name} | measure(EvalData.build(texts, gold, embedder), gold, args.by)
        print(json.dumps(row), flush=True)
        out.append(row)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
