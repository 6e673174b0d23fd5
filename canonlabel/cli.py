"""The ``canonlabel`` command line. Heavy libraries load inside commands, never at import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canonlabel.config import Settings
from canonlabel.errors import CanonlabelError

app = typer.Typer(
    help="Consistent open-set labels for streams of short texts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

DbOpt = Annotated[Path | None, typer.Option("--db", help="SQLite store [env CANONLABEL_DB]")]
LlmOpt = Annotated[
    str | None,
    typer.Option("--llm", help="local | local:PATH.gguf | openai:MODEL | fake [CANONLABEL_LLM]"),
]
EmbOpt = Annotated[
    str | None,
    typer.Option("--embedder", help="minilm | st:PATH | openai:MODEL | hash [CANONLABEL_EMBEDDER]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _settings(**overrides) -> Settings:
    try:
        settings = Settings()
        values = {k: v for k, v in overrides.items() if v is not None}
        return settings.model_copy(update=values) if values else settings
    except Exception as exc:  # pydantic ValidationError on bad env values
        raise CanonlabelError(f"invalid configuration: {exc}") from exc


def _fail(exc: Exception) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


@app.command()
def classify(
    input: Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt file, or - for stdin")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="JSONL output (default: stdout)")
    ] = None,
    db: DbOpt = None,
    text_field: Annotated[str, typer.Option(help="field holding the text")] = "text",
    id_field: Annotated[str, typer.Option(help="field holding the item id")] = "id",
    limit: Annotated[int | None, typer.Option(help="stop after N items", min=1)] = None,
    llm: LlmOpt = None,
    llm_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL [CANONLABEL_LLM_BASE_URL]")
    ] = None,
    embedder: EmbOpt = None,
    min_similarity: Annotated[
        float | None, typer.Option(help="semantic cache threshold", min=0, max=1)
    ] = None,
    label_similarity: Annotated[
        float | None, typer.Option(help="raw-label merge threshold", min=0, max=1)
    ] = None,
    candidates: Annotated[
        int | None, typer.Option(help="existing labels shown to the LLM (0 disables)", min=0)
    ] = None,
    candidate_source: Annotated[
        str | None, typer.Option(help="embedding | fulltext | both")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="LLM calls at once", min=1)] = None,
    store_hits: Annotated[
        bool | None,
        typer.Option("--store-hits/--no-store-hits", help="add cache hits to the cache"),
    ] = None,
    retry_failed: Annotated[
        bool | None,
        typer.Option("--retry-failed", help="ask again for items whose LLM answers were invalid"),
    ] = None,
    summary_json: Annotated[Path | None, typer.Option(help="write the summary here")] = None,
) -> None:
    """Label every text of INPUT with a canonical snake_case label (resumable)."""
    from canonlabel.runner import run_classify

    try:
        settings = _settings(
            db=db,
            llm=llm,
            llm_base_url=llm_base_url,
            embedder=embedder,
            min_similarity=min_similarity,
            label_similarity=label_similarity,
            candidates=candidates,
            candidate_source=candidate_source,
            concurrency=concurrency,
            store_hits=store_hits,
            retry_failed=retry_failed,
        )
        summary = run_classify(
            input,
            output,
            settings,
            text_field=text_field,
            id_field=id_field,
            limit=limit,
            console=err,
        )
    except CanonlabelError as exc:
        raise _fail(exc) from None
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    if summary.get("interrupted"):
        raise typer.Exit(130)


def _open(db, llm=None, embedder=None):
    from canonlabel.pipeline import Classifier

    settings = _settings(db=db, llm=llm, embedder=embedder)
    if not settings.db.exists():
        raise CanonlabelError(
            f"store {settings.db} does not exist; run canonlabel classify first or pass --db"
        )
    return Classifier.open(settings=settings, labeler=_NoLabeler())


class _NoLabeler:
    """Read-only commands never call the LLM; do not load one."""

    id = "none"


@app.command()
def labels(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="rows to show (0: all)")] = 50,
) -> None:
    """List canonical labels with id, item count and aliases (raw labels)."""
    try:
        with _open(db, embedder=embedder) as clf:
            rows = clf.labels()
    except CanonlabelError as exc:
        raise _fail(exc) from None
    shown = rows if limit == 0 else rows[:limit]
    if as_json:
        json.dump(
            [
                {"id": r.id, "label": r.name, "count": r.count, "aliases": list(r.aliases)}
                for r in shown
            ],
            sys.stdout,
            indent=1,
        )
        sys.stdout.write("\n")
        return
    from rich.table import Table

    table = Table("id", "label", "count", "aliases", title=f"{len(rows)} labels")
    for r in shown:
        others = [a for a in r.aliases if a != r.name]
        table.add_row(
            str(r.id),
            r.name,
            str(r.count),
            ", ".join(others[:8]) + (f" (+{len(others) - 8})" if len(others) > 8 else ""),
        )
    Console().print(table)


@app.command()
def stats(db: DbOpt = None, embedder: EmbOpt = None, as_json: JsonOpt = False) -> None:
    """Totals of a store: items, hits, LLM items, labels, raw labels, merges."""
    try:
        with _open(db, embedder=embedder) as clf:
            data = clf.stats()
    except CanonlabelError as exc:
        raise _fail(exc) from None
    if as_json:
        print(json.dumps(data, indent=1))
        return
    for key, value in data.items():
        Console().print(f"[bold]{key:>16}[/]  {value}")


if __name__ == "__main__":  # pragma: no cover
    app()
