"""SIGKILL at random points of classify, consolidate and curation: the store stays
consistent and every acknowledged row is in it (benchmarks/faults.py kill does 60)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from canonlabel.testing import faults

DATA = Path(__file__).parents[1] / "data" / "banking77_200.jsonl"


def _texts(n: int) -> list[str]:
    rows = [json.loads(x)["text"] for x in DATA.read_text(encoding="utf-8").splitlines()]
    return [f"{t} (case {i})" for i, t in enumerate((rows * (n // len(rows) + 1))[:n])]


def test_killed_classify_loses_nothing_acknowledged(tmp_path):
    report = faults.kill_classify(tmp_path, _texts(1500), 2, random.Random(1))
    assert report["integrity_failures"] == 0 and report["invariant_failures"] == 0
    # rows reach -o only at the end of a job (with their final labels): a killed job
    # acknowledged nothing it had not stored, and the resumed one delivers every row
    assert report["lost_acknowledged"] == 0
    assert report["final_exit"] == 0 and report["final_answered"] == 1500
    # only requests in flight at a kill (concurrency 2) can have been sent twice
    assert report["texts_sent_twice"] <= 2 * report["kills"]


def test_killed_consolidation_and_curation_keep_the_store_consistent(tmp_path):
    for run in (faults.kill_consolidate, faults.kill_curation):
        report = run(tmp_path, _texts(300), 2, random.Random(2))
        assert report["integrity_failures"] == 0, report
        assert report["invariant_failures"] == 0, report
