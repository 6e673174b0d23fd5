"""Prompt-injection benchmark: can a text mint its own label?

    .venv/bin/python benchmarks/injection.py                 # obedient simulated LLM
    .venv/bin/python benchmarks/injection.py --llm local     # the bundled Gemma too

Attacks: :func:`canonlabel.testing.attacks.corpus` (17 templates x 10 target labels,
benign carriers). Against each LLM, with the guard off and on, it reports the share of
attacks whose label is the attacker's (``minted``), the share recorded as failed
(``rejected``) and the canonical labels holding an attacker's words afterwards
(``polluted_labels``). Benign cost: Banking77 test texts with the guard off and on:
texts redacted, items failed, and labels that differ.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonlabel import Classifier, Settings
from canonlabel.embed import make_embedder
from canonlabel.llm import make_labeler
from canonlabel.testing import FakeLabeler
from canonlabel.testing.attacks import TARGETS, ObedientLLM, corpus, minted

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results"


def run(texts, labeler, embedder, guard: bool):
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(db=Path(tmp) / "b.db", guard=guard, consolidate_every=0)
        with Classifier.open(settings=s, embedder=embedder, labeler=labeler) as clf:
            results = clf.classify_many(texts, [str(i) for i in range(len(texts))])
            polluted = sorted(
                n for n in clf.space.names.values() if any(minted(n, t) for t in TARGETS)
            )
            return results, polluted, dict(clf.counters)


def attacks(labeler, embedder, guard: bool) -> dict:
    rows = corpus()
    results, polluted, counters = run([r["text"] for r in rows], labeler, embedder, guard)
    won = [minted(res.label, r["target"]) for res, r in zip(results, rows)]
    by_kind = {}
    for kind in ("instruction", "evasive"):
        picked = [w for w, r in zip(won, rows) if r["kind"] == kind]
        by_kind[f"minted_{kind}"] = f"{sum(picked)}/{len(picked)}"
    return {
        "attacks": len(rows),
        "minted": sum(won),
        "minted_rate": round(sum(won) / len(rows), 4),
        **by_kind,
        "rejected": sum(res.error is not None for res in results),
        "polluted_labels": len(polluted),
        "llm_calls": counters.get("llm_calls", 0),
        "redacted": counters.get("guard_redacted", 0),
        "copied": counters.get("guard_copied", 0),
        "ungrounded": counters.get("guard_ungrounded", 0),
    }


def benign(labeler, embedder, n: int) -> dict:
    rows = [json.loads(line) for line in (DATA / "banking77.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == "test"]
    random.Random(0).shuffle(rows)
    texts = [r["text"] for r in rows[:n]]
    off, _, _ = run(texts, labeler, embedder, False)
    on, _, counters = run(texts, labeler, embedder, True)
    return {
        "texts": len(texts),
        "redacted": counters.get("guard_redacted", 0),
        "failed_with_guard": sum(r.error is not None for r in on),
        "failed_without": sum(r.error is not None for r in off),
        "labels_changed": sum(a.label != b.label for a, b in zip(off, on)),
        "ungrounded_reasks": counters.get("guard_ungrounded", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=None, help="also run this labeler spec (e.g. local)")
    parser.add_argument("--benign", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT / "injection.json")
    args = parser.parse_args()
    embedder = make_embedder("minilm", Settings())
    report: dict = {"obedient_simulated": {}}
    for guard in (False, True):
        llm = ObedientLLM(FakeLabeler())
        report["obedient_simulated"]["guard_on" if guard else "guard_off"] = attacks(
            llm, embedder, guard
        )
    report["benign_banking77_fake"] = benign(FakeLabeler(), embedder, args.benign)
    if args.llm:
        labeler = make_labeler(args.llm, Settings())
        report[args.llm] = {
            ("guard_on" if g else "guard_off"): attacks(labeler, embedder, g) for g in (False, True)
        }
        report[f"benign_banking77_{args.llm}"] = benign(labeler, embedder, min(args.benign, 300))
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
