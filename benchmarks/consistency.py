"""Consistency benchmark: does the same kind of text get the same label, whatever the order?

    .venv/bin/python benchmarks/consistency.py                        # simulated LLM
    .venv/bin/python benchmarks/consistency.py --llm local --data banking77:test:1000 \\
        --shuffles 3 --error-rates 0                                  # the bundled stack

For each dataset and each shuffled arrival order, the streaming pipeline (``canonlabel``:
periodic consolidation and one at the end of the job), the Go rules (``seed``: labels read
through their union-find at the end) and k-means with the gold label count (``kmeans-k``)
label the same items. Reported against gold: label count, NMI, ARI, LLM calls; across
orders: order ARI (mean pairwise ARI of the final labelings) and the stable share; and
name quality (mean cosine, bundled embedder, between a label's name and the gold name of
its majority intent; share of names starting with ``no_``). The simulated LLM
(:class:`canonlabel.testing.SimulatedLLM`) is accurate but inconsistent in naming, with
``--error-rates`` of its answers naming a wrong intent. The ``ceiling`` strategy is
canonlabel with a perfectly consistent simulated LLM: grouping is then perfect, and what
it loses is the semantic cache copying a neighbour's label (add it to ``--strategies``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonlabel import Classifier, Settings
from canonlabel.baselines import SeedClassifier
from canonlabel.canon import label_text
from canonlabel.embed import make_embedder
from canonlabel.evaluate import EvalData
from canonlabel.llm import make_labeler
from canonlabel.metrics import mean_pairwise_ari, pairwise_ari, stable_share
from canonlabel.testing import SimulatedLLM

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = "banking77:train:3000,nlupp_banking:train:all,tweeteval_emotion:train:2000"


def load(spec: str) -> tuple[str, list[str], list[str]]:
    name, split, n = spec.split(":")
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == split and r["labels"]]
    random.Random(0).shuffle(rows)  # the files are sorted by label
    rows = rows if n == "all" else rows[: int(n)]
    return f"{name}:{split}:{len(rows)}", [r["text"] for r in rows], [r["labels"][0] for r in rows]


KEEP: Path | None = None  # --keep-stores: where each run's store is copied for inspection
# Where canonlabel's LLM calls go: labelling, second questions, adjudication (the rest of
# llm_calls is naming and themes).
CALL_KINDS = ("llm_items", "recheck_calls", "adjudication_calls", "consensus_moved")
BREAKDOWN: list[dict] = []
ERRORS: list[dict] = []  # per run of the simulated LLM: see where_errors_went


def where_errors_went(clf, data: EvalData, labeler: SimulatedLLM, rows) -> dict:
    """Where the simulated LLM's wrong answers went, and what else ends misplaced: an
    item is *misplaced* when its final label's majority intent is not its own. Counted:
    the LLM-labelled items, the wrong open answers among them (the simulator knows which),
    those the consensus fixed (moved, and now placed right) and those placed right anyway,
    wrong answers left misplaced (moved elsewhere, or not moved), right answers misplaced
    (moved away, or their raw label grouped under another intent), items answered without
    the LLM misplaced, and the LLM's error as the store estimates it (the share of its
    answers that stand corrected) beside the true share."""
    moved = set(clf.store.corrections.all())
    gold = {item: data.gold[int(ext)] for item, ext, _, _ in rows}
    label = {item: clf.space.resolve(label_id) for item, _, label_id, _ in rows}
    members: dict[int, Counter] = defaultdict(Counter)
    for item, g in gold.items():
        members[label[item]][g] += 1
    majority = {lab: c.most_common(1)[0][0] for lab, c in members.items()}
    out: Counter = Counter()
    for item, ext, _, source in rows:
        placed = majority[label[item]] == gold[item]
        if source != "llm":
            out["other_misplaced"] += not placed
            continue
        out["llm_items"] += 1
        wrong = labeler.intent(data.texts[int(ext)]) != gold[item]
        kind = "wrong_answer" if wrong else "right_answer"
        out[f"{kind}s"] += 1
        if wrong and placed:
            out["wrong_fixed" if item in moved else "wrong_placed_anyway"] += 1
        elif not placed:
            out[f"{kind}_misplaced_" + ("moved" if item in moved else "unmoved")] += 1
    estimate = float(clf.store.meta().get("llm_error_estimate", 0.0))
    return dict(out) | {
        "llm_error_true": round(out["wrong_answers"] / max(out["llm_items"], 1), 4),
        "llm_error_estimate": estimate,
    }


def run_canonlabel(data: EvalData, order, labeler, settings: Settings) -> tuple[list[str], int]:
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.model_copy(update={"db": Path(tmp) / "bench.db"})
        clf = Classifier.open(settings=s, embedder=data.embedder, labeler=labeler)
        for i in order:  # one at a time: each item sees everything before it
            clf.classify_many([data.texts[i]], [str(i)])
            if clf.router is not None:  # each fit lands before the next item: the run
                clf.router.wait()  # depends on the order alone, not on thread timing
        if hasattr(clf, "consolidate"):  # (absent before consolidation existed)
            clf.consolidate()  # what the end of a `classify` job does
        calls = clf.counters["llm_calls"]  # adjudication questions included
        BREAKDOWN.append({k: clf.counters[k] for k in CALL_KINDS})
        rows = clf.store.conn.execute("SELECT id, ext_id, label_id, source FROM items").fetchall()
        final = {int(ext): clf.space.name(label_id) for _, ext, label_id, _ in rows}
        if isinstance(labeler, SimulatedLLM):
            ERRORS.append(where_errors_went(clf, data, labeler, rows))
        clf.close()
        if KEEP is not None:
            KEEP.mkdir(parents=True, exist_ok=True)
            shutil.copy(s.db, KEEP / f"run{len(list(KEEP.glob('run*.db'))):03d}.db")
    return [final.get(i, f"_failed_{i}") for i in range(len(data.texts))], calls


def run_seed(data: EvalData, order, labeler, settings: Settings) -> tuple[list[str], int]:
    seed = SeedClassifier(data.embedder, labeler, min_similarity=0.80, label_similarity=0.75)
    raw: list[str | None] = [None] * len(order)
    for i in order:
        raw[i] = seed.classify(data.texts[i], data.vectors[i]).label
    labels = [seed.canonical(x) or f"_failed_{i}" for i, x in enumerate(raw)]
    return labels, seed.llm_calls


def run_kmeans(data: EvalData, order, labeler, settings, seed: int = 0):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=len(set(data.gold)), n_init=4, random_state=seed)
    assigned = km.fit(data.vectors[order]).labels_
    labels = [""] * len(order)
    for i, c in zip(order, assigned):
        labels[i] = f"cluster_{int(c)}"
    return labels, 0


def run_ceiling(data: EvalData, order, labeler, settings: Settings) -> tuple[list[str], int]:
    """canonlabel with a perfectly consistent LLM: every answer is the exact intent the
    simulated LLM understood (same wrong-answer share), so grouping is perfect and what is
    left is the semantic cache copying a neighbour's label. The ceiling of the others."""
    from canonlabel.testing import SimulatedLLM

    if not isinstance(labeler, SimulatedLLM):
        raise SystemExit("the ceiling needs the simulated LLM")
    consistent = SimulatedLLM(
        {t: labeler.gold[labeler._key(t)] for t in data.texts},
        inconsistency=0.0,
        error_rate=labeler.error_rate,
        reuse=1.0,
        seed=labeler.seed,
    )
    return run_canonlabel(data, order, consistent, settings)


RUNNERS = {
    "canonlabel": run_canonlabel,
    "seed": run_seed,
    "kmeans-k": run_kmeans,
    "ceiling": run_ceiling,
}


def name_quality(labels: list[str], gold: list[str], embedder) -> dict:
    """Mean cosine between each label's name and its majority gold intent's name."""
    by_label: dict[str, Counter] = defaultdict(Counter)
    for lab, g in zip(labels, gold):
        by_label[lab][g] += 1
    names = [n for n in by_label if not n.startswith(("_failed_", "cluster_"))]
    if not names:
        return {}
    majority = [by_label[n].most_common(1)[0][0] for n in names]
    a = embedder.embed([label_text(n) for n in names])
    b = embedder.embed([label_text(g.lower()) for g in majority])
    return {
        "name_similarity": round(float(np.mean(np.sum(a * b, axis=1))), 4),
        "no_share": round(sum(n.startswith("no_") for n in names) / len(names), 4),
    }


def evaluate(data: EvalData, labeler, settings, strategies, shuffles: int) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    out = {}
    for name in strategies:
        labelings, calls, seconds = [], [], []
        BREAKDOWN.clear()
        ERRORS.clear()
        for s in range(shuffles):
            order = list(range(len(data.texts)))
            random.Random(1000 + s).shuffle(order)
            start = time.perf_counter()
            kwargs = {"seed": s} if name == "kmeans-k" else {}
            labels, n_calls = RUNNERS[name](data, order, labeler, settings, **kwargs)
            seconds.append(time.perf_counter() - start)
            labelings.append(labels)
            calls.append(n_calls)
            print(f"  {name} order {s + 1}/{shuffles}: {seconds[-1]:.1f}s", flush=True)
        ari = [adjusted_rand_score(data.gold, x) for x in labelings]
        out[name] = (
            {
                "labels": round(float(np.mean([len(set(x)) for x in labelings])), 1),
                "gold_labels": len(set(data.gold)),
                "nmi": round(
                    float(np.mean([normalized_mutual_info_score(data.gold, x) for x in labelings])),
                    4,
                ),
                "ari": round(float(np.mean(ari)), 4),
                "order_ari": mean_pairwise_ari(labelings) if shuffles > 1 else None,
                "stable_share": stable_share(labelings) if shuffles > 1 else None,
                "llm_calls": round(float(np.mean(calls)), 1),
                "seconds": round(float(np.mean(seconds)), 1),
                # per order (and per pair of orders), for paired comparisons of two
                # benchmarks over the same orders: benchmarks/compare.py
                "per_order": {
                    "ari": [round(float(a), 4) for a in ari],
                    "labels": [len(set(x)) for x in labelings],
                    "llm_calls": [int(c) for c in calls],
                    "order_pairs_ari": [round(a, 4) for a in pairwise_ari(labelings)],
                },
            }
            | (
                {
                    "calls_by_kind": {
                        k: round(float(np.mean([b[k] for b in BREAKDOWN])), 1) for k in CALL_KINDS
                    }
                }
                if BREAKDOWN
                else {}
            )
            | ({"errors": _mean_counts(ERRORS)} if ERRORS else {})
            | (name_quality(labelings[0], data.gold, data.embedder) if name != "kmeans-k" else {})
        )
        print(f"  {name}: {json.dumps(out[name])}", flush=True)
    return out


def _mean_counts(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k in r})
    return {k: round(float(np.mean([r.get(k, 0) for r in runs])), 4) for k in keys}


def nearest_intents(data: EvalData, gold: list[str], k: int = 5) -> dict[str, list[str]]:
    """Each intent's ``k`` nearest intents by the centroid of their texts' embeddings:
    what a real model mostly mistakes an intent for."""
    intents = sorted(set(gold))
    index = {g: n for n, g in enumerate(intents)}
    sums = np.zeros((len(intents), data.vectors.shape[1]))
    np.add.at(sums, [index[g] for g in gold], data.vectors)
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)
    sims = sums @ sums.T
    np.fill_diagonal(sims, -np.inf)
    return {g: [intents[j] for j in np.argsort(-sims[n])[:k]] for n, g in enumerate(intents)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="name:split:N|all, comma-separated")
    ap.add_argument("--llm", default="simulated", help="simulated, or a labeler spec (local)")
    ap.add_argument("--error-rates", default="0,0.1", help="simulated LLM's wrong-intent shares")
    ap.add_argument("--inconsistency", type=float, default=0.5)
    ap.add_argument(
        "--judge-error",
        type=float,
        default=None,
        help="the simulated judge's error rate (default: the answers' error rate)",
    )
    ap.add_argument(
        "--persistence",
        type=float,
        default=0.0,
        help="share of wrong answers that are misreadings every later question repeats",
    )
    ap.add_argument(
        "--error-kinds",
        default="uniform",
        help="uniform (any other intent) and/or confusable (one of the 5 nearest intents)",
    )
    ap.add_argument("--shuffles", type=int, default=5)
    ap.add_argument("--strategies", default="canonlabel,seed,kmeans-k")
    ap.add_argument("--settings", default="{}", help="JSON overrides for canonlabel's settings")
    ap.add_argument("--llm-cache", default=None, help="SQLite answer cache (bundled stack reruns)")
    ap.add_argument("--out", default="benchmarks/results/consistency.json")
    ap.add_argument("--keep-stores", type=Path, default=None, help="copy each store here")
    args = ap.parse_args()
    global KEEP
    KEEP = args.keep_stores
    settings = Settings().model_copy(update=json.loads(args.settings))
    embedder = make_embedder("minilm", settings)
    report = {"settings": json.loads(args.settings), "llm": args.llm, "runs": []}
    report |= {"judge_error": args.judge_error, "persistence": args.persistence}
    for spec in args.data.split(","):
        name, texts, gold = load(spec)
        data = EvalData.build(texts, gold, embedder)
        rates = (
            [float(x) for x in args.error_rates.split(",")] if args.llm == "simulated" else [None]
        )
        runs = [(r, k) for r in rates for k in args.error_kinds.split(",") if r or k == "uniform"]
        for rate, kind in runs if args.llm == "simulated" else [(None, None)]:
            if args.llm == "simulated":
                from canonlabel.testing import SimulatedLLM

                labeler = SimulatedLLM(
                    dict(zip(data.texts, gold)),
                    error_rate=rate,
                    inconsistency=args.inconsistency,
                    judge_error_rate=args.judge_error,
                    persistence=args.persistence,
                    confusions=nearest_intents(data, gold) if kind == "confusable" else None,
                )
            else:
                llm_settings = settings.model_copy(update={"llm_cache": args.llm_cache})
                labeler = make_labeler(args.llm, llm_settings)
            print(f"{name} llm={args.llm} error_rate={rate} kind={kind}", flush=True)
            result = evaluate(data, labeler, settings, args.strategies.split(","), args.shuffles)
            report["runs"].append(
                {"data": name, "error_rate": rate, "error_kind": kind, "strategies": result}
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "| data | wrong | strategy | labels (gold) | NMI | ARI | order ARI | stable | LLM calls "
        "| name sim | no_ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        for strat, r in run["strategies"].items():
            lines.append(
                f"| {run['data']} | {run['error_rate']} {run.get('error_kind') or ''} | {strat} | {r['labels']} ({r['gold_labels']}) "
                f"| {r['nmi']} | {r['ari']} | {r['order_ari']} | {r['stable_share']} "
                f"| {r['llm_calls']} | {r.get('name_similarity', '')} | {r.get('no_share', '')} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
