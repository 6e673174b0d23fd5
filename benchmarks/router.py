"""Router benchmark: how much of a stream still goes to the LLM, and at what error?

    .venv/bin/python benchmarks/router.py                                   # simulated LLM
    .venv/bin/python benchmarks/router.py --data tweeteval_emotion:train:5000
    .venv/bin/python benchmarks/router.py --llm local --data banking77:train:3000
    .venv/bin/python benchmarks/router.py --error-rate 0.1 --persistence 0.5

The stream (shuffled, fed in chunks of 64 like a service's batches) runs with the router
off and on (``--max-error``, held above the LLM's floor). ``--persistence`` makes that
share of the simulated LLM's wrong answers misreadings every later question repeats.
Reported: LLM calls overall and in the last 2,000 items
(audits included), items answered by the router, cache and exact hits, ARI of the final
labels against gold, and the offline disagreement of every non-LLM answer with what the
simulated LLM says for that item: the item's intent against the majority intent of the
LLM-answered members of the label it got.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.consistency import load
from canonlabel import Classifier, Settings
from canonlabel.embed import make_embedder
from canonlabel.evaluate import EvalData
from canonlabel.llm import make_labeler
from canonlabel.testing import SimulatedLLM

OUT = Path(__file__).resolve().parent / "results"
CHUNK = 64


def run(data: EvalData, labeler, settings: Settings, seed: int = 0) -> dict:
    order = list(range(len(data.texts)))
    random.Random(seed).shuffle(order)
    calls_at: list[int] = []
    sources: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.model_copy(update={"db": Path(tmp) / "r.db"})
        clf = Classifier.open(settings=s, embedder=data.embedder, labeler=labeler)
        start = time.perf_counter()
        for pos in range(0, len(order), CHUNK):
            chunk = order[pos : pos + CHUNK]
            results = clf.classify_many([data.texts[i] for i in chunk], [str(i) for i in chunk])
            for i, r in zip(chunk, results):
                sources[i] = r.source or "failed"
            calls_at.append(clf.counters["llm_calls"])
            if clf.router is not None:  # a real LLM takes longer over a chunk than a fit:
                clf.router.wait()  # each fit lands before the next chunk (and runs repeat)
            if len(calls_at) % 16 == 0:  # long bundled runs: show they are alive
                done = pos + len(chunk)
                print(
                    f"  {done:,} items, {calls_at[-1]:,} LLM calls, "
                    f"{time.perf_counter() - start:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        consolidating = time.perf_counter()
        clf.consolidate()  # the end of a job's; consensus and its second questions included
        counters_end = {"consolidate_seconds": round(time.perf_counter() - consolidating, 2)}
        seconds = time.perf_counter() - start
        final = {
            int(e): clf.space.resolve(lab)
            for e, lab in clf.store.conn.execute("SELECT ext_id, label_id FROM items")
        }
        counters = dict(clf.counters) | counters_end
        router = clf.router.summary() if clf.router is not None else None
        clf.close()
    return _report(data, order, final, sources, calls_at, counters, router, seconds)


def _report(data, order, final, sources, calls_at, counters, router, seconds) -> dict:
    from sklearn.metrics import adjusted_rand_score

    n = len(order)
    last_start = max(0, (n - 2000) // CHUNK - 1)
    calls_last = calls_at[-1] - calls_at[last_start] if len(calls_at) > 1 else calls_at[-1]
    items_last = n - (last_start + 1) * CHUNK
    majority: dict[int, Counter] = defaultdict(Counter)
    for i, src in sources.items():
        if src == "llm":
            majority[final[i]][data.gold[i]] += 1
    wrong: Counter = Counter()
    answered: Counter = Counter()
    for i, src in sources.items():
        if src in ("llm", "failed") or i not in final:
            continue
        answered[src] += 1
        top = majority[final[i]].most_common(1)
        wrong[src] += not top or top[0][0] != data.gold[i]
    non_llm = sum(answered.values())
    curve, prev = [], 0  # LLM calls per 1,000 items (at the chunk ending nearest each 1,000)
    for k in range(1000, n + 1, 1000):
        at = calls_at[min(len(calls_at) - 1, round(k / CHUNK) - 1)]
        curve.append(at - prev)
        prev = at
    labels = [final.get(i, -1 - i) for i in range(n)]
    return {
        "items": n,
        "llm_calls": counters.get("llm_calls", 0),
        "llm_share": round(counters.get("llm_calls", 0) / n, 4),
        "llm_share_last_2000": round(calls_last / max(1, items_last), 4),
        "audits": counters.get("audits", 0),
        "consolidate_seconds": counters.get("consolidate_seconds"),
        "calls_per_1000": curve,
        "answered": dict(answered),
        "disagreement_non_llm": round(sum(wrong.values()) / max(1, non_llm), 4),
        "disagreement_by_source": {k: round(wrong[k] / answered[k], 4) for k in answered},
        "ari": round(adjusted_rand_score(data.gold, labels), 4),
        "labels": len(set(labels)),
        "router": router,
        "route_ms_per_item": round(1000 * counters.get("route_seconds", 0) / n, 3),
        "embed_ms_per_item": round(1000 * counters.get("embed_seconds", 0) / n, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="banking77:train:10000")
    parser.add_argument("--llm", default="simulated")
    parser.add_argument("--max-error", type=float, default=0.05)
    parser.add_argument("--modes", default="off,on", help="off, on (comma-separated)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="simulated wrong share")
    parser.add_argument(
        "--persistence", type=float, default=0.0, help="share of wrong answers that are misreadings"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name, texts, gold = load(args.data)
    embedder = make_embedder("minilm", Settings())
    data = EvalData.build(texts, gold, embedder)
    report = {"data": name, "llm": args.llm, "max_error": args.max_error}
    if args.llm == "simulated":
        report["error_rate"] = args.error_rate
        report["persistence"] = args.persistence
    for mode in args.modes.split(","):
        if args.llm == "simulated":
            gold = dict(zip(data.texts, data.gold))
            labeler = SimulatedLLM(
                gold, inconsistency=0.5, error_rate=args.error_rate, persistence=args.persistence
            )
        else:
            labeler = make_labeler(args.llm, Settings())
        settings = Settings(router=mode != "off", max_error=args.max_error)
        report[f"router_{mode}"] = run(data, labeler, settings)
        print(json.dumps({mode: report[f"router_{mode}"]}, indent=1), flush=True)
    out = args.out or OUT / f"router_{args.llm}_{name.split(':')[0]}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
