"""Label hierarchy against a known coarse layer (``--set``):

* ``goemotions`` (default): GoEmotions' 27 emotions -> Ekman's 6 (single-label train
  texts, neutral left out: it has no Ekman group; ``--top`` 6).
* ``nlupp``: NLU++ banking + hotels intents -> the ontology's domain (general, banking,
  hotels; ``--top`` 3). Every text of both files with a label (train and test), its
  first label the leaf; ``refund`` is both banking and hotels in the ontology, so a
  text's domain is its file's there (the simulated LLM's table says banking).

Leaves come from canonlabel with the simulated LLM over the gold leaves; then
``hierarchy.fit`` groups the labels into ``--top`` parents (one level): the simulated
LLM proposes each label's theme and names parents from the gold coarse table (wrong
``--error-rates`` of the time, like its leaves). Reported per error rate, over
``--shuffles`` arrival orders: item-level ARI of the parents against the coarse layer,
order ARI of the parents, parents count, seconds to fit; and the same ARIs for a fit of
the same leaves from embeddings alone (no theme proposals, no LLM names).

    .venv/bin/python benchmarks/hierarchy.py --n 3000 --shuffles 3
    .venv/bin/python benchmarks/hierarchy.py --set nlupp --shuffles 3
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


# NLU++'s ontology (PolyAI-LDN/task-specific-datasets, nlupp/data/ontology.json; see
# NLUPP_DOMAINS.SOURCE.md): each intent's "domain". refund is banking and hotels there.
NLUPP_DOMAINS = {
    "general": [
        "affirm", "deny", "dont_know", "acknowledge", "greet", "end_call", "handoff",
        "thank", "repeat", "cancel_close_leave_freeze", "change",
        "make_open_apply_setup_get_activate", "request_info", "how", "why", "when",
        "how_much", "how_long", "wrong_notworking_notshowing", "lost_stolen",
        "more_higher_after", "less_lower_before", "new", "existing", "limits",
    ],
    "banking": [
        "savings", "current", "business", "credit", "debit", "contactless",
        "international", "account", "transfer_payment_deposit", "appointment", "arrival",
        "balance", "card", "cheque", "direct_debit", "standing_order", "fees_interests",
        "loan", "mortgage", "overdraft", "withdrawal", "pin", "refund",
    ],
    "hotels": [
        "check_in", "check_out", "restaurant", "swimming_pool", "parking", "pets",
        "accesibility", "booking", "wifi", "gym", "spa", "room_ammenities",
        "housekeeping", "room_service", "refund",
    ],
}  # fmt: skip
# The simulated LLM's table: one domain an intent, refund under banking (54 texts of 64)
NLUPP_COARSE = {
    fine: group for group in ("hotels", "banking", "general") for fine in NLUPP_DOMAINS[group]
}


def load_goemotions(n: int) -> tuple[list[str], list[str], list[str]]:
    """Texts, leaves and each text's Ekman group."""
    rows = [json.loads(x) for x in (DATA / "goemotions.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == "train" and len(r["labels"]) == 1]
    rows = [r for r in rows if r["labels"][0] in COARSE]
    random.Random(0).shuffle(rows)
    rows = rows[:n]
    leaves = [r["labels"][0] for r in rows]
    return [r["text"] for r in rows], leaves, [COARSE[x] for x in leaves]


def load_nlupp(n: int) -> tuple[list[str], list[str], list[str]]:
    """Texts (both files, every split; ``n`` of them if ``n``), first labels and each
    text's domain (for an intent of several domains, its file's)."""
    rows = []
    for domain in ("banking", "hotels"):
        path = DATA / f"nlupp_{domain}.jsonl"
        for r in map(json.loads, path.open(encoding="utf-8")):
            if r["labels"]:
                leaf = r["labels"][0]
                own = [d for d, fines in NLUPP_DOMAINS.items() if leaf in fines]
                rows.append((r["text"], leaf, domain if domain in own else own[0]))
    if n:
        random.Random(0).shuffle(rows)
        rows = rows[:n]
    texts, leaves, coarse = (list(x) for x in zip(*rows, strict=True))
    return texts, leaves, coarse


# --set: loader, the simulated LLM's coarse table, the coarse layer's name, --n, --top
SETS = {
    "goemotions": (load_goemotions, COARSE, "ekman", 3000, 6),
    "nlupp": (load_nlupp, NLUPP_COARSE, "domain", 0, 3),
}


class NoCompletions:
    """A labeler without free completions: a fit from embeddings alone."""

    def complete(self, prompt: str, **kwargs):
        raise NotImplementedError


def run(data: EvalData, order, llm, top: int) -> tuple[list[str], dict, list[str]]:
    """Parents of each text from a fit with ``llm``, the run's figures, and parents of
    each text from a fit of the same leaves from embeddings alone."""
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
        out, leaves = item_parents(clf, tree, len(data.texts))
        plain, _ = item_parents(clf, fit(clf, top=top, levels=1, labeler=NoCompletions()), len(out))
        clf.close()
    return out, {"seconds": seconds, "parents": len(tree.top()), "leaves": leaves}, plain


def item_parents(clf, tree, n: int) -> tuple[list[str], int]:
    """The level-1 parent of each item (by ext id ``0..n-1``) and the number of leaves."""
    rows = clf.store.query("SELECT ext_id, label_id FROM items")
    parent = {}
    for ext, label_id in rows:
        path = tree.path(clf.space.resolve(label_id))
        parent[int(ext)] = path[0] if path else "_none"
    leaves = len({clf.space.resolve(lab) for _, lab in rows})
    return [parent.get(i, "_none") for i in range(n)], leaves


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


def evaluate(data: EvalData, leaves, coarse, table: dict, name: str, rate: float, args) -> dict:
    """One error rate over ``args.shuffles`` orders: the fit's figures and, beside them,
    the embeddings-only fit's."""
    from sklearn.metrics import adjusted_rand_score

    from canonlabel.testing import SimulatedLLM

    llm = SimulatedLLM(dict(zip(data.texts, leaves)), error_rate=rate, coarse=table)
    parents, info, plain = [], [], []
    for s in range(args.shuffles):
        order = list(range(len(data.texts)))
        random.Random(1000 + s).shuffle(order)
        p, i, e = run(data, order, llm, args.top)
        parents.append(p)
        info.append(i)
        plain.append(e)
        print(f"  error {rate} order {s + 1}: {i}", flush=True)

    def ari(runs) -> float:
        return round(float(np.mean([adjusted_rand_score(coarse, p) for p in runs])), 4)

    return {
        "error_rate": rate,
        f"ari_vs_{name}": ari(parents),
        "order_ari": mean_pairwise_ari(parents) if len(parents) > 1 else None,
        "parents": float(np.mean([i["parents"] for i in info])),
        "leaves": float(np.mean([i["leaves"] for i in info])),
        "fit_seconds": round(float(np.mean([i["seconds"] for i in info])), 3),
        "parent_names": sorted(set(parents[0])),
        f"embeddings_only_ari_vs_{name}": ari(plain),
        "embeddings_only_order_ari": mean_pairwise_ari(plain) if len(plain) > 1 else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", choices=sorted(SETS), default="goemotions")
    ap.add_argument("--n", type=int, default=None, help="texts (nlupp default: all)")
    ap.add_argument("--top", type=int, default=None, help="parents (goemotions 6, nlupp 3)")
    ap.add_argument("--shuffles", type=int, default=3)
    ap.add_argument("--error-rates", default="0,0.1")
    ap.add_argument("--out", default=None, help="default results/hierarchy_<set>.json")
    ap.add_argument("--scale", type=int, default=0, help="time a fit over this many labels")
    args = ap.parse_args()
    loader, table, name, n, top = SETS[args.set]
    args.top = top if args.top is None else args.top
    if args.scale:
        print(json.dumps(scale(args.scale, args.top)))
        return
    texts, leaves, coarse = loader(n if args.n is None else args.n)
    data = EvalData.build(texts, leaves, make_embedder("minilm", Settings()))
    report = {"set": args.set, "n": len(texts), "top": args.top, "runs": []}
    for rate in [float(x) for x in args.error_rates.split(",")]:
        result = evaluate(data, leaves, coarse, table, name, rate, args)
        report["runs"].append(result)
        print(json.dumps(result), flush=True)
    out = args.out or f"benchmarks/results/hierarchy_{args.set}.json"
    Path(out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
