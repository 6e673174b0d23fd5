"""Crash testing: SIGKILL canonlabel at random points, then check nothing was lost.

Used by ``tests/reliability/test_crash.py`` (a few kills) and ``benchmarks/faults.py``
(at least 50). Three targets, each a child process on one store:

- ``classify``: ``canonlabel classify`` over a file with a fake LLM that logs every
  request it is sent (the moment a real API would bill it);
- ``consolidate``: ``canonlabel consolidate`` on a store full of raw-label variants;
- ``curation``: a loop of merge / split / rename / undo.

After every kill: the store's integrity check, every item's label resolves to a live
label, every alias too, and (for ``classify``) every row the job had written to its
output, that is acknowledged, is in the store with the same label.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from canonlabel.store import SqliteStore
from canonlabel.testing import ledger_counts

FAKE = ["--embedder", "hash"]
_CURATION_LOOP = """
import random, sys
from canonlabel import Classifier, Settings
from canonlabel.errors import CurationError
from canonlabel.testing import FakeLabeler, HashEmbedder
s = Settings(db=sys.argv[1], consolidate_every=0)
clf = Classifier.open(settings=s, embedder=HashEmbedder(), labeler=FakeLabeler())
rng = random.Random(int(sys.argv[2]))
for step in range(100000):
    live = sorted({clf.space.resolve(i) for i in clf.space.names})
    action = rng.choice(["merge", "merge", "split", "rename", "undo", "undo"])
    try:
        if action == "merge" and len(live) > 1:
            a, b = rng.sample(live, 2)
            clf.merge(a, b)
        elif action == "split":
            clf.split(rng.choice(live), k=2)
        elif action == "rename":
            clf.rename(rng.choice(live), f"renamed_{step}")
        elif action == "undo":
            clf.undo()
    except CurationError:
        pass
    print(step, flush=True)
"""


@dataclass
class KillReport:
    target: str
    kills: int = 0
    killed_mid_run: int = 0  # the process was still running when killed
    integrity_failures: int = 0
    invariant_failures: list[str] = field(default_factory=list)
    acknowledged: int = 0
    lost_acknowledged: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["invariant_failures"] = len(self.invariant_failures)
        d["examples"] = self.invariant_failures[:3]
        return d


def check_store(db: Path) -> list[str]:
    """Problems found in a store after a crash (empty list: consistent)."""
    store = SqliteStore(db)
    try:
        problems = []
        if store.integrity_check() != "ok":
            problems.append("integrity_check failed")
        parent = {r.id: r.merged_into for r in store.labels.rows()}

        def root(label: int | None) -> int | None:
            seen = set()
            while label is not None and parent.get(label) is not None:
                if label in seen:
                    return None  # a cycle
                seen.add(label)
                label = parent[label]
            return label if label in parent else None

        for label in store.members.label_counts():
            if root(label) is None:
                problems.append(f"item label {label} does not resolve")
        for alias in store.aliases.rows():
            if root(alias.label_id) is None:
                problems.append(f"alias {alias.raw_label} does not resolve")
        return problems
    finally:
        store.close()


def _acknowledged_lost(db: Path, out: Path) -> tuple[int, int]:
    """Rows written to the job's output (acknowledged) and how many the store lacks."""
    if not out.exists():
        return 0, 0
    store = SqliteStore(db)
    try:
        stored, failed = store.items.identities(), store.failures.ext_ids()
    finally:
        store.close()
    acked = lost = 0
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill was never acknowledged
        acked += 1
        if (row.get("label") and (row["id"], row["text"]) not in stored) or (
            not row.get("label") and row["id"] not in failed and row.get("id", "").startswith("r")
        ):
            lost += 1
    return acked, lost


def _kill_at(cmd: list[str], delay: float, env=None) -> bool:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(delay)
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return running


def write_input(path: Path, texts: list[str]) -> None:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )


def classify_cmd(src: Path, out: Path, db: Path, ledger: Path, concurrency: int = 2):
    return [
        sys.executable, "-m", "canonlabel.cli", "classify", str(src), "-o", str(out),
        "--db", str(db), "--llm", f"fake:latency=0.003,log={ledger}", "--concurrency",
        str(concurrency), *FAKE,
    ]  # fmt: skip


def kill_classify(workdir: Path, texts: list[str], kills: int, rng: random.Random) -> dict:
    """Kill a classify job ``kills`` times at random moments, resuming each time; then
    finish it and count texts the LLM was sent more than once."""
    src, db, ledger = workdir / "in.jsonl", workdir / "c.db", workdir / "ledger.log"
    write_input(src, texts)
    report = KillReport("classify")
    for k in range(kills):
        out = workdir / f"out{k}.jsonl"
        report.killed_mid_run += _kill_at(classify_cmd(src, out, db, ledger), rng.uniform(1.0, 3.0))
        report.kills += 1
        _record(report, db, out)
    final = workdir / "final.jsonl"
    done = subprocess.run(classify_cmd(src, final, db, ledger), capture_output=True, text=True)
    rows = [json.loads(x) for x in final.read_text(encoding="utf-8").splitlines()]
    asked = ledger_counts(ledger)
    llm_items = _llm_items(db)
    return report.as_dict() | {
        "final_exit": done.returncode,
        "items": len(texts),
        "final_rows": len(rows),
        "final_answered": sum(1 for r in rows if r.get("label")),
        "llm_requests": sum(asked.values()),
        "llm_items": llm_items,
        "texts_sent_twice": sum(1 for n in asked.values() if n > 1),
    }


def kill_consolidate(workdir: Path, texts: list[str], kills: int, rng: random.Random) -> dict:
    db, src, ledger = workdir / "k.db", workdir / "k.jsonl", workdir / "k.log"
    write_input(src, texts)
    env = dict(os.environ, CANONLABEL_CONSOLIDATE_EVERY="0")
    subprocess.run(
        classify_cmd(src, workdir / "k.out", db, ledger), capture_output=True, env=env, check=True
    )
    cmd = [sys.executable, "-m", "canonlabel.cli", "consolidate", "--db", str(db), *FAKE]
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    span = time.perf_counter() - start
    report = KillReport("consolidate")
    for _ in range(kills):
        # undo first, so every run has work to do, then kill somewhere in the next run
        subprocess.run([*cmd[:3], "undo", "--db", str(db), *FAKE], capture_output=True)
        report.killed_mid_run += _kill_at(cmd, rng.uniform(0.4 * span, 0.95 * span))
        report.kills += 1
        _record(report, db, None)
    return report.as_dict() | {"unkilled_seconds": round(span, 2)}


def kill_curation(workdir: Path, texts: list[str], kills: int, rng: random.Random) -> dict:
    db, src, ledger = workdir / "u.db", workdir / "u.jsonl", workdir / "u.log"
    write_input(src, texts)
    subprocess.run(
        classify_cmd(src, workdir / "u.out", db, ledger), capture_output=True, check=True
    )
    report = KillReport("curation")
    for k in range(kills):
        cmd = [sys.executable, "-c", _CURATION_LOOP, str(db), str(k)]
        report.killed_mid_run += _kill_at(cmd, rng.uniform(1.5, 3.5))
        report.kills += 1
        _record(report, db, None)
    return report.as_dict()


def _record(report: KillReport, db: Path, out: Path | None) -> None:
    if not db.exists():
        return
    problems = check_store(db)
    report.integrity_failures += "integrity_check failed" in problems
    report.invariant_failures += [p for p in problems if p != "integrity_check failed"]
    if out is not None:
        acked, lost = _acknowledged_lost(db, out)
        report.acknowledged += acked
        report.lost_acknowledged += lost


def _llm_items(db: Path) -> int:
    store = SqliteStore(db)
    try:
        return store.items.count(source="llm")
    finally:
        store.close()
