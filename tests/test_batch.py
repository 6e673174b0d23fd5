"""``classify --ray``: the Ray Data pipeline gives the plain job's labels and summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canonlabel import Settings
from canonlabel.runner import run_classify
from canonlabel.store import open_store
from canonlabel.testing import ledger_counts

ray = pytest.importorskip("ray")
DATA = Path(__file__).parent / "data" / "banking77_200.jsonl"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _input(tmp_path: Path) -> str:
    """The sample plus a malformed line and an empty text: per-item failures, not a crash."""
    src = tmp_path / "in.jsonl"
    src.write_text(
        DATA.read_text(encoding="utf-8") + '{"id": "bad", "text": \n{"id": "e", "text": "  "}\n',
        encoding="utf-8",
    )
    return str(src)


def test_ray_job_matches_the_plain_job(tmp_path):
    from canonlabel.batch import run_classify_ray

    src = _input(tmp_path)
    plain, on_ray = tmp_path / "plain.jsonl", tmp_path / "ray.jsonl"
    s = Settings(llm="fake", embedder="hash")
    a = run_classify(src, plain, s.model_copy(update={"db": str(tmp_path / "a.db")}))
    b = run_classify_ray(src, on_ray, s.model_copy(update={"db": str(tmp_path / "b.db")}))
    rows_a, rows_b = _rows(plain), _rows(on_ray)
    assert [r["id"] for r in rows_a] == [r["id"] for r in rows_b]  # same order
    assert [r["label"] for r in rows_a] == [r["label"] for r in rows_b]
    assert rows_b[-1]["error"] and rows_b[-2]["error"]  # both bad lines reported
    for key in ("items", "failed", "llm_calls", "cache_hits", "labels", "raw_labels"):
        assert a[key] == b[key], key


def test_ray_job_with_two_labellers_on_postgres(tmp_path, pg_url):
    from canonlabel.batch import run_classify_ray

    src = _input(tmp_path)
    out, ledger = tmp_path / "ray.jsonl", tmp_path / "ledger.log"
    s = Settings(llm=f"fake:latency=0.01,log={ledger}", embedder="hash", db=pg_url)
    summary = run_classify_ray(src, out, s, labelers=2)
    rows = _rows(out)
    assert summary["ray_labelers"] == 2 and summary["items"] == 202
    assert len(rows) == 202 and sum(1 for r in rows if r.get("label")) == 200
    store = open_store(pg_url)
    try:
        assert store.count("SELECT count(*) FROM items") == 200
        llm_items = store.count("SELECT count(*) FROM items WHERE source = 'llm'")
    finally:
        store.close()
    asked = ledger_counts(ledger)
    labelling_calls = (
        summary["llm_calls"] - summary["adjudication_calls"] - summary["recheck_calls"]
    )
    assert max(asked.values()) == 1 and sum(asked.values()) == llm_items == labelling_calls


def test_ray_refuses_options_of_other_pipelines(tmp_path):
    from tests.conftest import run_cli

    done = run_cli("classify", str(DATA), "--ray", "--router", str(tmp_path), "--llm", "fake",
                   "--embedder", "hash", "--db", str(tmp_path / "x.db"))  # fmt: skip
    assert done.returncode == 2 and "--ray runs the open-set pipeline" in done.stderr
    assert "--router is deprecated; use --distilled" in done.stderr  # its old name still works
