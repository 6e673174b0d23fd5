"""Reading input records (JSONL, CSV, plain text, stdin) without ever crashing a job.

A line that cannot be read (bad JSON, not UTF-8, missing text field, too long) becomes
a record with ``error`` set, which the caller reports as a per-item failure.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

from canonlabel.errors import InputError

MAX_LINE_BYTES = 1 << 20  # a "short text" line over 1 MiB is a broken file, not a text


@dataclass(frozen=True)
class Record:
    line: int
    id: str | None
    text: str | None
    error: str | None = None
    extra: dict | None = None


def check_output(path: Path | None) -> Path | None:
    """Fail before any work when ``path`` cannot be written (no directory, a directory).

    An existing path (a file, a symlink's target, a FIFO, a device such as /dev/null)
    only has to be writable itself: outputs are written in place, never replaced."""
    if path is None or str(path) == "-":
        return path
    import os

    if path.is_dir():
        raise InputError(f"output {path} is a directory; pass a file path to -o")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise InputError(f"output {path} is not writable; pass another -o")
        return path
    if not path.parent.is_dir():
        raise InputError(
            f"output directory {path.parent} does not exist; create it or pass another -o"
        )
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output {path} cannot be created; pass another -o")
    return path


def jsonl(row: dict) -> str:
    """One JSONL line: the row as JSON (UTF-8 kept as is) and a newline."""
    return json.dumps(row, ensure_ascii=False) + "\n"


class RowWriter:
    """JSONL rows written to ``-o`` as they come (stdout when None or "-").

    The one writer of every job's output: the destination is opened for writing and
    nothing else, so a regular file is truncated and written, a symlink's target is
    written, and a FIFO or a device (/dev/stdout, /dev/null) receives a stream; it is
    never renamed, replaced or read back. Stdout is flushed, never closed."""

    def __init__(self, output: Path | None) -> None:
        self._to_stdout = output is None or str(output) == "-"
        self._sink: TextIO = sys.stdout
        if output is not None and not self._to_stdout:
            self._sink = open(output, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, row: dict) -> None:
        self._sink.write(jsonl(row))

    def write_many(self, rows: Iterable[dict]) -> None:
        """Write ``rows`` in one call (a chunk of a spool)."""
        self._sink.write("".join(jsonl(r) for r in rows))

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        if self._to_stdout:
            self._sink.flush()
        else:
            self._sink.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RowSpool:
    """Output rows held in an anonymous temporary file until the job ends.

    A job's rows may change label after they are made (consolidation), so they are
    spooled and written to the destination once, in one pass, with their final labels,
    by a :class:`RowWriter` (so the destination is written in place, never replaced)."""

    def __init__(self) -> None:
        import tempfile

        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.rows = 0

    def write(self, row: dict) -> None:
        self._file.write(jsonl(row))
        self.rows += 1

    def deliver(self, output: Path | None, update=None, chunk: int = 500) -> int:
        """Write every spooled row to ``output`` (stdout when None or "-"), each chunk
        of rows passed through ``update(rows) -> changed`` first; returns how many rows
        ``update`` changed."""
        from itertools import islice

        self._file.flush()
        self._file.seek(0)
        changed = 0
        with RowWriter(output) as sink:
            while lines := list(islice(self._file, chunk)):
                rows = [json.loads(line) for line in lines]
                changed += update(rows) if update is not None else 0
                sink.write_many(rows)
        return changed

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RowSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if path == "-" or suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl" if path != "-" else "auto"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix == ".txt":
        return "txt"
    raise InputError(
        f"cannot tell the format of {path}: use a .jsonl, .csv, .tsv or .txt file, or - for stdin"
    )


def read_records(
    path: str, *, text_field: str = "text", id_field: str = "id", fmt: str | None = None
) -> Iterator[Record]:
    """One :class:`Record` per input line (or CSV row); checks the path before reading."""
    fmt = fmt or detect_format(path)
    if path != "-" and not Path(path).is_file():
        raise InputError(f"input file {path} does not exist")
    return _records(path, fmt, text_field, id_field)


def _records(path: str, fmt: str, text_field: str, id_field: str) -> Iterator[Record]:
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        if fmt in ("csv", "tsv"):
            yield from _read_csv(stream, text_field, id_field, "\t" if fmt == "tsv" else ",")
        else:
            yield from _read_lines(stream, fmt, text_field, id_field)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _lines(stream) -> Iterator[tuple[int, bytes | None]]:
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, raw


def _read_lines(stream, fmt, text_field, id_field) -> Iterator[Record]:
    for number, raw in _lines(stream):
        if raw is None:
            yield Record(number, None, None, f"line {number} is longer than 1 MiB")
            continue
        try:
            line = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            yield Record(
                number,
                None,
                None,
                f"line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start})",
            )
            continue
        if not line.strip():
            continue  # blank lines separate nothing in JSONL or text files
        if fmt == "txt" or (fmt == "auto" and not line.lstrip().startswith("{")):
            yield Record(number, None, line.rstrip("\r\n"))
            continue
        yield _json_record(number, line, text_field, id_field)


def _json_record(number: int, line: str, text_field: str, id_field: str) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(number, None, None, f"line {number} is not valid JSON: {exc.msg}")
    except RecursionError:
        return Record(number, None, None, f"line {number} nests JSON too deeply")
    if not isinstance(obj, dict):
        return Record(number, None, None, f"line {number} is not a JSON object")
    ext_id = obj.get(id_field)
    ext_id = None if ext_id is None else str(ext_id)
    text = obj.get(text_field)
    if not isinstance(text, str):
        return Record(
            number,
            ext_id,
            None,
            f"line {number} has no string field {text_field!r} (use --text-field)",
        )
    return Record(number, ext_id, text, extra=obj)


def _read_csv(stream, text_field, id_field, delimiter) -> Iterator[Record]:
    wrapper = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(wrapper, text_field, id_field, delimiter)
    finally:
        wrapper.detach()  # the caller owns (and closes) the byte stream


def _csv_rows(wrapper, text_field, id_field, delimiter) -> Iterator[Record]:
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.DictReader(wrapper, delimiter=delimiter)
    if reader.fieldnames is None or text_field not in reader.fieldnames:
        raise InputError(
            f"CSV has no column {text_field!r} (columns: {reader.fieldnames}); use --text-field"
        )
    number = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield Record(number, None, None, f"CSV row {number}: {exc}")
            continue
        number = reader.line_num
        text = row.get(text_field)
        ext_id = row.get(id_field) if id_field in row else None
        if text is None:
            yield Record(number, ext_id, None, f"CSV row {number} has too few columns")
        elif any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text):
            yield Record(number, ext_id, None, f"CSV row {number} is not valid UTF-8")
        else:
            yield Record(number, ext_id, text)


def count_lines(path: str) -> int | None:
    """Fast line count for a progress bar total (None for stdin)."""
    if path == "-":
        return None
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


@dataclass(frozen=True)
class JobIO:
    """A file job's input records and output rows (the flags every such command has)."""

    input: str  # a .jsonl, .csv, .tsv or .txt path, or "-" for stdin
    output: Path | None = None  # JSONL rows; stdout when None or "-"
    text_field: str = "text"
    id_field: str = "id"
    limit: int | None = None  # the first N records only

    def records(self) -> Iterator[Record]:
        """The input's records, up to ``limit`` (the path is checked now)."""
        from itertools import islice

        records = read_records(self.input, text_field=self.text_field, id_field=self.id_field)
        return islice(records, self.limit) if self.limit else records

    def total(self) -> int | None:
        """Records to expect, for a progress bar (None: unknown, stdin)."""
        total = count_lines(self.input)
        return min(total, self.limit) if total and self.limit else (self.limit or total)

    def writer(self) -> RowWriter:
        """The output, opened for writing (see :class:`RowWriter`)."""
        return RowWriter(self.output)


def read_labelled(
    path: str,
    *,
    text_field: str = "text",
    labels_field: str = "labels",
    split: str | None = None,
    limit: int | None = None,
    shuffle_seed=None,
) -> tuple[list[str], list[list[str]]]:
    """Texts and gold label lists from a JSONL file in the ``../shared/data`` format.

    Rows without a usable text or with an empty label list are skipped (counted in the
    error message only if nothing is left). ``shuffle_seed`` samples before ``limit``.
    """
    texts, golds = [], []
    for record in read_records(path, text_field=text_field, fmt="jsonl"):
        if record.error or not record.text or not record.text.strip():
            continue
        extra = record.extra or {}
        if split and extra.get("split") != split:
            continue
        gold = extra.get(labels_field)
        if isinstance(gold, str):
            gold = [gold]
        if not isinstance(gold, list) or not gold:
            continue
        texts.append(record.text)
        golds.append([str(g) for g in gold])
    if shuffle_seed is not None:
        import random

        order = list(range(len(texts)))
        random.Random(shuffle_seed).shuffle(order)
        texts, golds = [texts[i] for i in order], [golds[i] for i in order]
    if limit:
        texts, golds = texts[:limit], golds[:limit]
    if not texts:
        raise InputError(
            f"{path} has no rows with a text and a non-empty {labels_field!r} "
            f"list{f' in split {split!r}' if split else ''}"
        )
    return texts, golds


def usable_text(record: Record, max_chars: int) -> str:
    """The record's normalised text; raises (InputError, EmptyTextError) saying why not."""
    from canonlabel.normalize import normalize

    if record.error:
        raise InputError(record.error)
    # a record without an error has its text (and normalize rejects a non-string)
    return normalize(cast(str, record.text), max_chars)[0]
