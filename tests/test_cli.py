import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from canonlabel.testing import ledger_counts
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data" / "banking77_200.jsonl"
FAKE = ["--llm", "fake", "--embedder", "hash"]


cli = run_cli


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t = time.perf_counter(); import canonlabel.cli, canonlabel; "
        "heavy = [m for m in ('torch', 'llama_cpp', 'sklearn', 'sentence_transformers', "
        "'openai', 'fastapi') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
    result = cli("--help")
    assert result.returncode == 0 and "classify" in result.stdout


def test_classify_writes_output_summary_and_resumes(tmp_path):
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    args = [
        "classify",
        str(DATA),
        "-o",
        str(out),
        "--db",
        str(tmp_path / "db"),
        "--summary-json",
        str(summary),
        *FAKE,
    ]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 200
    assert set(rows[0]) >= {"id", "text", "label", "label_id", "raw_label", "source", "similarity"}
    s = json.loads(summary.read_text())
    for key in (
        "items",
        "exact_hits",
        "cache_hits",
        "llm_calls",
        "failed",
        "raw_labels",
        "labels",
        "hit_rate",
        "seconds",
        "llm_seconds",
        "embed_seconds",
    ):
        assert key in s
    assert s["items"] == 200 and s["llm_calls"] > 0
    again = cli(*args)
    s2 = json.loads(summary.read_text())
    assert again.returncode == 0 and s2["llm_calls"] == 0 and s2["resumed"] == 200
    labels = cli(
        "labels", "--db", str(tmp_path / "db"), "--embedder", "hash", "--json", "--limit", "0"
    )
    assert sum(lab["count"] for lab in json.loads(labels.stdout)) == 200
    stats = json.loads(
        cli("stats", "--db", str(tmp_path / "db"), "--embedder", "hash", "--json").stdout
    )
    assert stats["items"] == 200


def test_the_summary_reports_the_bound_above_the_llms_floor(tmp_path):
    summary = tmp_path / "s.json"
    args = ["classify", str(DATA), "--db", str(tmp_path / "db"), "--summary-json", str(summary)]
    result = cli(*args, *FAKE, "--max-error", "0.2")
    assert result.returncode == 0, result.stderr
    router = json.loads(summary.read_text())["router"]
    # no near-duplicates audited yet: no floor, the bound is max_error
    assert router["bound"] == router["max_error"] == 0.2 and router["llm_floor"] == 0.0


def test_a_config_file_setting_a_retired_setting_is_told_what_replaced_it(tmp_path):
    from canonlabel.config import read_config
    from canonlabel.errors import ConfigError

    cfg = tmp_path / "old.yaml"
    cfg.write_text("router_llm_floor: true\nmax_error: 0.05\n")
    with pytest.raises(ConfigError, match=r"router_llm_floor, which was retired.*own error"):
        read_config(cfg)


def test_bad_input_lines_are_counted_not_fatal(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"id":"a","text":"card lost"}\nnot json\n{"id":"b","text":"  "}\n'
        b'{"id":"c","text":"\xff"}\n{"id":"d","text":"pin change"}\n'
    )
    out = tmp_path / "o.jsonl"
    result = cli(
        "classify",
        str(src),
        "-o",
        str(out),
        "--db",
        str(tmp_path / "db"),
        *FAKE,
        "--summary-json",
        str(tmp_path / "s.json"),
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [("error" in r) for r in rows] == [False, True, True, True, False]
    assert json.loads((tmp_path / "s.json").read_text())["failed"] == 3


def test_stdin_txt_and_clear_errors(tmp_path):
    result = cli(
        "classify",
        "-",
        "--db",
        str(tmp_path / "db"),
        *FAKE,
        input="my card is lost\nexchange rates?\n",
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2
    missing = cli("classify", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "db"), *FAKE)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong = cli(
        "classify",
        str(DATA),
        "--db",
        str(tmp_path / "db"),
        "--llm",
        "fake",
        "--embedder",
        "hash:64",
    )
    assert wrong.returncode == 2 and "built with embedder hash:256" in wrong.stderr
    spec = cli("classify", str(DATA), "--db", str(tmp_path / "x"), "--llm", "gpt4")
    assert spec.returncode == 2 and "unknown LLM spec" in spec.stderr


@pytest.mark.parametrize("concurrency", [1, 4])
def test_sigkill_then_resume_pays_for_nothing_twice(tmp_path, concurrency):
    log, db, out = tmp_path / "calls.log", tmp_path / "db", tmp_path / "out.jsonl"
    args = [
        sys.executable,
        "-m",
        "canonlabel.cli",
        "classify",
        str(DATA),
        "-o",
        str(out),
        "--db",
        str(db),
        "--llm",
        f"fake:latency=0.02,log={log}",
        "--embedder",
        "hash",
        "--concurrency",
        str(concurrency),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 40):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    calls_at_kill = len(log.read_text().splitlines())
    assert calls_at_kill >= 40
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import sqlite3

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    inputs = [json.loads(x)["id"] for x in DATA.read_text().splitlines()]
    assert [r["id"] for r in rows] == inputs  # every input exactly one result, in order
    assert all("error" not in r for r in rows)
    misses = conn.execute("SELECT count(*) FROM items WHERE source = 'llm'").fetchone()[0]
    # (the consensus's second questions about contested items are logged apart)
    total_calls = sum(ledger_counts(log).values())
    assert total_calls <= misses + concurrency
    stored_ids = conn.execute("SELECT count(DISTINCT ext_id) FROM items").fetchone()[0]
    assert stored_ids == len(inputs)
