"""A job against an OpenAI-compatible server injecting 429s, 5xx, hangs, truncated and
slow bodies: every item ends answered or recorded as failed, within the retry budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.faulty_server import run_faulty
from tests.reliability.faulty_openai import FaultyOpenAIServer

DATA = Path(__file__).parents[1] / "data" / "banking77_200.jsonl"


def test_every_item_ends_answered_or_recorded_within_budget():
    texts = [json.loads(x)["text"] for x in DATA.read_text(encoding="utf-8").splitlines()]
    report = run_faulty(texts[:150], concurrency=4, timeout=1.0)
    assert report["exit_code"] == 0, report["stderr_tail"]
    assert report["rows"] == 150 and report["lost"] == 0
    assert report["failed_unrecorded"] == 0 and report["answered_not_stored"] == 0
    assert report["over_budget"] == 0
    served = report["faults_served"]
    assert all(served.get(f, 0) > 0 for f in ("rate_limited", "server_error", "truncated"))
    # transient faults are retried, so almost everything is answered
    assert report["answered"] >= 145, report


def test_a_server_that_always_fails_ends_in_recorded_failures(tmp_path):
    faults = {"server_error": 1.0}
    import os
    import sqlite3
    import subprocess

    with FaultyOpenAIServer(faults=faults) as server:
        src = tmp_path / "in.jsonl"
        src.write_text('{"id": "1", "text": "card declined"}\n', encoding="utf-8")
        env = dict(
            os.environ,
            CANONLABEL_LLM="openai:x",
            CANONLABEL_LLM_BASE_URL=server.url,
            CANONLABEL_LLM_MAX_RETRIES="2",
            CANONLABEL_EMBEDDER="hash",
        )
        done = subprocess.run(
            [sys.executable, "-m", "canonlabel.cli", "classify", str(src), "-o",
             str(tmp_path / "o.jsonl"), "--db", str(tmp_path / "d.db")],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [row] = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["error"] and "HTTP 5" in row["error"]
    conn = sqlite3.connect(tmp_path / "d.db")
    assert conn.execute("SELECT kind FROM failures").fetchone()[0] == "backend"
    assert server.per_text["card declined"] == 3  # 1 + 2 retries, then recorded
