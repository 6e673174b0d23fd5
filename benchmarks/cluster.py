"""Cluster-then-name and fixed categories vs gold labels; cluster speed on 10K texts.

    .venv/bin/python benchmarks/cluster.py --out benchmarks/results/cluster.json

Banking77 test (3,080) and TweetEval emotion test (1,421): `cluster` with HDBSCAN and with
k-means (k = gold count), naming clusters with the bundled LLM; fixed categories built from
the gold label names (description = the name in words), no LLM. Speed: `cluster` on the
10,003 Banking77 train texts with an instant fake namer (LLM time excluded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonlabel import categories as cat
from canonlabel.cluster import cluster_texts
from canonlabel.config import Settings
from canonlabel.embed import make_embedder
from canonlabel.embed.cache import cached
from canonlabel.io import read_labelled
from canonlabel.llm import make_labeler
from canonlabel.metrics import clustering_scores
from canonlabel.testing import FakeLabeler

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def fixed_categories(texts, gold, embedder) -> dict:
    names = sorted(set(gold))
    desc = embedder.embed([n.replace("_", " ").strip("?").lower() for n in names])
    index = cat.CategoryIndex(names, desc, np.zeros_like(desc), np.zeros(len(names), bool))
    start = time.perf_counter()
    got = cat.assign(index, embedder.embed(texts), texts, min_similarity=-1.0)
    pred = [a.categories[0] for a in got]
    acc = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    return {
        "accuracy": round(acc, 4),
        **clustering_scores(gold, pred),
        "llm_calls": 0,
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llm", default="local")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    settings = Settings(llm_cache=Path(__file__).parent / ".llm-cache.db")
    embedder = cached(make_embedder("minilm"), settings.cache_dir)
    labeler = make_labeler(args.llm, settings)
    report: dict = {"llm": labeler.id, "embedder": embedder.id}
    for name in ("banking77", "tweeteval_emotion"):
        texts, golds = read_labelled(str(DATA / f"{name}.jsonl"), split="test")
        gold = [g[0] for g in golds]
        out = {"items": len(texts), "gold_labels": len(set(gold))}
        for method, k in (("hdbscan", None), ("kmeans", len(set(gold)))):
            start = time.perf_counter()
            r = cluster_texts(texts, embedder, labeler, method=method, k=k)
            seconds = time.perf_counter() - start
            out[f"cluster_{method}"] = {
                **clustering_scores(gold, r.labels),
                "clusters": len(r.info),
                "llm_calls": r.llm_calls,
                "unclustered": r.unclustered,
                "noise_assigned": r.noise_assigned,
                "seconds": round(seconds, 1),
            }
            print(name, method, out[f"cluster_{method}"], flush=True)
        out["fixed_categories_gold_names"] = fixed_categories(texts, gold, embedder)
        print(name, "fixed", out["fixed_categories_gold_names"], flush=True)
        report[name] = out
    texts, _ = read_labelled(str(DATA / "banking77.jsonl"), split="train")
    base = make_embedder("minilm")
    for method, k in (("kmeans", 77), ("hdbscan", None)):
        start = time.perf_counter()
        r = cluster_texts(texts, base, FakeLabeler(), method=method, k=k)
        report[f"speed_10k_{method}"] = {
            "texts": len(texts),
            "clusters": len(r.info),
            "seconds": round(time.perf_counter() - start, 1),
            "note": "embedding included, LLM excluded (fake)",
        }
        print(report[f"speed_10k_{method}"], flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
