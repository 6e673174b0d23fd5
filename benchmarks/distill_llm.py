"""Distillation from the bundled LLM's labels (not gold) on Banking77.

    .venv/bin/python benchmarks/distill_llm.py --per-label 5 --out benchmarks/results/distill_llm.json

Taxonomy = the 77 intent names (descriptions = the names in words). The bundled LLM
annotates ``per-label`` train texts per intent (closed set, grammar-constrained, one label
each); a logistic-regression head is trained on those LLM labels and scored on the full
test split, next to the same head trained on the gold labels of the same texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.distill import load, per_label_sample
from canonlabel import taxonomy as tx
from canonlabel.canon import clean_label, label_text
from canonlabel.config import Settings
from canonlabel.distill import DistilledClassifier
from canonlabel.embed import make_embedder
from canonlabel.embed.cache import cached
from canonlabel.llm import make_labeler
from canonlabel.store import SqliteStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-label", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    settings = Settings(llm_cache=Path(__file__).parent / ".llm-cache.db")
    tr_t, tr_y = load("banking77", "train")
    te_t, te_y = load("banking77", "test")
    gold = lambda ys: [[clean_label(y[0])] for y in ys]  # noqa: E731
    tr_y, te_y = gold(tr_y), gold(te_y)
    names = sorted({y[0] for y in tr_y})
    entries = [tx.Entry(n, label_text(n)) for n in names]
    idx = per_label_sample(tr_y, args.per_label)
    texts = [tr_t[i] for i in idx]
    labeler = make_labeler("local", settings)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "ann.db")
        answers = tx.annotate(store, labeler, entries, texts, max_labels=1)
        store.close()
    seconds = time.perf_counter() - start
    llm_y = [a[0] for a in answers]
    ok = [i for i, a in enumerate(llm_y) if a]
    agree = sum(llm_y[i][0] == tr_y[idx[i]][0] for i in ok) / len(idx)
    emb = cached(make_embedder("minilm"), settings.cache_dir)
    X, Xte = emb.embed(texts), emb.embed(te_t)
    report = {
        "texts": len(texts),
        "annotated": len(ok),
        "annotation_seconds": round(seconds),
        "llm_label_agreement_with_gold": round(agree, 4),
    }
    for source, labels in (("llm", [llm_y[i] for i in ok]), ("gold", [tr_y[idx[i]] for i in ok])):
        clf = DistilledClassifier("logreg").fit(X[ok], labels)
        pred = [p[0] for p in clf.predict(Xte)]
        report[f"test_accuracy_trained_on_{source}"] = round(
            sum(p == y[0] for p, y in zip(pred, te_y)) / len(te_y), 4
        )
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
