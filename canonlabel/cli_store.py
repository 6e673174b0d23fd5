"""The commands on an existing store: list, explore and curate its labels, their
hierarchy and categories. :mod:`canonlabel.cli` registers them on the app."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canonlabel.cli_common import (
    DbOpt,
    EmbOpt,
    JsonOpt,
    LlmOpt,
    curate,
    err,
    exit_on_error,
    open_existing,
    settings_from,
    writable,
)
from canonlabel.errors import CanonlabelError


def labels(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="rows to show (0: all)")] = 50,
    by_category: Annotated[
        bool, typer.Option("--by-category", help="group by mapped category")
    ] = False,
    tree: Annotated[
        bool, typer.Option("--tree", help="the label hierarchy with counts (see `hierarchy`)")
    ] = False,
) -> None:
    """List canonical labels with id, item count and aliases (raw labels)."""
    with exit_on_error(), open_existing(db, embedder=embedder, read_only=True) as clf:
        if tree:
            found = clf.hierarchy(refit=False)
            if not found.parents:
                raise CanonlabelError("no hierarchy yet: run `canonlabel hierarchy` first")
            return _show_tree(clf, found, as_json, f"{len(found.top())} parents")
        rows = clf.labels()
    if by_category:
        rows = sorted(rows, key=lambda r: (r.category or "~", -r.count, r.id))
    shown = rows if limit == 0 else rows[:limit]
    if as_json:
        json.dump(
            [
                {
                    "id": r.id,
                    "label": r.name,
                    "count": r.count,
                    "moved": r.moved,
                    "aliases": list(r.aliases),
                    "category": r.category,
                }
                for r in shown
            ],
            sys.stdout,
            indent=1,
        )
        sys.stdout.write("\n")
        return
    from rich.table import Table

    table = Table(
        "id", "label", "count", "moved", "category", "aliases", title=f"{len(rows)} labels"
    )  # moved: members the consensus moved here against the LLM's answer
    for r in shown:
        others = [a for a in r.aliases if a != r.name]
        table.add_row(
            str(r.id),
            r.name,
            str(r.count),
            str(r.moved or ""),
            r.category or "",
            ", ".join(others[:8]) + (f" (+{len(others) - 8})" if len(others) > 8 else ""),
        )
    Console().print(table)


def hierarchy(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    llm: Annotated[
        str | None, typer.Option(help="labeler that names the parents (default: CANONLABEL_LLM)")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="parents wanted at the top level")] = 12,
    levels: Annotated[int, typer.Option(min=1, max=4, help="levels of parents")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Group the labels into named parents, level by level (ids stable across runs; new
    labels join the nearest parent). Output rows of later jobs carry their path."""
    with exit_on_error(), open_existing(db, llm=llm, embedder=embedder, need_llm=True) as clf:
        tree = clf.hierarchy(top=top, levels=levels)
        _show_tree(
            clf,
            tree,
            as_json,
            f"{len(tree.top())} parents in {tree.seconds:.1f} s, {tree.calls} LLM calls",
        )


parents_app = typer.Typer(
    help="Curate the label hierarchy's parents (each edit undoable).", no_args_is_help=True
)


@parents_app.command("rename")
def parents_rename(parent_id: int, name: str, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Rename parent PARENT_ID (a refit keeps the name while its labels stay the same)."""
    from canonlabel import parents

    curate(db, embedder, lambda clf: parents.rename(clf, parent_id, name))


@parents_app.command("move")
def parents_move(label_id: int, parent_id: int, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Put label LABEL_ID under the level-1 parent PARENT_ID."""
    from canonlabel import parents

    curate(db, embedder, lambda clf: parents.move(clf, label_id, parent_id))


@parents_app.command("merge")
def parents_merge(source: int, into: int, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Merge parent SOURCE into parent INTO (same level)."""
    from canonlabel import parents

    curate(db, embedder, lambda clf: parents.merge(clf, source, into))


@parents_app.command("undo")
def parents_undo(db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Undo the latest parent edit."""
    from canonlabel import parents

    curate(db, embedder, parents.undo)


def _show_tree(clf, tree, as_json: bool, title: str) -> None:
    from canonlabel.hierarchy import as_dict

    nodes = as_dict(tree, clf.space, clf.label_counts())
    if as_json:
        print(json.dumps(nodes, indent=1, ensure_ascii=False))
        return
    from rich.tree import Tree as RichTree

    view = RichTree(title)

    def add(branch, node) -> None:
        sub = branch.add(f"[bold]{node['name']}[/] ({node['count']})" if "children" in node
                         else f"{node['name']} ({node['count']}) [dim]#{node['id']}[/]")  # fmt: skip
        for child in node.get("children", []):
            add(sub, child)

    for node in nodes:
        add(view, node)
    Console().print(view)


def stats(db: DbOpt = None, embedder: EmbOpt = None, as_json: JsonOpt = False) -> None:
    """Totals of a store: items, hits, LLM items, labels, raw labels, merges."""
    with exit_on_error(), open_existing(db, embedder=embedder, read_only=True) as clf:
        data = clf.stats()
    if as_json:
        print(json.dumps(data, indent=1))
        return
    for key, value in data.items():
        Console().print(f"[bold]{key:>16}[/]  {value}")


def explore(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    port: Annotated[int, typer.Option()] = 8765,
    projection: Annotated[str, typer.Option(help="pca (instant) or umap (umap-learn)")] = "pca",
    export: Annotated[
        Path | None,
        typer.Option(help="write one self-contained HTML file instead", callback=writable),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open")] = True,
) -> None:
    """Open the exploration page: a map of the items coloured by label, the labels, their
    members and history, curation and curves (also at /ui of `canonlabel serve`)."""
    from canonlabel.explore_cli import run_explore

    with exit_on_error():
        settings = settings_from(db=db, embedder=embedder, projection=projection)
        run_explore(settings, port=port, export=export, open_browser=open_browser, console=err)


def merge(
    source: Annotated[int, typer.Argument(help="label id to merge away")],
    into: Annotated[int, typer.Argument(help="label id to keep")],
    db: DbOpt = None,
    embedder: EmbOpt = None,
) -> None:
    """Merge label SOURCE into label INTO (logged; undo with `canonlabel undo`)."""
    curate(db, embedder, lambda clf: clf.merge(source, into))


def rename(label_id: int, name: str, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Rename a label (its id stays; the new name becomes an alias)."""
    curate(db, embedder, lambda clf: clf.rename(label_id, name))


def split(
    label_id: int,
    k: Annotated[int | None, typer.Option(help="re-cluster members into K labels")] = None,
    alias: Annotated[list[str] | None, typer.Option(help="move this alias (repeatable)")] = None,
    item: Annotated[list[int] | None, typer.Option(help="move this item id (repeatable)")] = None,
    name: Annotated[str | None, typer.Option(help="name of the new label")] = None,
    db: DbOpt = None,
    embedder: EmbOpt = None,
) -> None:
    """Split a label by re-clustering (--k) or by moving aliases/items out."""
    how = {k_: v for k_, v in {"k": k, "aliases": alias, "items": item}.items() if v}
    curate(db, embedder, lambda clf: clf.split(label_id, name=name, **how))


def undo(db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Undo the most recent label merge, consolidation or consensus correction."""
    curate(db, embedder, lambda clf: clf.undo())


def consolidate(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    llm: Annotated[
        str | None, typer.Option(help="labeler for --adjudicate (default: CANONLABEL_LLM)")
    ] = None,
    adjudicate: Annotated[
        int,
        typer.Option(help="LLM calls on borderline groups, each judging several pairs (0: none)"),
    ] = 0,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="combined similarity at which raw labels group (--by items: the coherence "
            "a label's members keep)"
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help="raw_labels | items (default: the labelling LLM's own, as stored)"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report, change nothing")] = False,
) -> None:
    """Regroup every raw label (or, --by items, every item) order-invariantly (logged;
    `canonlabel undo` reverts it). Runs by itself during and after `classify`."""
    curate(
        db,
        embedder,
        lambda clf: clf.consolidate(dry_run=dry_run, adjudication_budget=adjudicate),
        llm=llm,
        need_llm=adjudicate > 0,  # otherwise no model is loaded
        consolidate_threshold=threshold,
        consolidate_by=by,
    )


categories_app = typer.Typer(
    help="Fixed categories and the category layer over labels.", no_args_is_help=True
)


@categories_app.command("define")
def categories_define(file: Path, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Store category definitions (name, description, examples); only changed ones are
    re-embedded."""
    from canonlabel.jobs import define_categories

    with exit_on_error():
        out = define_categories(settings_from(db=db, embedder=embedder), file)
    print(json.dumps(out))


@categories_app.command("map")
def categories_map(
    file: Path,
    db: DbOpt = None,
    embedder: EmbOpt = None,
    llm: LlmOpt = None,
    llm_margin: Annotated[
        float,
        typer.Option(help="ask the LLM when the top two categories are this close (0: never)"),
    ] = 0.0,
) -> None:
    """Map every canonical label of a store to a category (items are not touched)."""
    from canonlabel.jobs import map_categories

    with exit_on_error():
        settings = settings_from(db=db, llm=llm, embedder=embedder)
        out = map_categories(settings, file, margin=llm_margin)
    print(json.dumps(out, indent=1))


def maintain(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    merge_similarity: Annotated[
        float, typer.Option(help="merge labels whose typical centroids are this similar")
    ] = 0.9,
    wide_spread: Annotated[
        float, typer.Option(help="report labels whose spread (1 - mean cosine) reaches this")
    ] = 0.45,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report only")] = False,
) -> None:
    """Merge labels that drifted together (logged, undoable) and report too-wide labels."""
    from canonlabel.labelspace import maintain as run

    curate(
        db,
        embedder,
        lambda clf: run(
            clf.space, merge_similarity=merge_similarity, wide_spread=wide_spread, dry_run=dry_run
        ),
    )
