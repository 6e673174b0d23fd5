"""Consolidation cost: how long one order-invariant pass takes as the store grows.

    .venv/bin/python benchmarks/consolidation.py --data banking77:train:10000

Streams the texts (shuffled, chunks of 64, simulated accurate-but-inconsistent LLM,
MiniLM) with periodic consolidation off, then times (1) the first consolidation over the
whole store, the worst case: every raw label is regrouped, moved and logged, and (2) a
second pass over the already consolidated store, what a periodic run costs. Reported with
the raw-label count, since the pass is O(R²) in raw labels and linear in items.
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


def measure(data: EvalData, gold: list[str]) -> dict:
    order = list(range(len(data.texts)))
    random.Random(0).shuffle(order)
    llm = SimulatedLLM(dict(zip(data.texts, gold)))
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(db=Path(tmp) / "c.db", consolidate_every=0, router=False)
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
        "moved_raw_labels": first["moved_raw_labels"],
        "second_pass_seconds": round(again_s, 2),
        "second_pass_changes": again["moved_raw_labels"] + again["merged_labels"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="banking77:train:3000,banking77:train:10000")
    ap.add_argument("--out", default="benchmarks/results/consolidation.json")
    args = ap.parse_args()
    embedder = make_embedder("minilm", Settings())
    out = []
    for spec in args.data.split(","):
        name, texts, gold = load(spec)
        row = {"data": name} | measure(EvalData.build(texts, gold, embedder), gold)
        print(json.dumps(row), flush=True)
        out.append(row)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
