"""What the command modules (:mod:`canonlabel.cli`, :mod:`canonlabel.cli_store`) share:
the error console, settings from flags, one-line errors, and the flags several commands
take. Light imports only: ``canonlabel --help`` loads this."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from canonlabel.config import Settings
from canonlabel.errors import CanonlabelError

if TYPE_CHECKING:
    from canonlabel.pipeline import Classifier

err = Console(stderr=True)


def settings_from(config: Path | None = None, **overrides) -> Settings:
    """Settings from the config file, the environment and the flags given (see
    :func:`canonlabel.config.load_settings`)."""
    from canonlabel.config import load_settings

    return load_settings(config, **overrides)


def writable(path: Path | None) -> Path | None:
    """Callback of output flags: an unwritable output fails before any model or store
    is loaded."""
    from canonlabel.io import check_output

    try:
        return check_output(path)
    except CanonlabelError as exc:
        raise fail(exc) from None


def renamed(old: str, new: str) -> Callable:
    """An option callback that warns when the option was given by its ``old`` name (kept
    working for one release)."""

    def warn(ctx: typer.Context, param: typer.CallbackParam, value):
        import sys

        if any(arg == old or arg.startswith(old + "=") for arg in sys.argv[1:]):
            err.print(f"[yellow]warning:[/] {old} is deprecated; use {new}")
        return value

    return warn


def fail(exc: Exception) -> typer.Exit:
    """Print ``exc`` as one error line; the exit (code 2) to raise."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


@contextmanager
def exit_on_error(*also: type[Exception]) -> Iterator[None]:
    """A library error (or one of ``also``) becomes one line on stderr and exit code 2."""
    caught: tuple[type[Exception], ...] = (CanonlabelError, *also)
    try:
        yield
    except caught as exc:
        raise fail(exc) from None


def open_existing(
    db, llm=None, embedder=None, *, need_llm=False, read_only=False, **overrides
) -> Classifier:
    """The classifier on an existing store, from the flags (no LLM unless ``need_llm``)."""
    from canonlabel.jobs import open_classifier

    settings = settings_from(db=db, llm=llm, embedder=embedder, **overrides)
    return open_classifier(settings, need_llm=need_llm, read_only=read_only)


def curate(db, embedder, action: Callable[[Classifier], object], **options) -> None:
    """Run ``action`` on the store's classifier and print what it returns as JSON."""
    with exit_on_error(), open_existing(db, embedder=embedder, **options) as clf:
        out = action(clf)
    print(json.dumps(out, indent=1))


DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="SQLite path or postgresql:// URL of the store [env CANONLABEL_DB]"),
]
LlmOpt = Annotated[
    str | None,
    typer.Option("--llm", help="local | local:PATH.gguf | openai:MODEL | fake [CANONLABEL_LLM]"),
]
EmbOpt = Annotated[
    str | None,
    typer.Option("--embedder", help="minilm | st:PATH | openai:MODEL | hash [CANONLABEL_EMBEDDER]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="YAML/JSON settings file, e.g. from calibrate [CANONLABEL_CONFIG]"
    ),
]
ConcurrencyOpt = Annotated[int | None, typer.Option(help="LLM calls at once", min=1)]
