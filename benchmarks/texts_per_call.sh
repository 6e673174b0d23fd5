#!/bin/bash
# Tokens per LLM-labelled item and ARI through llama-cpp-python's OpenAI-compatible server
# (bundled Gemma 3 270M), README sample (200 Banking77 test texts), --texts-per-call 1 vs 8.
#   bash benchmarks/texts_per_call.sh > benchmarks/results/texts_per_call_llama_server.txt
cd "$(dirname "$0")/.."
export TMP=$(mktemp -d)
MODEL=$(.venv/bin/python -c "from canonlabel.llm.llamacpp import bundled_gemma_path; from canonlabel.config import Settings; print(bundled_gemma_path(Settings().cache_dir))")
.venv/bin/python -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port 18777 --n_ctx 4096 --verbose false >/dev/null 2>&1 &
SRV=$!
for i in $(seq 60); do curl -s http://127.0.0.1:18777/v1/models >/dev/null && break; sleep 1; done
for n in 1 8; do
  rm -f $TMP/grp$n.db*
  /usr/bin/time -f "%e s" .venv/bin/canonlabel classify examples/banking77_sample.jsonl -o $TMP/grp$n.jsonl --db $TMP/grp$n.db \
    --llm openai:gemma --llm-base-url http://127.0.0.1:18777/v1 --texts-per-call $n --concurrency 1 --summary-json $TMP/grp$n.json > $TMP/grp$n.log 2>&1
  .venv/bin/python - $n <<'PY'
import json, os, sys
from sklearn.metrics import adjusted_rand_score
n = sys.argv[1]
gold = {json.loads(l)["id"]: json.loads(l)["labels"][0] for l in open("examples/banking77_sample.jsonl")}
rows = [json.loads(l) for l in open(f"{os.environ['TMP']}/grp{n}.jsonl")]
s = json.load(open(f"{os.environ['TMP']}/grp{n}.json"))
ids = [r["id"] for r in rows]
print("texts_per_call", n, "ARI", round(adjusted_rand_score([gold[i] for i in ids], [r["label"] for r in rows]), 3),
      "labels", len({r["label"] for r in rows}), "llm_items", s["llm_items"], "calls", s["llm_calls"],
      "tokens", s["tokens"], "per item", round(s["tokens"] / max(s["llm_items"], 1)), "seconds", s["seconds"])
PY
  tail -1 $TMP/grp$n.log
done
kill $SRV
rm -rf "$TMP"
