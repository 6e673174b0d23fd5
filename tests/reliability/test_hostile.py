"""Every hostile input gets its expected outcome through the API, HTTP and the CLI."""

from __future__ import annotations

import json

import pytest

from canonlabel import Classifier, Settings
from canonlabel.server import create_app
from canonlabel.store import SqliteStore
from canonlabel.testing import FakeLabeler, HashEmbedder
from tests.conftest import run_cli, with_app
from tests.reliability import hostile

CASES = hostile.text_cases()
FAKE = ["--llm", "fake", "--embedder", "hash"]


def _mismatches(cases, outcomes, attr):
    return [
        (c.name, getattr(c, attr), got)
        for c, got in zip(cases, outcomes)
        if got != getattr(c, attr)
    ]


def test_the_corpus_is_large_enough():
    strings = [c for c in CASES if isinstance(c.payload, str)]
    total = len(CASES) * 2 + len(strings) + len(hostile.file_cases())
    assert total >= 200, total


def test_python_api(make_clf):
    clf, _ = make_clf()
    outcomes = hostile.run_api(clf, CASES)
    assert _mismatches(CASES, outcomes, "api") == []
    assert clf.store.integrity_check() == "ok"


def test_http(tmp_path):
    s = Settings(db=tmp_path / "h.db", max_text_chars=hostile.LIMIT_CHARS)
    clf = Classifier(SqliteStore(s.db), HashEmbedder(), FakeLabeler(), s)
    app = create_app(s, classifier=clf)

    outcomes = with_app(app, lambda client: hostile.run_http(client, CASES))
    assert _mismatches(CASES, outcomes, "http") == []


def test_cli_jsonl(tmp_path):
    src, out = tmp_path / "hostile.jsonl", tmp_path / "out.jsonl"
    strings = hostile.write_jsonl(CASES, src)
    done = run_cli("classify", str(src), "-o", str(out), "--db", str(tmp_path / "c.db"), *FAKE)
    assert done.returncode == 0, done.stderr
    assert _mismatches(strings, hostile.read_outcomes(strings, out), "cli") == []


@pytest.mark.parametrize("case", hostile.file_cases(), ids=lambda c: c.name)
def test_cli_files(tmp_path, case):
    src, out = tmp_path / f"in{case.suffix}", tmp_path / "out.jsonl"
    src.write_bytes(case.content)
    done = run_cli("classify", str(src), "-o", str(out), "--db", str(tmp_path / "f.db"), *FAKE)
    assert "Traceback" not in done.stderr
    if case.expect == "error":
        assert done.returncode == 2 and done.stderr.startswith("error:"), done.stderr
        return
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == case.rows, rows
    assert sum(1 for r in rows if r.get("error")) == case.failed, rows
