"""Streaming benchmark: canonlabel's pipeline on Banking77 with the default local stack.

    .venv/bin/python benchmarks/stream.py                       # first 2,000 train texts
    .venv/bin/python benchmarks/stream.py --n 1000 --shuffle --compare-seed

Prints and writes JSON: items/s, LLM calls, hit rate after 500/1,000/2,000 items,
raw vs canonical label counts, p50/p95 latency per source, time per stage, peak
memory, NMI/ARI against the gold intents; then the batched overhead (everything but
the embedding model and the LLM, relative to embedding time) with an instant fake LLM,
and single-item exact/semantic hit latency.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonlabel import Classifier, Settings
from canonlabel.embed import make_embedder
from canonlabel.llm import make_labeler
from canonlabel.testing import FakeLabeler

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77.jsonl"


def load(path: Path, split: str, n: int, shuffle: bool, seed: int):
    rows = [json.loads(line) for line in path.open()]
    rows = [r for r in rows if r["split"] == split]
    if shuffle:
        random.Random(seed).shuffle(rows)
    return rows[:n]


def pct(values, q):
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def clustering_scores(gold, pred):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    keep = [i for i, p in enumerate(pred) if p is not None]
    g = [gold[i] for i in keep]
    p = [pred[i] for i in keep]
    return {
        "nmi": round(normalized_mutual_info_score(g, p), 4),
        "ari": round(adjusted_rand_score(g, p), 4),
    }


def run_stream(rows, settings, embedder, labeler):
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings.model_copy(update={"db": Path(tmp) / "bench.db"})
        clf = Classifier.open(settings=settings, embedder=embedder, labeler=labeler)
        latency, stages = defaultdict(list), Counter()
        results, checkpoints = [], {}
        start = time.perf_counter()
        for i, row in enumerate(rows, 1):
            t = time.perf_counter()
            result = clf.classify_many([row["text"]], [row["id"]])[0]
            latency[result.source or "failed"].append(time.perf_counter() - t)
            for stage, seconds in result.timings.items():
                stages[stage] += seconds
            results.append(result)
            if i in (100, 250, 500, 1000, 2000, 5000) or i == len(rows):
                c = clf.counters
                checkpoints[i] = {
                    "hit_rate_cumulative": round((c["exact_hits"] + c["cache_hits"]) / i, 4),
                    "hit_rate_last_window": round(
                        sum(r.source in ("exact", "cache") for r in results[-min(i, 250) :])
                        / min(i, 250),
                        4,
                    ),
                    "llm_calls": c["llm_calls"],
                    "raw_labels": len(clf.space.aliases),
                    "labels": len(clf.space),
                }
        seconds = time.perf_counter() - start
        # Final labels: resolved now, so later merges apply to earlier items.
        final = [clf.space.name(r.label_id) if r.ok else None for r in results]
        c = clf.counters
        out = {
            "items": len(rows),
            "seconds": round(seconds, 1),
            "items_per_s": round(len(rows) / seconds, 2),
            "llm_calls": c["llm_calls"],
            "llm_items": c["llm_items"],
            "cache_hits": c["cache_hits"],
            "exact_hits": c["exact_hits"],
            "failed": c["failed"],
            "raw_labels": len(clf.space.aliases),
            "labels": len(clf.space),
            "checkpoints": checkpoints,
            "latency_ms": {
                s: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95)} for s, v in latency.items()
            },
            "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
            "top_labels": [(lab.name, lab.count) for lab in clf.labels()[:15]],
        }
        clf.close()
        return out, final


def run_seed(rows, embedder, labeler, min_sim, label_sim):
    from canonlabel.baselines import SeedClassifier

    seed = SeedClassifier(embedder, labeler, min_similarity=min_sim, label_similarity=label_sim)
    start = time.perf_counter()
    results = [seed.classify(r["text"]) for r in rows]
    final = [seed.canonical(r.label) for r in results]
    returned = [r.label for r in results]
    return (
        {
            "llm_calls": seed.llm_calls,
            "raw_labels": seed.raw_label_count,
            "labels": seed.label_count,
            "seconds": round(time.perf_counter() - start, 1),
        },
        final,
        returned,
    )


def batched_overhead(rows, settings, embedder):
    """Everything but the embedding model and the LLM, relative to the embedding time."""
    texts = [r["text"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.model_copy(update={"db": Path(tmp) / "o.db"})
        clf = Classifier.open(settings=s, embedder=embedder, labeler=FakeLabeler())
        start = time.perf_counter()
        clf.classify_many(texts)
        total = time.perf_counter() - start
        counters = dict(clf.counters)
        t = time.perf_counter()
        embedder.embed(texts)
        embed_alone = time.perf_counter() - t
        label_embed = counters["embed_seconds"] - embed_alone
        hits = {"exact": [], "cache": [], "model": []}
        sample = texts[:200]
        for text in sample:  # exact hits, single item
            t = time.perf_counter()
            clf.classify(text)
            hits["exact"].append(time.perf_counter() - t)
        for text in sample:  # semantic hits, single item (punctuation changes the text key)
            t = time.perf_counter()
            r = clf.classify(text + " ?!")
            if r.source in ("cache", "model"):  # the semantic cache, or the router's head
                hits[r.source].append(time.perf_counter() - t)
        clf.close()
    overhead = total - counters["embed_seconds"] - counters["llm_seconds"]
    return {
        "items": len(texts),
        "total_s": round(total, 2),
        "embed_s": round(embed_alone, 2),
        "label_embed_s": round(max(label_embed, 0), 2),
        "overhead_s": round(overhead, 2),
        "overhead_vs_embed": round(overhead / embed_alone, 3),
        "single_exact_ms": {"p50": pct(hits["exact"], 50), "p95": pct(hits["exact"], 95)},
        **{
            f"single_{source}_ms": {
                "n": len(hits[source]),
                "p50": pct(hits[source], 50),
                "p95": pct(hits[source], 95),
            }
            for source in ("cache", "model")
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shuffle", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llm", default="local")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--min-similarity", type=float)
    ap.add_argument("--label-similarity", type=float)
    ap.add_argument("--candidates", type=int)
    ap.add_argument("--candidate-source")
    ap.add_argument("--candidate-min-similarity", type=float)
    ap.add_argument(
        "--llm-cache",
        default=str(Path(__file__).parent / ".llm-cache.db"),
        help="SQLite cache of LLM answers shared by runs ('' disables)",
    )
    ap.add_argument(
        "--compare-seed",
        action="store_true",
        help="also run the Go original's rules (0.80 / 0.75) on the same items",
    )
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    overrides = {
        k: v
        for k, v in {
            "min_similarity": args.min_similarity,
            "label_similarity": args.label_similarity,
            "candidates": args.candidates,
            "candidate_source": args.candidate_source,
            "candidate_min_similarity": args.candidate_min_similarity,
            "llm_cache": Path(args.llm_cache) if args.llm_cache else None,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    rows = load(args.data, args.split, args.n, args.shuffle, args.seed)
    gold = [r["labels"][0] for r in rows]
    embedder = make_embedder(args.embedder)
    labeler = make_labeler(args.llm, settings)
    report = {
        "data": f"{args.data.name} {args.split} first {len(rows)}"
        f"{' shuffled seed ' + str(args.seed) if args.shuffle else ''}",
        "gold_labels": len(set(gold)),
        "llm": labeler.id,
        "embedder": embedder.id,
        "settings": {
            k: getattr(settings, k)
            for k in (
                "min_similarity",
                "label_similarity",
                "candidates",
                "candidate_source",
                "candidate_min_similarity",
            )
        },
    }
    stream, final = run_stream(rows, settings, embedder, labeler)
    stream.update(clustering_scores(gold, final))
    report["canonlabel"] = stream
    if args.compare_seed:
        seed, seed_final, seed_returned = run_seed(rows, embedder, labeler, 0.80, 0.75)
        seed.update(clustering_scores(gold, seed_final))
        seed["as_returned"] = clustering_scores(gold, seed_returned)
        report["seed"] = seed
    if not args.skip_overhead:
        report["batched"] = batched_overhead(rows, settings, embedder)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
