"""Many writer processes on one PostgreSQL store give what one process would: one label per
raw label, every item once, no LLM answer paid twice, nothing acknowledged lost."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from canonlabel.store import open_store
from canonlabel.testing import ledger_counts

DATA = Path(__file__).parents[1] / "data" / "banking77_200.jsonl"
pytest.importorskip("psycopg")


def _pool() -> list[tuple[str, str]]:
    rows = [json.loads(x)["text"] for x in DATA.read_text(encoding="utf-8").splitlines()]
    return [(f"t{i}", t) for i, t in enumerate(rows)]


def _write(path: Path, rows) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows), "utf-8")


def _cmd(src: Path, out: Path, url: str, ledger: Path, latency: float = 0.02) -> list[str]:
    return [
        sys.executable, "-m", "canonlabel.cli", "classify", str(src), "-o", str(out),
        "--db", url, "--llm", f"fake:latency={latency},log={ledger}", "--embedder", "hash",
        "--concurrency", "2",
    ]  # fmt: skip


_ENV = dict(os.environ, CANONLABEL_CONSOLIDATE_EVERY="0", CANONLABEL_SYNC_SECONDS="0.2")


def _outputs(path: Path) -> list[dict]:
    rows: list[dict] = []
    if not path.exists():  # a job killed before its end writes no output
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill was never acknowledged
            pass
    return rows


def test_four_workers_share_one_label_space(pg_url, tmp_path):
    pool, rng = _pool(), random.Random(7)
    ledger, procs, inputs = tmp_path / "ledger.log", [], []
    for w in range(4):  # overlapping shuffled slices: most texts reach 2-3 workers
        rows = rng.sample(pool, 120)
        inputs.append(rows)
        _write(tmp_path / f"in{w}.jsonl", rows)
        cmd = _cmd(tmp_path / f"in{w}.jsonl", tmp_path / f"out{w}.jsonl", pg_url, ledger)
        with (tmp_path / f"err{w}.log").open("w") as err:
            procs.append(subprocess.Popen(cmd, env=_ENV, stderr=err))
    for w, p in enumerate(procs):
        assert p.wait(timeout=240) == 0, (tmp_path / f"err{w}.log").read_text()[-3000:]

    union = {i: t for rows in inputs for i, t in rows}
    answers: dict[str, set[int]] = {}
    for w, rows in enumerate(inputs):
        out = _outputs(tmp_path / f"out{w}.jsonl")
        assert sorted(r["id"] for r in out) == sorted(i for i, _ in rows)  # one result each
        assert all(r["label"] and not r.get("error") for r in out)
        for r in out:
            answers.setdefault(r["id"], set()).add(r["label_id"])
    # every worker gave an item the same label (nothing rewrote labels meanwhile)
    assert all(len(ids) == 1 for ids in answers.values())

    store = open_store(pg_url)
    try:
        assert store.count("SELECT count(*) FROM items") == len(union)  # none lost, none twice
        # one canonical label per raw label, and every raw label founded at most one label
        founders = Counter(r[0] for r in store.query("SELECT name FROM labels"))
        assert max(founders.values()) == 1
        raws = store.query("SELECT raw_label, count(DISTINCT label_id) FROM aliases GROUP BY 1")
        assert all(n == 1 for _, n in raws)
        llm_items = store.count("SELECT count(*) FROM items WHERE source = 'llm'")
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    asked = ledger_counts(ledger)
    assert max(asked.values()) == 1  # no text was paid for twice across workers
    assert sum(asked.values()) == llm_items  # LLM calls = distinct misses


def test_a_killed_worker_loses_nothing_acknowledged(pg_url, tmp_path):
    pool = [(f"{i}.{n}", f"{t} (case {n})") for n in range(3) for i, t in _pool()]
    ledger = tmp_path / "ledger.log"
    _write(tmp_path / "a.jsonl", pool)
    _write(tmp_path / "b.jsonl", list(reversed(pool)))
    victim = subprocess.Popen(
        _cmd(tmp_path / "a.jsonl", tmp_path / "a.out", pg_url, ledger, 0.05), env=_ENV
    )
    other = subprocess.Popen(
        _cmd(tmp_path / "b.jsonl", tmp_path / "b.out", pg_url, ledger, 0.05), env=_ENV
    )
    deadline = time.monotonic() + 60
    store = open_store(pg_url)
    try:  # rows reach -o only at the end of a job: wait for the store to hold work instead
        while store.count("SELECT count(*) FROM items") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        store.close()
    assert victim.poll() is None, "the worker finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert other.wait(timeout=240) == 0  # the survivor takes over the victim's claims
    acknowledged = _outputs(tmp_path / "a.out")
    rerun = subprocess.run(
        _cmd(tmp_path / "a.jsonl", tmp_path / "a2.out", pg_url, ledger, 0.05), env=_ENV
    )
    assert rerun.returncode == 0

    store = open_store(pg_url)
    try:
        stored = {i: lab for i, lab in store.query("SELECT ext_id, label_id FROM items")}
        assert len(stored) == len(pool)
    finally:
        store.close()
    # whatever a killed job delivered (nothing, unless it was killed while writing) is stored
    assert all(stored[r["id"]] == r["label_id"] for r in acknowledged)
    resumed = {r["id"]: r for r in _outputs(tmp_path / "a2.out")}
    assert len(resumed) == len(pool) and all(r["label"] for r in resumed.values())
    asked = ledger_counts(ledger)
    # only the victim's requests in flight at the kill (concurrency 2) may be paid twice
    assert sum(n > 1 for n in asked.values()) <= 2
