"""The ``classify`` job: stream records through a Classifier with progress and summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from canonlabel.io import JobIO, RowSpool, check_output, usable_text
from canonlabel.normalize import text_key
from canonlabel.types import Result

if TYPE_CHECKING:
    from canonlabel.categories import Assignment, CategoryIndex
    from canonlabel.distill import DistilledClassifier
    from canonlabel.embed import Embedder
    from canonlabel.io import Record
    from canonlabel.llm import Labeler

CHUNK = 256


@dataclass(frozen=True)
class CategoryOptions:
    """``classify --categories``: fixed categories matched by embedding similarity."""

    file: Path  # the category definitions (see canonlabel.categories.load_categories)
    min_similarity: float = 0.3  # below it the answer is "other"
    top_k: int = 1
    multi_threshold: float | None = None  # extra categories need this similarity
    margin: float = 0.0  # ask the LLM when the top two are this close (0: never)


def run_classify(
    input: str,
    output: Path | None,
    settings: Settings,
    *,
    text_field: str = "text",
    id_field: str = "id",
    limit: int | None = None,
    console: Console | None = None,
    distilled: Path | None = None,
    distilled_threshold: float = 0.7,
) -> dict:
    """Classify every record of ``input`` into ``output`` (JSONL); return the summary.

    With ``distilled`` (a model directory from ``train``), that model answers the items
    whose top probability reaches ``distilled_threshold``; only the rest go through
    the streaming pipeline (cache, then LLM)."""
    from canonlabel.pipeline import Classifier

    console = console or Console(stderr=True)
    check_output(output)
    files = JobIO(input, output, text_field, id_field, limit)
    records, total = files.records(), files.total()
    with console.status("loading models and store..."):
        clf = Classifier.open(settings=settings)
        model = None if distilled is None else _load_model(distilled, clf)
    start = time.perf_counter()
    with clf, RowSpool() as spool:
        try:
            _label_records(clf, records, total, spool, model, distilled_threshold, console)
            summary = _summary(clf, time.perf_counter() - start)
        except KeyboardInterrupt:
            summary = _summary(clf, time.perf_counter() - start) | {"interrupted": True}
        finally:
            # every row made, interrupted or not, reaches the output once, with the labels
            # the store holds at the end (the store is still open here)
            changed = deliver_rows(spool, output, clf)
    summary["relabelled_rows"] = changed
    _print_summary(console, summary)
    _warn(console, summary)
    return summary


def _load_model(path: Path, clf) -> DistilledClassifier:
    from canonlabel.distill import DistilledClassifier

    return DistilledClassifier.load(path, embedder=clf.embedder)


def _label_records(clf, records, total, spool: RowSpool, model, threshold, console) -> None:
    """Label ``records`` chunk by chunk into ``spool``, then consolidate."""
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
    with progress:
        task = progress.add_task("classify", total=total, hit=0.0, llm=0)
        while chunk := list(islice(records, CHUNK)):
            for row in _classify_chunk(clf, chunk, model, threshold):
                spool.write(row)
            _advance(progress, task, clf.counters, len(chunk))
    if clf.settings.consolidate_every > 0:
        with console.status("consolidating labels..."):
            # a job that labelled nothing new (a resumed, finished one) pays nothing
            clf.consolidate(adjudication_budget=None if clf.counters["llm_items"] else 0)


def _warn(console: Console, summary: dict) -> None:
    if summary["reused_ids"]:
        console.print(
            f"[yellow]warning:[/] {summary['reused_ids']} ids were already stored with "
            "another text; each was labelled as a new item (ids name texts only together "
            "with the text, see README: identity rules)"
        )
    warning = (summary.get("router") or {}).get("warning")
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)


def _advance(progress: Progress, task, c, n: int) -> None:
    answered = c["items"] - c["failed"]
    hits = c["exact_hits"] + c["cache_hits"] + c["resumed"]
    progress.update(task, advance=n, llm=c["llm_calls"], hit=hits / answered if answered else 0.0)


def _route(clf, model, threshold: float, records) -> dict[int, dict]:
    """Rows answered by the distilled model, by position in ``records``."""
    from canonlabel.errors import CanonlabelError
    from canonlabel.normalize import normalize

    texts, pos = [], []
    for i, r in enumerate(records):
        try:
            texts.append(normalize(r.text, clf.settings.max_chars)[0])
            pos.append(i)
        except CanonlabelError:
            pass  # the pipeline reports it
    if not texts:
        return {}
    P = model.predict_proba(texts)
    rows = {}
    for i, text, p in zip(pos, texts, P):
        top = int(p.argmax())
        if p[top] >= threshold:
            labels = [model.classes_[j] for j in p.argsort()[::-1] if p[j] >= model.thresholds_[j]]
            rows[i] = {
                "id": records[i].id,
                "text": text,
                "label": model.classes_[top],
                "labels": labels or [model.classes_[top]],
                "source": "model",
                "probability": round(float(p[top]), 4),
            }
    clf.counters["model_items"] += len(rows)
    clf.counters["items"] += len(rows)
    return rows


def _classify_chunk(clf, chunk, model=None, threshold: float = 0.7) -> list[dict]:
    good = [r for r in chunk if r.error is None]
    routed = _route(clf, model, threshold, good) if model is not None else {}
    rest = [r for i, r in enumerate(good) if i not in routed]
    results = iter(clf.classify_many([r.text for r in rest], [r.id for r in rest]))
    answers = iter(
        [routed[i] if i in routed else _row(clf, next(results)) for i in range(len(good))]
    )
    out = []
    for record in chunk:
        if record.error is None:
            out.append(next(answers))
        else:
            clf.counters["items"] += 1
            clf.counters["failed"] += 1
            out.append(failed_record_row(record.text, record.id, record.line, record.error))
    return out


def failed_record_row(text: str | None, ext_id: str | None, line: int, error: str) -> dict:
    """The output row of an input record that could not be read (no label)."""
    return Result(
        text=text or "",
        label=None,
        label_id=None,
        raw_label=None,
        source=None,
        id=ext_id or f"line:{line}",
        error=error,
    ).output_row()


def deliver_rows(spool: RowSpool, output: Path | None, clf) -> int:
    """Write the spooled rows to ``output`` (stdout when None) with the labels the store
    holds now (consolidation may have moved raw labels, or items one by one, since the
    rows were made); returns the number of rows whose label changed."""
    tree = _tree(clf)
    relabel = bool(clf.counters["consolidations"])
    if not relabel and tree is None:
        return spool.deliver(output)

    def update(rows: list[dict]) -> int:
        changed = relabel_rows(clf, rows) if relabel else 0
        if tree is not None:  # each row's place in the label hierarchy, top level first
            for row in rows:
                if row.get("label_id") is not None:
                    row["path"] = tree.path(row["label_id"])
        return changed

    return spool.deliver(output, update)


def _tree(clf):
    from canonlabel.hierarchy import assign_new, load

    tree = load(clf.store)
    return assign_new(clf, tree) if tree.parents else None


def relabel_rows(clf, rows: list[dict]) -> int:
    """Bring ``rows`` up to the final label space in place; returns how many changed."""
    keys = [text_key(r["text"]) for r in rows if r.get("label_id") is not None]
    stored = clf.store.items.label_ids_by_key(keys) if keys else {}
    return sum(_relabel(clf, row, stored) for row in rows)


def _relabel(clf, row: dict, stored: dict[tuple, int]) -> bool:
    space = clf.space
    raw, label_id = row.get("raw_label"), row.get("label_id")
    if label_id is None:
        return False
    key = text_key(row["text"])
    item = stored.get((row.get("id"), key), stored.get((None, key)))
    if item is not None:
        now = space.resolve(item)
    elif row.get("source") != "model":  # (a distilled model's rows are not stored)
        owner = space.aliases.get(raw, label_id)
        now = space.resolve(owner if owner in space.names else label_id)
    else:
        return False
    if now == label_id and space.names[now] == row.get("label"):
        return False
    row["label_id"], row["label"] = now, space.names[now]
    if clf.categories:
        row["category"] = clf.categories.get(now)
    return True


def _row(clf, result: Result) -> dict:
    row = result.output_row()
    if clf.categories and result.label_id is not None:
        row["category"] = clf.categories.get(result.label_id)
    return row


def _summary(clf, seconds: float) -> dict:
    c = clf.counters
    answered = c["items"] - c["failed"] - c["model_items"]
    hits = c["exact_hits"] + c["cache_hits"] + c["model_hits"]
    return {
        "items": c["items"],
        **(
            {
                "model_items": c["model_items"],
                "pipeline_share": round(1 - c["model_items"] / c["items"], 4)
                if c["items"]
                else 0.0,
            }
            if "model_items" in c
            else {}
        ),
        "exact_hits": c["exact_hits"],
        "cache_hits": c["cache_hits"],
        "resumed": c["resumed"],
        "reused_ids": c["reused_ids"],
        "llm_calls": c["llm_calls"],
        "llm_items": c["llm_items"],
        "failed": c["failed"],
        "model_hits": c["model_hits"],
        "audits": c["audits"],
        "router": clf.router.summary() if clf.router is not None else None,
        "guard": {k: c[f"guard_{k}"] for k in ("redacted", "copied", "ungrounded")},
        "raw_labels": len(clf.space.aliases),
        "consolidations": c["consolidations"],
        "adjudication_calls": c["adjudication_calls"],
        "recheck_calls": c["recheck_calls"],
        "labels": clf.label_count(),
        "consensus_moved": c["consensus_moved"],
        "llm_error_estimate": float(clf.store.meta().get("llm_error_estimate", 0.0)),
        "hit_rate": round(hits / (answered - c["resumed"]), 4) if answered > c["resumed"] else 0.0,
        "seconds": round(seconds, 2),
        "llm_seconds": round(c["llm_seconds"], 2),
        "embed_seconds": round(c["embed_seconds"], 2),
        "tokens": c["prompt_tokens"] + c["completion_tokens"],
        "cached_tokens": c["cached_tokens"],  # of those, prompt tokens not evaluated again
    }


def _print_summary(console: Console, summary: dict) -> None:
    """The few numbers that matter, readably (``--summary-json`` keeps every field)."""
    from rich.table import Table

    table = Table(title="summary", show_header=False)
    for key, value in _summary_rows(summary):
        table.add_row(key, value)
    console.print(table)


def _summary_rows(s: dict) -> list[tuple[str, str]]:
    if "exact_hits" not in s:  # another job's counts (categories): as they are
        return [(k, str(v)) for k, v in s.items() if not isinstance(v, dict)]
    items = s["items"] or 0
    rows = [
        ("items", f"{items:,}" + (f" ({s['failed']:,} failed)" if s.get("failed") else "")),
        (
            "answered without the LLM",
            _share(s["exact_hits"] + s["cache_hits"] + s.get("model_hits", 0), items),
        ),
        ("resumed from the store", f"{s['resumed']:,}"),
        ("LLM calls", f"{s['llm_calls']:,}" + _calls_detail(s)),
        ("labels", f"{s['labels']:,} (from {s['raw_labels']:,} raw labels)"),
        (
            "consensus",
            f"{s.get('consensus_moved', 0):,} answers moved; LLM error "
            f"estimate {s.get('llm_error_estimate', 0.0):.1%}",
        ),
        (
            "time",
            f"{s['seconds']:.1f} s (LLM {s['llm_seconds']:.1f} s, embedding "
            f"{s['embed_seconds']:.1f} s)",
        ),
        ("tokens", _tokens_line(s)),
    ]
    router = s.get("router")
    if router:
        rows.append(("router", _router_line(router)))
    if s.get("interrupted"):
        rows.append(("interrupted", "yes: every row made so far was written"))
    return rows


def _tokens_line(s: dict) -> str:
    """Tokens sent, and per LLM-labelled item the tokens sent and those evaluated (sent
    less the prompt prefix a cache served)."""
    line = f"{s['tokens']:,}"
    n = s.get("llm_items")
    if not n:
        return line
    line += f" ({s['tokens'] / n:.0f} per LLM-labelled item"
    cached = s.get("cached_tokens", 0)
    if cached:
        line += f", {(s['tokens'] - cached) / n:.0f} evaluated"
    return line + ")"


def _share(n: int, total: int) -> str:
    return f"{n:,} ({n / total:.1%})" if total else f"{n:,}"


def _calls_detail(s: dict) -> str:
    parts = [f"{s[k]:,} {name}" for k, name in (
        ("adjudication_calls", "adjudication"), ("recheck_calls", "second questions"))
        if s.get(k)]  # fmt: skip
    return f" (of which {', '.join(parts)})" if parts else ""


def _router_line(r: dict) -> str:
    error = r.get("error")
    line = f"head v{r.get('version', 0)}, bound {r.get('bound', 0):.0%}"
    if error is not None:
        line += f", estimated error {error:.1%} over {r.get('audits', 0):,} audits"
    return line + (f"; {r['warning']}" if r.get("warning") else "")


def run_categories(
    files: JobIO,
    settings: Settings,
    options: CategoryOptions,
    *,
    console: Console | None = None,
) -> dict:
    """``classify --categories``: fixed categories by embedding similarity, no LLM unless
    ``options.margin`` > 0 (then the LLM breaks near-ties, constrained to the tied
    categories)."""
    from canonlabel import categories as cat
    from canonlabel.llm import make_labeler

    console = console or Console(stderr=True)
    check_output(files.output)
    records = files.records()
    opened = cat.open_categories(settings, options.file)
    try:
        match = _CategoryMatch(
            opened.embedder,
            cat.load_index(opened.store, opened.embedder.dim),
            make_labeler(settings.llm, settings) if options.margin > 0 else None,
            options,
            settings.max_chars,
        )
        start = time.perf_counter()
        with files.writer() as sink:
            while chunk := list(islice(records, CHUNK)):
                sink.write_many(match.rows(chunk))
                sink.flush()
    finally:
        opened.store.close()
    summary = (
        match.counts
        | {"categories": len(match.index.names), "seconds": round(time.perf_counter() - start, 2)}
        | {"definitions": opened.defined}
    )
    _print_summary(console, summary)
    return summary


@dataclass
class _CategoryMatch:
    """Matches chunks of records to categories, counting what it answers."""

    embedder: Embedder
    index: CategoryIndex
    labeler: Labeler | None  # None: never ask the LLM
    options: CategoryOptions
    max_chars: int
    counts: dict[str, int] = field(
        default_factory=lambda: {"items": 0, "failed": 0, "other": 0, "llm_calls": 0}
    )

    def rows(self, chunk: list[Record]) -> list[dict[str, Any]]:
        """One output row per record of ``chunk``, in order (unreadable ones: an error)."""
        from canonlabel import categories as cat
        from canonlabel.errors import CanonlabelError

        texts: list[str] = []
        rows: list[dict[str, Any]] = []
        for r in chunk:
            row: dict[str, Any] = {"id": r.id, "text": r.text}
            try:
                row["text"] = usable_text(r, self.max_chars)
                texts.append(row["text"])
            except CanonlabelError as exc:
                row["error"] = str(exc)
            rows.append(row)
        o = self.options
        found = iter(
            cat.assign(
                self.index,
                self.embedder.embed(texts),
                texts,
                min_similarity=o.min_similarity,
                top_k=o.top_k,
                multi_threshold=o.multi_threshold,
                labeler=self.labeler,
                margin=o.margin,
            )
        )
        for row in rows:
            self._count(row, None if "error" in row else next(found))
        return rows

    def _count(self, row: dict[str, Any], found: Assignment | None) -> None:
        """Fill ``row`` from its assignment ``found`` (None: it failed) and count it."""
        from canonlabel.categories import OTHER

        self.counts["items"] += 1
        if found is None:
            self.counts["failed"] += 1
            return
        row |= {
            "label": found.categories[0],
            "categories": list(found.categories),
            "scores": list(found.scores),
            "source": found.source,
        }
        self.counts["other"] += found.categories[0] == OTHER
        self.counts["llm_calls"] += found.source == "llm"
