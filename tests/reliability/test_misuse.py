"""Regressions for misuse found by trying canonlabel as a new user (issue 10, items 1-4, 6)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from canonlabel import Classifier, Settings
from canonlabel.errors import StoreBusyError
from canonlabel.server import create_app
from canonlabel.store import SqliteStore
from canonlabel.testing import FakeLabeler, HashEmbedder
from tests.conftest import run_cli, with_app

FAKE = ["--llm", "fake", "--embedder", "hash"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_reused_id_with_another_text_is_a_new_item_not_a_resume(make_clf):
    clf, llm = make_clf(min_similarity=0.95)
    first = clf.classify("hello there card", id="1")
    again = clf.classify("hello there card", id="1")
    assert clf.counters["resumed"] == 1 and again.label == first.label and llm.calls == 1
    other = clf.classify("another text entirely about weather", id="1")
    assert other.text == "another text entirely about weather"
    assert other.source == "llm" and other.label != first.label and llm.calls == 2
    assert clf.counters["reused_ids"] == 1
    # both versions are kept; the latest answers lookups by id
    assert clf.store.items.by_ext_id(["1"])["1"].text == other.text
    assert clf.store.count("SELECT count(*) FROM items WHERE ext_id = '1'") == 2


def test_reused_ids_across_files_in_the_cli(tmp_path):
    db = str(tmp_path / "s.db")
    a = _jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": "hello there card"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"id": "1", "text": "another text entirely about weather"}])
    assert (
        run_cli("classify", str(a), "-o", str(tmp_path / "a.out"), "--db", db, *FAKE).returncode
        == 0
    )
    done = run_cli("classify", str(b), "-o", str(tmp_path / "b.out"), "--db", db, *FAKE)
    assert done.returncode == 0, done.stderr
    [row] = _rows(tmp_path / "b.out")
    assert row["text"] == "another text entirely about weather" and row["source"] == "llm"
    assert "already stored with another text" in done.stderr


def test_duplicate_ids_inside_one_file_never_abort_the_job(tmp_path):
    rows = [
        {"id": "7", "text": "my card was declined at the shop"},
        {"id": "7", "text": "my card was declined at the shop"},
        {"id": "7", "text": "where is my new card, it has not arrived"},
        {"id": "8", "text": "my card was declined at the shop"},
    ]
    src, out = _jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    db = str(tmp_path / "s.db")
    done = run_cli("classify", str(src), "-o", str(out), "--db", db, *FAKE)
    assert done.returncode == 0, done.stderr
    got = _rows(out)
    assert [r["text"] for r in got] == [r["text"] for r in rows]
    assert all(r["label"] for r in got) and got[0]["label"] == got[1]["label"] == got[3]["label"]
    again = run_cli("classify", str(src), "-o", str(out), "--db", db, *FAKE)
    assert again.returncode == 0 and [r["label"] for r in _rows(out)] == [r["label"] for r in got]
    store = SqliteStore(db)
    assert store.count("SELECT count(*) FROM items") == 3  # (7, a), (7, b), (8, a)
    store.close()


def test_duplicate_ids_in_one_batch_of_the_python_api(make_clf):
    clf, llm = make_clf()
    texts = ["card declined again", "card declined again", "lost my phone today"]
    results = clf.classify_many(texts, ids=["x", "x", "x"])
    assert [r.error for r in results] == [None] * 3 and llm.calls == 2
    assert results[0].label == results[1].label != results[2].label


def test_a_second_writer_is_refused_with_a_clear_message(tmp_path):
    settings = Settings(db=tmp_path / "s.db")
    first = Classifier.open(settings=settings, embedder=HashEmbedder(), labeler=FakeLabeler())
    try:
        with pytest.raises(StoreBusyError, match="being written by another canonlabel process"):
            Classifier.open(settings=settings, embedder=HashEmbedder(), labeler=FakeLabeler())
        reader = Classifier.open(
            settings=settings, embedder=HashEmbedder(), labeler=FakeLabeler(), read_only=True
        )
        reader.close()
        src = _jsonl(tmp_path / "in.jsonl", [{"id": "1", "text": "card declined"}])
        done = run_cli("classify", str(src), "--db", str(settings.db), *FAKE)
        assert done.returncode == 2 and "being written by another" in done.stderr
        assert "Traceback" not in done.stderr
        stats = run_cli("stats", "--db", str(settings.db), "--embedder", "hash")
        assert stats.returncode == 0, stats.stderr  # readers are never blocked
    finally:
        first.close()
    second = Classifier.open(settings=settings, embedder=HashEmbedder(), labeler=FakeLabeler())
    second.close()


def test_a_second_job_with_wait_queues_behind_the_first(tmp_path):
    db = tmp_path / "s.db"
    src = _jsonl(
        tmp_path / "in.jsonl",
        [{"id": str(i), "text": f"card number {i} declined"} for i in range(5)],
    )
    first = Classifier.open(
        settings=Settings(db=db), embedder=HashEmbedder(), labeler=FakeLabeler()
    )
    first.classify("card number 0 declined", id="0")
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canonlabel.cli",
            "classify",
            str(src),
            "--db",
            str(db),
            "-o",
            str(tmp_path / "out.jsonl"),
            "--wait",
            "60",
            "--summary-json",
            str(tmp_path / "s.json"),
            *FAKE,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert job.poll() is None  # queued, not crashed
    first.close()
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 0, stderr
    rows = _rows(tmp_path / "out.jsonl")
    assert len(rows) == 5 and all(r["label"] for r in rows)
    assert json.loads((tmp_path / "s.json").read_text())["resumed"] == 1  # saw the first's work


def test_output_into_a_missing_directory_fails_before_any_work(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"id": "1", "text": "card declined"}])
    db = tmp_path / "s.db"
    done = run_cli(
        "classify", str(src), "-o", str(tmp_path / "no" / "out.jsonl"), "--db", str(db), *FAKE
    )
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and not db.exists()


def test_docs_page_is_served_without_a_cdn(tmp_path):
    s = Settings(db=tmp_path / "s.db")
    clf = Classifier(SqliteStore(s.db), HashEmbedder(), FakeLabeler(), s)
    app = create_app(s, classifier=clf)

    async def check(client):
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            got = await client.get(f"/static/swagger/{asset}")
            assert got.status_code == 200 and len(got.content) > 10_000
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")

    with_app(app, check)
