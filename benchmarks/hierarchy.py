"""Label hierarchy against a known coarse layer: GoEmotions' 27 emotions -> Ekman's 6.

Leaves come from canonlabel with the simulated LLM over the gold emotions (single-label
texts, neutral left out: it has no Ekman group); then ``hierarchy.fit`` groups the
labels into ``--top`` parents (one level), named by the simulated LLM from the gold
Ekman table (wrong ``--error-rate`` of the time, like its leaves). Reported per error
rate, over ``--shuffles`` arrival orders: item-level ARI of the parents against Ekman's
groups, order ARI of the parents, parents count, seconds to fit. The grouping itself is
from embeddings (label centroids and names); the LLM only names.

    .venv/bin/python benchmarks/hierarchy.py --n 3000 --shuffles 3
    .venv/bin/python benchmarks/hierarchy.py --scale 1000   # seconds over 1,000 labels

``--scale N`` times a fit over N labels instead (Banking77 train texts, each labelled
``<intent>_v<k>`` so the 77 intents make about N labels; hash embedder; an LLM that
answers at once, so the time is canonlabel's own: SQL, grouping, theme proposals and
naming, without the LLM's latency), and counts the LLM calls the fit makes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consistency import DATA

from canonlabel import Classifier, Settings
from canonlabel.embed import make_embedder
from canonlabel.evaluate import EvalData
from canonlabel.metrics import mean_pairwise_ari

# GoEmotions' own mapping (google-research/goemotions, data/ekman_mapping.json)
EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": [
        "joy",
        "amusement",
        "approval",
        "excitement",
        "gratitude",
        "love",
        "optimism",
        "relief",
        "pride",
        "admiration",
        "desire",
        "caring",
    ],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
}
COARSE = {fine: group for group, fines in EKMAN.items() for fine in fines}


def load(n: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(x) for x in (DATA / "goemotions.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == "train" and len(r["labels"]) == 1]
    rows = [r for r in rows if r["labels"][0] in COARSE]
    random.Random(0).shuffle(rows)
    rows = rows[:n]
    return [r["text"] for r in rows], [r["labels"][0] for r in rows]


def run(data: EvalData, order, llm, top: int) -> tuple[list[str], dict]:
    from canonlabel.hierarchy import fit

    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(db=Path(tmp) / "h.db")
        clf = Classifier.open(settings=s, embedder=data.embedder, labeler=llm)
        for i in order:
            clf.classify_many([data.texts[i]], [str(i)])
            if clf.router is not None:
                clf.router.wait()
        clf.consolidate()
        start = time.perf_counter()
        tree = fit(clf, top=top, levels=1)
        seconds = time.perf_counter() - start
        rows = clf.store.query("SELECT ext_id, label_id FROM items")
        parent = {}
        for ext, label_id in rows:
            path = tree.path(clf.space.resolve(label_id))
            parent[int(ext)] = path[0] if path else "_none"
        leaves = len({clf.space.resolve(lab) for _, lab in rows})
        clf.close()
    out = [parent.get(i, "_none") for i in range(len(data.texts))]
    return out, {"seconds": seconds, "parents": len(tree.top()), "leaves": leaves}


def scale(n_labels: int, top: int) -> dict:
    import zlib

    from canonlabel.hierarchy import fit
    from canonlabel.llm import Labeler
    from canonlabel.testing import FakeLabeler, HashEmbedder
    from canonlabel.types import LabelResponse, Usage

    rows = [json.loads(x) for x in (DATA / "banking77.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == "train"]
    per = max(1, round(n_labels / 77))

    class Fine(Labeler):
        """Names each text ``<intent>_v<k>``; free completions from the fake labeler."""

        id = "fine"

        def __init__(self) -> None:
            self.fake, self.calls = FakeLabeler(), 0
            self.intent = {r["text"].strip(): r["labels"][0] for r in rows}

        def label_batch(self, requests):
            return [LabelResponse(self._name(r.text), Usage()) for r in requests]

        def _name(self, text: str) -> str:
            k = zlib.crc32(text.encode()) % per
            return f"{self.intent.get(text.strip(), 'other')}_v{k}"

        def complete(self, prompt, *, grammar=None, max_tokens=256):
            self.calls += 1
            return self.fake.complete(prompt, grammar=grammar, max_tokens=max_tokens)

    llm = Fine()
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(
            db=Path(tmp) / "h.db",
            consolidate_every=0,
            router=False,
            min_similarity=1.0,
            label_similarity=1.0,
        )
        clf = Classifier.open(settings=s, embedder=HashEmbedder(), labeler=llm)
        clf.classify_many([r["text"] for r in rows])
        labels = clf.label_count()
        start = time.perf_counter()
        tree = fit(clf, top=top, levels=2)
        seconds = time.perf_counter() - start
        level1 = sum(1 for p in tree.parents.values() if p.level == 1)
        clf.close()
    return {"labels": labels, "top": top, "seconds": round(seconds, 2), "llm_calls": llm.calls,
            "parents_level_1": level1, "parents_top": len(tree.top())}  # fmt: skip


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from canonlabel.testing import SimulatedLLM

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--shuffles", type=int, default=3)
    ap.add_argument("--error-rates", default="0,0.1")
    ap.add_argument("--out", default="benchmarks/results/hierarchy_goemotions.json")
    ap.add_argument("--scale", type=int, default=0, help="time a fit over this many labels")
    args = ap.parse_args()
    if args.scale:
        print(json.dumps(scale(args.scale, args.top)))
        return
    texts, gold = load(args.n)
    data = EvalData.build(texts, gold, make_embedder("minilm", Settings()))
    ekman = [COARSE[g] for g in data.gold]
    report = {"n": len(texts), "top": args.top, "runs": []}
    for rate in [float(x) for x in args.error_rates.split(",")]:
        llm = SimulatedLLM(dict(zip(data.texts, gold)), error_rate=rate, coarse=COARSE)
        parents, info = [], []
        for s in range(args.shuffles):
            order = list(range(len(texts)))
            random.Random(1000 + s).shuffle(order)
            p, i = run(data, order, llm, args.top)
            parents.append(p)
            info.append(i)
            print(f"  error {rate} order {s + 1}: {i}", flush=True)
        result = {
            "error_rate": rate,
            "ari_vs_ekman": round(
                float(np.mean([adjusted_rand_score(ekman, p) for p in parents])), 4
            ),
            "order_ari": mean_pairwise_ari(parents) if len(parents) > 1 else None,
            "parents": float(np.mean([i["parents"] for i in info])),
            "leaves": float(np.mean([i["leaves"] for i in info])),
            "fit_seconds": round(float(np.mean([i["seconds"] for i in info])), 3),
            "parent_names": sorted(set(parents[0])),
        }
        report["runs"].append(result)
        print(json.dumps(result), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
