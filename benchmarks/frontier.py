"""Frontier benchmark: what order invariance costs in LLM calls, whatever the labeller.

    .venv/bin/python benchmarks/frontier.py
    .venv/bin/python benchmarks/frontier.py --data banking77:train:3000 --error-rates 0

An idealised stream, to separate what the data allows from what canonlabel does. The LLM
is the simulated one (``canonlabel.testing.SimulatedLLM``) reduced to what it
understands: each text's intent, wrong ``error_rate`` of the time, named exactly, so
there are no naming variants and nothing to consolidate. A semantic cache answers an
item from its nearest LLM-answered text when their similarity is at least ``t`` (the
fixed rule of the essay's design); every other item is one LLM call. Sweeping ``t``
maps calls against ARI and order ARI (5 shuffles, the orders ``consistency.py`` uses).

With ``redecide``, every item answered from the cache is decided again at the end of
the job by a head fitted on all the LLM's answers (canonlabel's ``SoftmaxHead``) when
that head is at least 0.5 confident: the best an end-of-job pass can do with the
answers paid for. Compare canonlabel's rows in ``consistency.py``, which pay for
naming variants and consolidation on top.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.consistency import load
from canonlabel import Settings
from canonlabel.embed import make_embedder
from canonlabel.evaluate import EvalData
from canonlabel.metrics import mean_pairwise_ari
from canonlabel.router import SoftmaxHead
from canonlabel.testing import SimulatedLLM

THRESHOLDS = (0.75, 0.8, 0.82, 0.85, 0.9, 0.95, 1.01)  # 1.01: every item is asked
CONFIDENT = 0.5


def stream(vectors: np.ndarray, answers: np.ndarray, order, t: float):
    """Fixed-rule cache over ``order``: (label per item, asked mask)."""
    labels = np.full(len(answers), -1, dtype=np.int64)
    asked = np.zeros(len(answers), dtype=bool)
    cache = np.zeros((len(answers), vectors.shape[1]), dtype=np.float32)
    keys: list[int] = []
    for i in order:
        if keys:
            sims = cache[: len(keys)] @ vectors[i]
            j = int(sims.argmax())
            if sims[j] >= t:
                labels[i] = labels[keys[j]]
                continue
        labels[i], asked[i] = answers[i], True
        cache[len(keys)] = vectors[i]
        keys.append(i)
    return labels, asked


def redecide(vectors: np.ndarray, labels: np.ndarray, asked: np.ndarray) -> np.ndarray:
    """Cache answers replaced by a head fitted on the LLM's answers, where it is sure."""
    if len(np.unique(labels[asked])) < 2 or asked.all():
        return labels
    head = SoftmaxHead().fit(vectors[asked], labels[asked])
    rest = np.flatnonzero(~asked)
    P = head.predict_proba(vectors[rest])
    out = labels.copy()
    sure = P.max(axis=1) >= CONFIDENT
    out[rest[sure]] = head.classes_[P.argmax(axis=1)][sure]
    return out


def sweep(data: EvalData, error_rate: float, shuffles: int) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    llm = SimulatedLLM(dict(zip(data.texts, data.gold)), error_rate=error_rate)
    intents = sorted(set(data.gold))
    answers = np.array([intents.index(llm.intent(t)) for t in data.texts])
    orders = []
    for s in range(shuffles):
        order = list(range(len(data.texts)))
        random.Random(1000 + s).shuffle(order)  # consistency.py's orders
        orders.append(order)
    rows = []
    for t in THRESHOLDS:
        runs = [stream(data.vectors, answers, order, t) for order in orders]
        for how in ("fixed", "redecide"):
            labelings = [
                lab if how == "fixed" else redecide(data.vectors, lab, asked) for lab, asked in runs
            ]
            row = {
                "threshold": t,
                "policy": how,
                "llm_calls": round(float(np.mean([asked.sum() for _, asked in runs])), 1),
                "ari": round(
                    float(np.mean([adjusted_rand_score(data.gold, x) for x in labelings])), 4
                ),
                "order_ari": mean_pairwise_ari([x.tolist() for x in labelings]),
            }
            rows.append(row)
            print(f"  {json.dumps(row)}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="banking77:train:3000,nlupp_banking:train:all")
    ap.add_argument("--error-rates", default="0,0.1")
    ap.add_argument("--shuffles", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/frontier.json")
    args = ap.parse_args()
    embedder = make_embedder("minilm", Settings())
    report = {"runs": []}
    for spec in args.data.split(","):
        name, texts, gold = load(spec)
        data = EvalData.build(texts, gold, embedder)
        for rate in (float(x) for x in args.error_rates.split(",")):
            print(f"{name} error_rate={rate}", flush=True)
            rows = sweep(data, rate, args.shuffles)
            report["runs"].append({"data": name, "error_rate": rate, "rows": rows})
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
