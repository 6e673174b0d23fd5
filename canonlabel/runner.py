"""The ``classify`` job: stream records through a Classifier with progress and summary."""

from __future__ import annotations

import json
import sys
import time
from itertools import islice
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from canonlabel.config import Settings
from canonlabel.io import count_lines, read_records
from canonlabel.types import Result

CHUNK = 256


def run_classify(
    input: str,
    output: Path | None,
    settings: Settings,
    *,
    text_field: str = "text",
    id_field: str = "id",
    limit: int | None = None,
    console: Console | None = None,
) -> dict:
    """Classify every record of ``input`` into ``output`` (JSONL); return the summary."""
    from canonlabel.pipeline import Classifier

    console = console or Console(stderr=True)
    records = read_records(input, text_field=text_field, id_field=id_field)
    if limit:
        records = islice(records, limit)
    total = count_lines(input)
    total = min(total, limit) if total and limit else (limit or total)
    with console.status("loading models and store..."):
        clf = Classifier.open(settings=settings)
    start = time.perf_counter()
    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    progress = Progress(
        TextColumn("[bold]classify"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("hit {task.fields[hit]:.0%}  llm {task.fields[llm]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    try:
        with clf, progress:
            task = progress.add_task("classify", total=total, hit=0.0, llm=0)
            while chunk := list(islice(records, CHUNK)):
                for result in _classify_chunk(clf, chunk):
                    sink.write(json.dumps(result.output_row(), ensure_ascii=False) + "\n")
                sink.flush()
                c = clf.counters
                answered = c["items"] - c["failed"]
                hits = c["exact_hits"] + c["cache_hits"] + c["resumed"]
                progress.update(
                    task,
                    advance=len(chunk),
                    llm=c["llm_calls"],
                    hit=hits / answered if answered else 0.0,
                )
            summary = _summary(clf, time.perf_counter() - start)
    except KeyboardInterrupt:
        summary = _summary(clf, time.perf_counter() - start) | {"interrupted": True}
    finally:
        if output:
            sink.close()
    _print_summary(console, summary)
    return summary


def _classify_chunk(clf, chunk) -> list[Result]:
    good = [r for r in chunk if r.error is None]
    results = iter(clf.classify_many([r.text for r in good], [r.id for r in good]))
    out = []
    for record in chunk:
        if record.error is None:
            out.append(next(results))
        else:
            clf.counters["items"] += 1
            clf.counters["failed"] += 1
            out.append(
                Result(
                    text=record.text or "",
                    label=None,
                    label_id=None,
                    raw_label=None,
                    source=None,
                    id=record.id or f"line:{record.line}",
                    error=record.error,
                )
            )
    return out


def _summary(clf, seconds: float) -> dict:
    c = clf.counters
    answered = c["items"] - c["failed"]
    hits = c["exact_hits"] + c["cache_hits"]
    return {
        "items": c["items"],
        "exact_hits": c["exact_hits"],
        "cache_hits": c["cache_hits"],
        "resumed": c["resumed"],
        "llm_calls": c["llm_calls"],
        "llm_items": c["llm_items"],
        "failed": c["failed"],
        "raw_labels": len(clf.space.aliases),
        "labels": len(clf.space),
        "hit_rate": round(hits / (answered - c["resumed"]), 4) if answered > c["resumed"] else 0.0,
        "seconds": round(seconds, 2),
        "llm_seconds": round(c["llm_seconds"], 2),
        "embed_seconds": round(c["embed_seconds"], 2),
        "tokens": c["prompt_tokens"] + c["completion_tokens"],
    }


def _print_summary(console: Console, summary: dict) -> None:
    from rich.table import Table

    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
