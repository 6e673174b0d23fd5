"""How much of the order-ARI gap is the path: finished stores re-derived from their answers.

A diagnostic for issue 30, not a feature. A stream's label space carries its history: a
label the consensus emptied early is folded into the label its name was nearest to, and
its raw labels and their later answers follow that fold for good; an item the consensus
moved keeps the move. This takes the stores of finished runs (``consistency.py
--keep-stores DIR``), copies each, and re-derives its label space from the answers
alone: every fold undone, every consensus correction back to the LLM's answer, every item
back under the label its raw label names, then one consolidation (with ``--budget``
adjudication calls: the pairs the regrouping now meets were never asked). It prints each
order's ARI and labels and the order ARI, as kept and re-derived.

```bash
.venv/bin/python benchmarks/consistency.py --data banking77:train:3000 --error-rates 0.1 \\
  --error-kinds uniform --shuffles 6 --strategies canonlabel --keep-stores /tmp/kept
.venv/bin/python benchmarks/rederive.py --data banking77:train:3000 --stores /tmp/kept
```
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.consistency import EvalData, load, nearest_intents
from canonlabel import Classifier, Settings
from canonlabel.metrics import mean_pairwise_ari


def rederive(clf: Classifier, budget: int) -> dict:
    """Undo every fold and correction, put every item under its raw label's label, and
    consolidate once with ``budget`` adjudication calls; returns the consolidation's report."""
    space, store = clf.space, clf.store
    folds = store.log.emptied_after(0)
    fixes = [f for f in store.corrections.all().values() if not f.kept]
    with space.rewrite() as c:
        for entry, label in folds:
            store.labels.merge(c, label, None)
            store.log.mark_undone(c, entry)
        store.corrections.write(c, [], fixes, log=False)  # each back to its answer
    space.reload()
    home: dict[int, list[int]] = defaultdict(list)  # label -> items to put under it
    rows = store.query("SELECT id, raw_label, label_id FROM items WHERE raw_label IS NOT NULL")
    for item, raw, label in rows:
        alias = space.aliases.get(raw)
        if alias is not None and space.resolve(alias) != space.resolve(label):
            home[space.resolve(alias)].append(item)
    with space.rewrite() as c:
        for label, items in sorted(home.items()):
            store.items.relabel(c, items, label)
    space.reload()
    return clf.consolidate(adjudication_budget=budget)


def labelling(clf: Classifier) -> dict[int, int]:
    """Root label per item (items are keyed by their index in the data set)."""
    rows = clf.store.query("SELECT ext_id, label_id FROM items")
    return {int(ext): clf.space.resolve(label) for ext, label in rows}


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from canonlabel.embed import make_embedder
    from canonlabel.testing import SimulatedLLM

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="banking77:train:3000")
    ap.add_argument("--stores", type=Path, required=True, help="consistency.py --keep-stores")
    ap.add_argument("--error-rate", type=float, default=0.1)
    ap.add_argument("--error-kind", default="uniform", choices=["uniform", "confusable"])
    ap.add_argument("--budget", type=int, default=150, help="adjudication calls per store")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    _, texts, gold = load(args.data)
    embedder = make_embedder("minilm", Settings())
    confusions = None
    if args.error_kind == "confusable":  # as the runs that made the stores
        confusions = nearest_intents(EvalData.build(texts, gold, embedder), gold)
    llm = SimulatedLLM(
        dict(zip(texts, gold)),
        error_rate=args.error_rate,
        inconsistency=0.5,
        confusions=confusions,
    )
    out: dict = {"data": args.data, "error_kind": args.error_kind, "budget": args.budget}
    out |= {"kept": [], "rederived": []}
    work = Path(tempfile.mkdtemp())
    runs: dict[str, list] = {"kept": [], "rederived": []}
    for db in sorted(args.stores.glob("*.db")):
        copy = work / db.name
        shutil.copy(db, copy)
        clf = Classifier.open(settings=Settings(db=copy), embedder=embedder, labeler=llm)
        for kind in ("kept", "rederived"):
            if kind == "rederived":
                report = rederive(clf, args.budget)
                out.setdefault("calls", []).append(report["adjudication_calls"])
            found = labelling(clf)
            keys = sorted(found)
            runs[kind].append([found[k] for k in keys])
            ari = adjusted_rand_score([gold[k] for k in keys], runs[kind][-1])
            out[kind].append({"ari": round(ari, 4), "labels": len(set(found.values()))})
        clf.close()
        print(db.name, out["kept"][-1], "->", out["rederived"][-1], flush=True)
    for kind in ("kept", "rederived"):
        out[f"{kind}_order_ari"] = mean_pairwise_ari(runs[kind])
    print(json.dumps({k: v for k, v in out.items() if k.endswith("order_ari")}))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
