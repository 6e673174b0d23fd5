import pytest

from canonlabel.errors import InputError
from canonlabel.io import read_records


def test_jsonl_bad_lines_become_records_with_errors(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(
        b'{"id": 1, "text": "fine"}\n'
        b"not json\n"
        b"\n"
        b'{"id": 3, "text": "\xff\xfe bad utf8"}\n'
        b"[1, 2]\n"
        b'{"id": 5, "body": "no text field"}\n'
        b'{"id": 6, "text": "' + b"x" * (2 << 20) + b'"}\n'
        b'{"id": 7, "text": "last"}'
    )
    records = list(read_records(str(p)))
    assert [r.text for r in records if r.error is None] == ["fine", "last"]
    errors = [r.error for r in records if r.error]
    assert len(errors) == 5
    assert "not valid JSON" in errors[0] and "UTF-8" in errors[1]
    assert "not a JSON object" in errors[2] and "'text'" in errors[3] and "1 MiB" in errors[4]
    assert records[0].id == "1"


def test_csv_and_txt(tmp_path):
    c = tmp_path / "in.csv"
    c.write_text('id,text\n1,"hello, world"\n2,"multi\nline"\n')
    assert [(r.id, r.text) for r in read_records(str(c))] == [
        ("1", "hello, world"),
        ("2", "multi\nline"),
    ]
    t = tmp_path / "in.txt"
    t.write_bytes(b"one\r\n\ntwo\n\xffthree\n")
    records = list(read_records(str(t)))
    assert [r.text for r in records] == ["one", "two", None]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list(read_records(str(tmp_path / "nope.jsonl")))
    with pytest.raises(InputError, match="format"):
        list(read_records(str(tmp_path / "x.parquet")))
    c = tmp_path / "in.csv"
    c.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="--text-field"):
        list(read_records(str(c)))
