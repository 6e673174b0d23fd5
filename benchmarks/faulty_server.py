"""A classify job against an OpenAI-compatible server that injects faults (see
``tests/reliability/faulty_openai.py``): every item must end answered or recorded as
failed, within the retry budget. Run through ``benchmarks/faults.py server``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.faulty_openai import FaultyOpenAIServer

MAX_RETRIES = 4
ASKS = 2  # an invalid answer is asked once more


def run_faulty(texts: list[str], *, concurrency: int = 4, timeout: float = 1.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp, FaultyOpenAIServer(hang=3 * timeout) as server:
        tmp = Path(tmp)
        src, out, db = tmp / "in.jsonl", tmp / "out.jsonl", tmp / "f.db"
        src.write_text(
            "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
            encoding="utf-8",
        )
        env = dict(
            os.environ,
            CANONLABEL_LLM="openai:faulty",
            CANONLABEL_LLM_BASE_URL=server.url,
            CANONLABEL_LLM_TIMEOUT=str(timeout),
            CANONLABEL_LLM_MAX_RETRIES=str(MAX_RETRIES),
            CANONLABEL_EMBEDDER="hash",
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "canonlabel.cli", "classify", str(src), "-o", str(out),
             "--db", str(db), "--concurrency", str(concurrency)],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        conn = sqlite3.connect(db)
        failures = dict(conn.execute("SELECT ext_id, kind FROM failures"))
        errors = [e for (e,) in conn.execute("SELECT error FROM failures LIMIT 3")]
        stored = {e for (e,) in conn.execute("SELECT ext_id FROM items")}
        conn.close()
        answered = [r for r in rows if r.get("label")]
        failed = [r for r in rows if not r.get("label")]
        budget = ASKS * (1 + MAX_RETRIES)
        return {
            "items": len(texts),
            "exit_code": done.returncode,
            "rows": len(rows),
            "answered": len(answered),
            "failed_recorded": sum(r["id"] in failures for r in failed),
            "failed_unrecorded": sum(r["id"] not in failures for r in failed),
            "answered_not_stored": sum(r["id"] not in stored for r in answered),
            "lost": len(texts) - len(rows),
            "requests": sum(server.per_text.values()),
            "faults_served": dict(server.counts),
            "max_requests_per_text": max(server.per_text.values(), default=0),
            "retry_budget_per_item": budget,
            "over_budget": sum(n > budget for n in server.per_text.values()),
            "seconds": round(seconds, 1),
            "failure_examples": [e[:160] for e in errors],
            "stderr_tail": done.stderr[-300:] if done.returncode else "",
        }
