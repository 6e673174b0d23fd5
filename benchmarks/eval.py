"""Side-by-side evaluation on the shared datasets with the default local stack.

    .venv/bin/python benchmarks/eval.py --limit 1000 --repeats 5

For each dataset, runs llm-only, seed (Go rules), canonlabel (defaults), kmeans-k and
hdbscan on the same items in the same order and writes
benchmarks/results/eval_<dataset>/report.{json,md} + plots, and a combined table
benchmarks/results/eval_summary.md. LLM answers are cached by prompt
(benchmarks/.llm-cache.db), so strategies asking the same question share one answer;
"LLM calls" counts the questions each strategy asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonlabel.config import Settings
from canonlabel.embed import make_embedder
from canonlabel.embed.cache import cached
from canonlabel.evaluate import STRATEGIES, EvalData, evaluate
from canonlabel.io import read_labelled
from canonlabel.llm import make_labeler
from canonlabel.memory import shown_candidates
from canonlabel.report import markdown_table, write_eval_report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results"
DATASETS = {"banking77": "test", "tweeteval_emotion": "test", "nlupp_banking": "test"}
REFERENCES = {
    "banking77": "Published (GPT-3.5/4-class LLMs): ClusterLLM ACC 71.2 / NMI 85.2; "
    "k-LLMmeans ACC 75.7 / NMI 87.4; k-means on MiniLM, oracle k: ACC 62.7 / "
    "NMI 79.4 / ARI 50.4 (full test split).",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--llm", default="local")
    ap.add_argument("--llm-cache", default=str(Path(__file__).parent / ".llm-cache.db"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = Settings(llm_cache=Path(args.llm_cache) if args.llm_cache else None)
    embedder = cached(make_embedder(settings.embedder, settings), settings.cache_dir)
    labeler = make_labeler(args.llm, settings)
    summary = [
        "# Evaluation summary",
        "",
        f"LLM `{labeler.id}`, embedder `{embedder.id}`, thresholds "
        f"min_similarity={settings.min_similarity}, "
        f"label_similarity={settings.label_similarity}, candidates="
        f"{shown_candidates(settings, labeler)}, {args.repeats} shuffled runs for consistency.",
        "",
    ]
    for name in args.datasets.split(","):
        split = DATASETS.get(name, "test")
        texts, golds = read_labelled(
            str(DATA / f"{name}.jsonl"), split=split, limit=args.limit, shuffle_seed=args.seed
        )
        start = time.perf_counter()
        data = EvalData.build(texts, [g[0] for g in golds], embedder)
        report = evaluate(
            data,
            args.strategies.split(","),
            labeler,
            settings,
            repeats=args.repeats,
            seed=args.seed,
            progress=lambda m, n=name: print(n, m, flush=True),
        )
        report |= {
            "dataset": f"{name} {split} ({len(texts)} texts, sampled with seed {args.seed})",
            "llm": labeler.id,
            "embedder": embedder.id,
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_eval_report(report, OUT / f"eval_{name}")
        table = markdown_table(report)
        print(table, flush=True)
        summary += [f"## {report['dataset']}", "", table, ""]
        if name in REFERENCES:
            summary += [REFERENCES[name], ""]
    (OUT / "eval_summary.md").write_text("\n".join(summary) + "\n")
    print(json.dumps({"written": str(OUT / "eval_summary.md")}))


if __name__ == "__main__":
    main()
