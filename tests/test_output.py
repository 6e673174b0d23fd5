"""``classify -o``: rows are written to what ``-o`` names, never swapped out or read back.

The job's rows change label after they are made (the end-of-job consolidation here
splits one raw label given to two intents), so each test checks that the rows that
arrive carry the final labels and that the destination is still what it was.
"""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from canonlabel import Classifier, Settings
from canonlabel.runner import run_classify
from canonlabel.testing import FakeLabeler
from tests.test_consolidate import _OPENED, final_labels
from tests.test_regroup import sloppy_job


@pytest.fixture(autouse=True)
def _close_classifiers():
    yield
    while _OPENED:
        _OPENED.pop().close()


@pytest.fixture
def job(tmp_path, monkeypatch):
    """An input file and settings whose end-of-job consolidation relabels rows."""
    return sloppy_job(tmp_path, monkeypatch)


def _check_final(settings: Settings, text: str, n: int) -> None:
    rows = [json.loads(x) for x in text.splitlines()]
    assert len(rows) == n
    clf = Classifier.open(settings=settings, labeler=FakeLabeler())
    _OPENED.append(clf)
    stored = final_labels(clf)
    assert {r["id"]: r["label"] for r in rows} == {r["id"]: stored[r["id"]] for r in rows}


def test_a_regular_file_gets_final_labels(job, tmp_path):
    src, settings, n = job
    out = tmp_path / "out.jsonl"
    out.write_text("old content that is longer than nothing\n" * 1000)
    summary = run_classify(str(src), out, settings)
    assert summary["relabelled_rows"] > 0  # the test would prove nothing otherwise
    _check_final(settings, out.read_text(encoding="utf-8"), n)
    assert not list(tmp_path.glob("out.jsonl.*"))  # no temporary file left beside it


def test_a_symlink_stays_a_link_and_its_target_gets_the_rows(job, tmp_path):
    src, settings, n = job
    target = tmp_path / "target.jsonl"
    target.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    run_classify(str(src), link, settings)
    assert link.is_symlink() and os.readlink(link) == str(target)
    _check_final(settings, target.read_text(encoding="utf-8"), n)


def test_a_fifo_with_a_reader_receives_every_row_and_stays_a_fifo(job, tmp_path):
    src, settings, n = job
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    run_classify(str(src), fifo, settings)
    reader.join(timeout=60)
    assert not reader.is_alive(), "the job never closed the FIFO"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    _check_final(settings, got[0], n)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_null_device_stays_a_device(job, tmp_path):
    """A private copy of /dev/null (same major/minor): the real one is never touched."""
    src, settings, n = job
    null = tmp_path / "null"
    real = os.stat("/dev/null")
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, real.st_rdev)
    except PermissionError:
        pytest.skip("this container does not allow device nodes")
    summary = run_classify(str(src), null, settings)
    assert summary["relabelled_rows"] > 0
    mode = os.stat(null).st_mode
    assert stat.S_ISCHR(mode) and os.stat(null).st_rdev == real.st_rdev
    assert not list(tmp_path.glob("null.*"))


def test_stdout_gets_final_labels(job, capsys):
    src, settings, n = job
    run_classify(str(src), None, settings)
    _check_final(settings, capsys.readouterr().out, n)


def test_an_unwritable_existing_output_fails_before_any_work(tmp_path):
    from canonlabel.errors import InputError
    from canonlabel.io import check_output

    assert check_output(tmp_path / "new.jsonl") == tmp_path / "new.jsonl"
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.jsonl")
    # an existing, writable path needs no writable directory (/dev/null as non-root)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "out.jsonl").write_text("")
    locked.chmod(0o555)
    try:
        assert check_output(locked / "out.jsonl") == locked / "out.jsonl"
    finally:
        locked.chmod(0o755)


def test_the_row_writer_writes_in_place_and_dash_is_stdout(tmp_path, capsys, monkeypatch):
    """Every command's ``-o`` goes through RowWriter (predict, cluster, annotate, the
    categories job, and the spool of classify)."""
    from pathlib import Path

    from canonlabel.io import RowWriter

    target = tmp_path / "target.jsonl"
    target.write_text("old content\n" * 100)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with RowWriter(link) as sink:
        sink.write({"text": "é"})
    assert link.is_symlink() and target.read_text(encoding="utf-8") == '{"text": "é"}\n'
    monkeypatch.chdir(tmp_path)
    for dest in (None, Path("-")):
        with RowWriter(dest) as sink:
            sink.write_many([{"n": 1}, {"n": 2}])
    assert capsys.readouterr().out == '{"n": 1}\n{"n": 2}\n' * 2
    assert not (tmp_path / "-").exists()
