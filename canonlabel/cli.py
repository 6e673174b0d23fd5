"""The ``canonlabel`` command line. Heavy libraries load inside commands, never at import."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console

from canonlabel.config import Settings
from canonlabel.errors import CanonlabelError
from canonlabel.llm.base import Labeler
from canonlabel.types import LabelRequest, LabelResponse

app = typer.Typer(
    help="Consistent open-set labels for streams of short texts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

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


def _settings(config: Path | None = None, **overrides) -> Settings:
    from canonlabel.config import load_settings

    return load_settings(config, **overrides)


def _writable(path: Path | None) -> Path | None:
    from canonlabel.io import check_output

    try:
        return check_output(path)
    except CanonlabelError as exc:  # one line, before any model or store is loaded
        raise _fail(exc) from None


def _fail(exc: Exception) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


@app.command()
def classify(
    input: Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt file, or - for stdin")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="JSONL output (default: stdout)", callback=_writable),
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
    texts_per_call: Annotated[
        int | None, typer.Option(help="texts asked about in one LLM call (openai:)", min=1)
    ] = None,
    store_hits: Annotated[
        bool | None,
        typer.Option("--store-hits/--no-store-hits", help="add cache hits to the cache"),
    ] = None,
    retry_failed: Annotated[
        bool | None,
        typer.Option("--retry-failed", help="ask again for items whose LLM answers were invalid"),
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option(help="write the summary here", callback=_writable)
    ] = None,
    online_router: Annotated[
        bool | None,
        typer.Option(
            "--online-router/--no-online-router",
            help="a head trained during the job answers confident items [on]",
        ),
    ] = None,
    max_error: Annotated[
        float | None,
        typer.Option(
            help="bound on non-LLM answers' disagreement with the LLM [0.05; bundled model 0.10]"
        ),
    ] = None,
    llm_floor: Annotated[
        bool | None,
        typer.Option(
            "--llm-floor/--no-llm-floor",
            help="bound non-LLM answers above the LLM's own near-duplicate disagreement [off]",
        ),
    ] = None,
    audit_rate: Annotated[
        float | None, typer.Option(help="share of router answers audited by the LLM [0.02]")
    ] = None,
    max_llm_calls: Annotated[
        int | None, typer.Option(help="stop asking the LLM after N calls; the rest fail", min=0)
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            help="seconds to queue behind another job writing the store [CANONLABEL_LOCK_WAIT]",
            min=0,
        ),
    ] = None,
    config: ConfigOpt = None,
    categories: Annotated[
        Path | None,
        typer.Option(help="fixed categories file: match by embeddings instead of open-set labels"),
    ] = None,
    category_min_similarity: Annotated[
        float, typer.Option(help="with --categories: below this the answer is 'other'")
    ] = 0.3,
    top_k: Annotated[int, typer.Option(help="with --categories: up to K categories", min=1)] = 1,
    multi_threshold: Annotated[
        float | None, typer.Option(help="with --categories: extra categories need this similarity")
    ] = None,
    llm_margin: Annotated[
        float,
        typer.Option(
            help="with --categories: ask the LLM when the top two are this close (0: never)"
        ),
    ] = 0.0,
    router: Annotated[
        Path | None,
        typer.Option(
            help="distilled model dir: it answers confident items, the rest go to the pipeline"
        ),
    ] = None,
    router_threshold: Annotated[
        float, typer.Option(help="with --router: top probability needed to skip the pipeline")
    ] = 0.7,
    ray: Annotated[
        bool, typer.Option("--ray", help="run as a Ray Data pipeline (pip install canonlabel[ray])")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(help="with --ray: a cluster (auto, ray://head:10001); default: local"),
    ] = None,
    ray_embedders: Annotated[int, typer.Option(help="with --ray: embedding actors", min=1)] = 1,
    ray_labelers: Annotated[
        int | None,
        typer.Option(help="with --ray: labelling actors [2 on PostgreSQL, 1 on SQLite]", min=1),
    ] = None,
) -> None:
    """Label every text of INPUT with a canonical snake_case label (resumable)."""
    from canonlabel.errors import ConfigError
    from canonlabel.runner import run_categories, run_classify

    try:
        settings = _settings(
            config,
            db=db,
            llm=llm,
            llm_base_url=llm_base_url,
            embedder=embedder,
            min_similarity=min_similarity,
            label_similarity=label_similarity,
            candidates=candidates,
            candidate_source=candidate_source,
            concurrency=concurrency,
            texts_per_call=texts_per_call,
            store_hits=store_hits,
            retry_failed=retry_failed,
            lock_wait=wait,
            router=online_router,
            max_error=max_error,
            router_llm_floor=llm_floor,
            audit_rate=audit_rate,
            max_llm_calls=max_llm_calls,
        )
        if ray and (categories is not None or router is not None):
            raise ConfigError(
                "--ray runs the open-set pipeline; drop --categories/--router, or --ray"
            )
        if categories is not None:
            summary = run_categories(
                input,
                output,
                settings,
                categories,
                text_field=text_field,
                id_field=id_field,
                limit=limit,
                min_similarity=category_min_similarity,
                top_k=top_k,
                multi_threshold=multi_threshold,
                margin=llm_margin,
                console=err,
            )
        elif ray:
            from canonlabel.batch import run_classify_ray

            summary = run_classify_ray(
                input,
                output,
                settings,
                address=ray_address,
                embedders=ray_embedders,
                labelers=ray_labelers,
                text_field=text_field,
                id_field=id_field,
                limit=limit,
                console=err,
            )
        else:
            summary = run_classify(
                input,
                output,
                settings,
                text_field=text_field,
                id_field=id_field,
                limit=limit,
                console=err,
                router=router,
                router_threshold=router_threshold,
            )
    except CanonlabelError as exc:
        raise _fail(exc) from None
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    if summary.get("interrupted"):
        raise typer.Exit(130)


def _open(
    db, llm=None, embedder=None, *, need_llm: bool = False, read_only: bool = False, **overrides
):
    from canonlabel.pipeline import Classifier
    from canonlabel.store import store_exists

    settings = _settings(db=db, llm=llm, embedder=embedder, **overrides)
    if not store_exists(settings.db):
        raise CanonlabelError(
            f"store {settings.db} does not exist; run canonlabel classify first or pass --db"
        )
    labeler = None if need_llm else _NoLabeler()
    return Classifier.open(settings=settings, labeler=labeler, read_only=read_only)


class _NoLabeler(Labeler):
    """Read-only commands never call the LLM; do not load one."""

    id = "none"

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        # never called; raises what the method-less stand-in it replaces raised
        raise AttributeError(f"{type(self).__name__!r} object has no attribute 'label_batch'")


@app.command()
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
    try:
        with _open(db, embedder=embedder, read_only=True) as clf:
            if tree:
                found = clf.hierarchy(refit=False)
                if not found.parents:
                    raise CanonlabelError("no hierarchy yet: run `canonlabel hierarchy` first")
                return _show_tree(clf, found, as_json, f"{len(found.top())} parents")
            rows = clf.labels()
    except CanonlabelError as exc:
        raise _fail(exc) from None
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


@app.command()
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
    try:
        with _open(db, llm=llm, embedder=embedder, need_llm=True) as clf:
            tree = clf.hierarchy(top=top, levels=levels)
            _show_tree(
                clf,
                tree,
                as_json,
                f"{len(tree.top())} parents in {tree.seconds:.1f} s, {tree.calls} LLM calls",
            )
    except CanonlabelError as exc:
        raise _fail(exc) from None


parents_app = typer.Typer(
    help="Curate the label hierarchy's parents (each edit undoable).", no_args_is_help=True
)
app.add_typer(parents_app, name="parents")


@parents_app.command("rename")
def parents_rename(parent_id: int, name: str, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Rename parent PARENT_ID (a refit keeps the name while its labels stay the same)."""
    from canonlabel import parents

    _curate(db, embedder, lambda clf: parents.rename(clf, parent_id, name))


@parents_app.command("move")
def parents_move(label_id: int, parent_id: int, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Put label LABEL_ID under the level-1 parent PARENT_ID."""
    from canonlabel import parents

    _curate(db, embedder, lambda clf: parents.move(clf, label_id, parent_id))


@parents_app.command("merge")
def parents_merge(source: int, into: int, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Merge parent SOURCE into parent INTO (same level)."""
    from canonlabel import parents

    _curate(db, embedder, lambda clf: parents.merge(clf, source, into))


@parents_app.command("undo")
def parents_undo(db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Undo the latest parent edit."""
    from canonlabel import parents

    _curate(db, embedder, parents.undo)


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


@app.command()
def stats(db: DbOpt = None, embedder: EmbOpt = None, as_json: JsonOpt = False) -> None:
    """Totals of a store: items, hits, LLM items, labels, raw labels, merges."""
    try:
        with _open(db, embedder=embedder, read_only=True) as clf:
            data = clf.stats()
    except CanonlabelError as exc:
        raise _fail(exc) from None
    if as_json:
        print(json.dumps(data, indent=1))
        return
    for key, value in data.items():
        Console().print(f"[bold]{key:>16}[/]  {value}")


SplitOpt = Annotated[str | None, typer.Option(help="only rows of this split (train/val/test)")]
OutDir = Annotated[Path, typer.Option("--out", help="report directory")]


@app.command("eval")
def eval_(
    dataset: Annotated[str, typer.Argument(help="JSONL with a text field and a gold labels list")],
    limit: Annotated[int | None, typer.Option(help="first N rows (after --sample-seed)")] = None,
    split: SplitOpt = None,
    strategies: Annotated[
        str, typer.Option(help="comma-separated: llm-only,seed,canonlabel,kmeans-k,hdbscan")
    ] = "seed,canonlabel,kmeans-k,hdbscan",
    llm: LlmOpt = None,
    embedder: EmbOpt = None,
    repeats: Annotated[int, typer.Option(help="shuffled runs for consistency", min=1)] = 1,
    seed: Annotated[int, typer.Option(help="seed for shuffles and k-means")] = 0,
    sample_seed: Annotated[
        int | None, typer.Option(help="shuffle rows with this seed before --limit")
    ] = None,
    text_field: Annotated[str, typer.Option()] = "text",
    labels_field: Annotated[str, typer.Option()] = "labels",
    out: OutDir = Path("eval-report"),
    config: ConfigOpt = None,
) -> None:
    """Run labelling strategies side by side against gold labels; write a report."""
    from canonlabel.embed import make_embedder
    from canonlabel.evaluate import EvalData, evaluate
    from canonlabel.io import read_labelled
    from canonlabel.llm import make_labeler
    from canonlabel.memory import shown_candidates
    from canonlabel.report import markdown_table, write_eval_report

    try:
        settings = _settings(config, llm=llm, embedder=embedder)
        texts, golds = read_labelled(
            dataset,
            text_field=text_field,
            labels_field=labels_field,
            split=split,
            limit=limit,
            shuffle_seed=sample_seed,
        )
        names = [s.strip() for s in strategies.split(",") if s.strip()]
        emb = make_embedder(settings.embedder, settings)
        needs_llm = any(n in ("llm-only", "seed", "canonlabel") for n in names)
        labeler = make_labeler(settings.llm, settings) if needs_llm else _NoLabeler()
        with err.status(f"embedding {len(texts)} texts..."):
            data = EvalData.build(texts, [g[0] for g in golds], emb, settings.max_chars)
        with err.status("evaluating...") as status:
            report = evaluate(
                data,
                names,
                labeler,
                settings,
                repeats=repeats,
                seed=seed,
                progress=lambda msg: status.update(msg),
            )
    except (CanonlabelError, ValueError) as exc:
        raise _fail(exc) from None
    report |= {
        "dataset": f"{dataset}{f' split={split}' if split else ''}"
        f"{f' limit={limit}' if limit else ''}",
        "llm": labeler.id,
        "embedder": emb.id,
        "settings": {k: getattr(settings, k) for k in ("min_similarity", "label_similarity")}
        | {
            "candidates": shown_candidates(settings, labeler),
            "candidate_source": settings.candidate_source,
        },
    }
    paths = write_eval_report(report, out)
    Console().print(markdown_table(report))
    err.print("wrote " + ", ".join(str(p) for p in paths), soft_wrap=True)


@app.command()
def calibrate(
    dataset: Annotated[str, typer.Argument(help="JSONL with texts (and gold labels if any)")],
    limit: Annotated[int, typer.Option(help="texts used for the cache sweep")] = 2000,
    llm_sample: Annotated[
        int, typer.Option(help="texts the LLM labels for the label_similarity sweep (0: skip)")
    ] = 300,
    split: SplitOpt = None,
    target_precision: Annotated[float, typer.Option(min=0, max=1)] = 0.95,
    llm: LlmOpt = None,
    embedder: EmbOpt = None,
    sample_seed: Annotated[int, typer.Option(help="rows are shuffled with this seed")] = 0,
    text_field: Annotated[str, typer.Option()] = "text",
    labels_field: Annotated[str, typer.Option()] = "labels",
    out: OutDir = Path("calibration"),
    write_config: Annotated[
        Path | None,
        typer.Option(
            help="write the recommended thresholds into this YAML file (use with --config)"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Sweep min_similarity and label_similarity; recommend and save thresholds."""
    from canonlabel.calibrate import run_calibration

    try:
        settings = _settings(config, llm=llm, embedder=embedder)
        result = run_calibration(
            dataset,
            settings,
            limit=limit,
            llm_sample=llm_sample,
            split=split,
            target_precision=target_precision,
            sample_seed=sample_seed,
            text_field=text_field,
            labels_field=labels_field,
            out=out,
            console=err,
        )
    except (CanonlabelError, ValueError) as exc:
        raise _fail(exc) from None
    rec = result["recommended"]
    Console().print(
        f"recommended: min_similarity={rec['min_similarity']} "
        f"label_similarity={rec['label_similarity']}  ({out / 'calibration.json'})"
    )
    if write_config:
        from canonlabel.config import write_config as save

        save(write_config, rec)
        err.print(f"wrote {write_config}; use it with --config {write_config}")


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="bind address (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    llm: LlmOpt = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    embedder: EmbOpt = None,
    concurrency: Annotated[int | None, typer.Option(help="LLM calls at once", min=1)] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the classifier over HTTP (FastAPI; docs at /docs)."""
    import uvicorn

    from canonlabel.server import create_app

    try:
        settings = _settings(
            config,
            db=db,
            llm=llm,
            llm_base_url=llm_base_url,
            embedder=embedder,
            concurrency=concurrency,
        )
    except CanonlabelError as exc:
        raise _fail(exc) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_token:
        err.print("[yellow]warning:[/] serving beyond loopback without CANONLABEL_API_TOKEN")
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=30
    )


@app.command()
def explore(
    db: DbOpt = None,
    embedder: EmbOpt = None,
    port: Annotated[int, typer.Option()] = 8765,
    projection: Annotated[str, typer.Option(help="pca (instant) or umap (umap-learn)")] = "pca",
    export: Annotated[
        Path | None,
        typer.Option(help="write one self-contained HTML file instead", callback=_writable),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open")] = True,
) -> None:
    """Open the exploration page: a map of the items coloured by label, the labels, their
    members and history, curation and curves (also at /ui of `canonlabel serve`)."""
    from canonlabel.explore_cli import run_explore

    try:
        from canonlabel.store import store_exists

        settings = _settings(db=db, embedder=embedder, projection=projection)
        if not store_exists(settings.db):
            raise CanonlabelError(f"store {settings.db} does not exist; pass --db")
        run_explore(settings, port=port, export=export, open_browser=open_browser, console=err)
    except CanonlabelError as exc:
        raise _fail(exc) from None


def _curate(db, embedder, action, **options) -> None:
    try:
        with _open(db, embedder=embedder, **options) as clf:
            out = action(clf)
    except CanonlabelError as exc:
        raise _fail(exc) from None
    print(json.dumps(out, indent=1))


@app.command()
def merge(
    source: Annotated[int, typer.Argument(help="label id to merge away")],
    into: Annotated[int, typer.Argument(help="label id to keep")],
    db: DbOpt = None,
    embedder: EmbOpt = None,
) -> None:
    """Merge label SOURCE into label INTO (logged; undo with `canonlabel undo`)."""
    _curate(db, embedder, lambda clf: clf.merge(source, into))


@app.command()
def rename(label_id: int, name: str, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Rename a label (its id stays; the new name becomes an alias)."""
    _curate(db, embedder, lambda clf: clf.rename(label_id, name))


@app.command()
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
    _curate(db, embedder, lambda clf: clf.split(label_id, name=name, **how))


@app.command()
def undo(db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Undo the most recent label merge, consolidation or consensus correction."""
    _curate(db, embedder, lambda clf: clf.undo())


@app.command()
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
    _curate(
        db,
        embedder,
        lambda clf: clf.consolidate(dry_run=dry_run, adjudication_budget=adjudicate),
        llm=llm,
        need_llm=adjudicate > 0,  # otherwise no model is loaded
        consolidate_threshold=threshold,
        consolidate_by=by,
    )


@app.command()
def cluster(
    input: Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt file, or - for stdin")],
    output: Annotated[Path | None, typer.Option("-o", "--output", callback=_writable)] = None,
    method: Annotated[str, typer.Option(help="hdbscan | kmeans | agglomerative")] = "hdbscan",
    k: Annotated[int | None, typer.Option(help="clusters (kmeans, agglomerative)")] = None,
    min_cluster_size: Annotated[int, typer.Option(help="hdbscan minimum cluster size")] = 5,
    samples: Annotated[int, typer.Option(help="representative texts shown per cluster")] = 5,
    noise_similarity: Annotated[
        float,
        typer.Option(help="noise joins its nearest cluster at this similarity, else 'unclustered'"),
    ] = 0.6,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="also write clusters into this store for streaming classify"),
    ] = None,
    text_field: Annotated[str, typer.Option()] = "text",
    id_field: Annotated[str, typer.Option()] = "id",
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    llm: LlmOpt = None,
    embedder: EmbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Order-invariant batch labelling: embed, cluster, name each cluster once."""
    from itertools import islice

    from canonlabel.cluster import cluster_texts, save_to_store
    from canonlabel.embed import make_embedder
    from canonlabel.io import read_records, usable_text
    from canonlabel.llm import make_labeler

    try:
        settings = _settings(config, llm=llm, embedder=embedder, db=db)
        records = read_records(input, text_field=text_field, id_field=id_field)
        good, bad = [], []
        for r in islice(records, limit) if limit else records:
            try:
                usable_text(r, settings.max_chars)
                good.append(r)
            except CanonlabelError as exc:
                bad.append({"id": r.id or f"line:{r.line}", "text": r.text, "error": str(exc)})
        if not good:
            raise CanonlabelError(f"{input} has no usable texts")
        emb = make_embedder(settings.embedder, settings)
        labeler = make_labeler(settings.llm, settings)
        with err.status(f"clustering {len(good)} texts..."):
            result = cluster_texts(
                [cast(str, r.text) for r in good],  # usable_text() checked each
                emb,
                labeler,
                method=method,
                k=k,
                min_cluster_size=min_cluster_size,
                samples=samples,
                noise_similarity=noise_similarity,
                label_similarity=settings.label_similarity,
                max_chars=settings.max_chars,
            )
        if db is not None:
            from canonlabel.pipeline import Classifier

            with Classifier.open(settings=settings, embedder=emb, labeler=labeler) as clf:
                save_to_store(clf, result, [r.id for r in good])
    except CanonlabelError as exc:
        raise _fail(exc) from None
    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    for r, label, c, d in zip(good, result.labels, result.clusters, result.distances):
        sink.write(
            json.dumps(
                {"id": r.id, "text": r.text, "label": label, "cluster": c, "distance": d},
                ensure_ascii=False,
            )
            + "\n"
        )
    for row in bad:
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")
    if output:
        sink.close()
    summary = {
        "items": len(good) + len(bad),
        "failed": len(bad),
        "clusters": len(result.info),
        "labels": len({i.label for i in result.info}),
        "llm_calls": result.llm_calls,
        "noise_assigned": result.noise_assigned,
        "unclustered": result.unclustered,
    }
    err.print(json.dumps(summary))


postgres_app = typer.Typer(
    help="A local PostgreSQL + pgvector server for a shared store (pgserver, no root).",
    no_args_is_help=True,
)
app.add_typer(postgres_app, name="postgres")
PgDataArg = Annotated[str, typer.Argument(help="data directory (created if missing)")]


@postgres_app.command("start")
def postgres_start(pgdata: PgDataArg = "pgdata") -> None:
    """Start a server in PGDATA (it keeps running) and print its URL for --db."""
    from canonlabel.store.postgres import start_local

    try:
        print(start_local(pgdata))
    except (CanonlabelError, OSError) as exc:
        raise _fail(exc) from None


@postgres_app.command("stop")
def postgres_stop(pgdata: PgDataArg = "pgdata") -> None:
    """Stop the server running in PGDATA."""
    from canonlabel.store.postgres import stop_local

    try:
        stop_local(pgdata)
    except (CanonlabelError, OSError) as exc:
        raise _fail(exc) from None


categories_app = typer.Typer(
    help="Fixed categories and the category layer over labels.", no_args_is_help=True
)
app.add_typer(categories_app, name="categories")


@categories_app.command("define")
def categories_define(file: Path, db: DbOpt = None, embedder: EmbOpt = None) -> None:
    """Store category definitions (name, description, examples); only changed ones are
    re-embedded."""
    from canonlabel import categories as cat
    from canonlabel.embed import make_embedder
    from canonlabel.store import open_store

    try:
        settings = _settings(db=db, embedder=embedder)
        emb = make_embedder(settings.embedder, settings)
        store = open_store(settings.db)
        store.lock_writer(settings.lock_wait)
        store.bind_embedder(emb.id, emb.dim)
        out = cat.define(store, emb, cat.load_categories(file))
        store.close()
    except CanonlabelError as exc:
        raise _fail(exc) from None
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
    from canonlabel import categories as cat

    try:
        with _open(db, embedder=embedder) as clf:
            cat.define(clf.store, clf.embedder, cat.load_categories(file))
            labeler = None
            if llm_margin > 0:
                from canonlabel.llm import make_labeler

                labeler = make_labeler(_settings(llm=llm).llm, _settings(llm=llm))
            out = cat.map_labels(clf, labeler=labeler, margin=llm_margin)
    except CanonlabelError as exc:
        raise _fail(exc) from None
    print(json.dumps(out, indent=1))


@app.command()
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

    _curate(
        db,
        embedder,
        lambda clf: run(
            clf.space, merge_similarity=merge_similarity, wide_spread=wide_spread, dry_run=dry_run
        ),
    )


@app.command()
def train(
    annotated: Annotated[str, typer.Argument(help="JSONL with text and a labels list")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model directory")],
    model: Annotated[str, typer.Option(help="logreg | mlp")] = "logreg",
    val: Annotated[
        float, typer.Option(help="validation share for thresholds", min=0, max=0.9)
    ] = 0.2,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int, typer.Option()] = 0,
    embedder: EmbOpt = None,
    text_field: Annotated[str, typer.Option()] = "text",
    labels_field: Annotated[str, typer.Option()] = "labels",
) -> None:
    """Train a small multi-label classifier on embeddings; save weights.npz + meta.json."""
    import warnings

    from canonlabel.distill import DataWarning, DistilledClassifier, check_training_data
    from canonlabel.embed import make_embedder
    from canonlabel.embed.cache import cached
    from canonlabel.io import read_labelled

    try:
        settings = _settings(embedder=embedder)
        texts, golds = read_labelled(
            annotated,
            text_field=text_field,
            labels_field=labels_field,
            split=split,
            limit=limit,
            shuffle_seed=seed,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            check_training_data(golds)
        for w in caught:
            err.print(f"[yellow]warning:[/] {w.message}", soft_wrap=True)
        emb = cached(make_embedder(settings.embedder, settings), settings.cache_dir)
        with err.status(f"embedding {len(texts)} texts..."):
            X = emb.embed(texts)
        n_val = int(len(texts) * val)
        clf = DistilledClassifier(model, seed=seed, embedder_id=emb.id)
        with err.status(f"training {model}..."):
            clf.fit(
                X[n_val:],
                golds[n_val:],
                X_val=X[:n_val] if n_val else None,
                val_sets=golds[:n_val] if n_val else None,
            )
        clf.save(output)
    except CanonlabelError as exc:
        raise _fail(exc) from None
    print(
        json.dumps(
            {
                "model": str(output),
                "labels": len(clf.classes_),
                "train": len(texts) - n_val,
                "val": n_val,
                "fit_seconds": clf.fit_seconds_,
                "val_metrics": clf.metrics_,
            },
            indent=1,
        )
    )


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="directory written by `train`")],
    input: Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt or -")],
    output: Annotated[Path | None, typer.Option("-o", "--output", callback=_writable)] = None,
    text_field: Annotated[str, typer.Option()] = "text",
    id_field: Annotated[str, typer.Option()] = "id",
    embedder: EmbOpt = None,
    top: Annotated[int, typer.Option(help="also list the top N probabilities")] = 3,
) -> None:
    """Label texts with a distilled model: labels above threshold, top probabilities."""
    from canonlabel.distill import DistilledClassifier
    from canonlabel.embed import make_embedder
    from canonlabel.io import read_records, usable_text

    try:
        settings = _settings(embedder=embedder)
        model = DistilledClassifier.load(
            model_dir, embedder=make_embedder(settings.embedder, settings)
        )
        records = list(read_records(input, text_field=text_field, id_field=id_field))
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        for start in range(0, len(records), 1024):
            chunk = records[start : start + 1024]
            good, rows = [], []
            for r in chunk:
                row: dict[str, object] = {"id": r.id or f"line:{r.line}", "text": r.text}
                try:
                    good.append(usable_text(r, settings.max_chars))
                except CanonlabelError as exc:
                    row["error"] = str(exc)
                rows.append(row)
            P = model.predict_proba(good) if good else None
            it = iter(range(len(good)))
            for row in rows:
                if "error" not in row:
                    assert P is not None  # a row without an error means ``good`` is not empty
                    p = P[next(it)]
                    order = p.argsort()[::-1]
                    picked = [model.classes_[j] for j in order if p[j] >= model.thresholds_[j]]
                    order = order[:top]
                    row |= {
                        "labels": picked or [model.classes_[int(order[0])]],
                        "top": [[model.classes_[j], round(float(p[j]), 4)] for j in order],
                    }
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        if output:
            sink.close()
    except CanonlabelError as exc:
        raise _fail(exc) from None


taxonomy_app = typer.Typer(help="Discover a label taxonomy with the LLM.", no_args_is_help=True)
app.add_typer(taxonomy_app, name="taxonomy")


def _texts(input: str, text_field: str, limit: int | None) -> list[str]:
    from itertools import islice

    from canonlabel.io import read_records

    records = read_records(input, text_field=text_field)
    texts = [
        r.text
        for r in (islice(records, limit) if limit else records)
        if r.error is None and r.text and r.text.strip()
    ]
    if not texts:
        raise CanonlabelError(f"{input} has no usable texts")
    return texts


@taxonomy_app.command("discover")
def taxonomy_discover(
    input: Annotated[str | None, typer.Argument(help="texts to learn from")] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="taxonomy .yaml or .json", callback=_writable)
    ] = Path("taxonomy.yaml"),
    n_labels: Annotated[int, typer.Option(help="at most this many labels", min=2)] = 20,
    sample: Annotated[int, typer.Option(help="texts shown to the LLM, stratified")] = 200,
    batch: Annotated[int, typer.Option(help="texts per LLM call")] = 20,
    from_db: Annotated[
        Path | None,
        typer.Option(help="seed from this store's canonical labels instead of asking the LLM"),
    ] = None,
    text_field: Annotated[str, typer.Option()] = "text",
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int, typer.Option()] = 0,
    llm: LlmOpt = None,
    embedder: EmbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Propose labels with one-line descriptions and examples (human-editable file)."""
    from canonlabel import taxonomy as tx

    try:
        settings = _settings(config, llm=llm, embedder=embedder)
        if from_db is not None:
            with _open(from_db, embedder=embedder, read_only=True) as clf:
                entries = tx.from_store(clf, n_labels)
        else:
            if input is None:
                raise CanonlabelError("give INPUT texts, or --from-db to seed from a store")
            from canonlabel.embed import make_embedder
            from canonlabel.llm import make_labeler

            texts = _texts(input, text_field, limit)
            emb = make_embedder(settings.embedder, settings)
            labeler = make_labeler(settings.llm, settings)
            with err.status(f"discovering from a sample of {min(sample, len(texts))}..."):
                entries = tx.discover(
                    texts, emb, labeler, n_labels=n_labels, sample=sample, batch=batch, seed=seed
                )
        tx.save_taxonomy(entries, output)
    except CanonlabelError as exc:
        raise _fail(exc) from None
    err.print(f"wrote {len(entries)} labels to {output}")


@app.command()
def annotate(
    input: Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt or -")],
    taxonomy: Annotated[Path, typer.Option(help="taxonomy file (name, description)")],
    output: Annotated[Path | None, typer.Option("-o", "--output", callback=_writable)] = None,
    max_labels: Annotated[int, typer.Option(help="labels per text, at most", min=1)] = 3,
    db: DbOpt = None,
    text_field: Annotated[str, typer.Option()] = "text",
    id_field: Annotated[str, typer.Option()] = "id",
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    llm: LlmOpt = None,
    config: ConfigOpt = None,
) -> None:
    """LLM multi-label annotation restricted to a taxonomy (resumable, cached)."""
    from itertools import islice

    from rich.progress import Progress

    from canonlabel import taxonomy as tx
    from canonlabel.io import count_lines, read_records, usable_text
    from canonlabel.llm import make_labeler
    from canonlabel.store import open_store

    try:
        settings = _settings(config, db=db, llm=llm)
        entries = tx.load_taxonomy(taxonomy)
        labeler = make_labeler(settings.llm, settings)
        store = open_store(settings.db)
        records = read_records(input, text_field=text_field, id_field=id_field)
        records = islice(records, limit) if limit else records
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        counts = {"items": 0, "annotated": 0, "cached": 0, "failed": 0}
        with Progress(console=err, disable=not err.is_terminal) as progress:
            task = progress.add_task("annotate", total=limit or count_lines(input))
            for r in records:
                row: dict[str, object] = {"id": r.id or f"line:{r.line}", "text": r.text}
                try:
                    usable_text(r, settings.max_chars)
                    [(labels, error, was_cached)] = tx.annotate(
                        store,
                        labeler,
                        entries,
                        [cast(str, r.text)],  # usable_text() checked it
                        max_labels=max_labels,
                        max_chars=settings.max_chars,
                    )
                    if error:
                        raise CanonlabelError(error)
                    row["labels"] = labels
                    counts["annotated"] += 1
                    counts["cached"] += was_cached
                except CanonlabelError as exc:
                    row["error"] = str(exc)
                    counts["failed"] += 1
                counts["items"] += 1
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                progress.advance(task)
        if output:
            sink.close()
        store.close()
    except CanonlabelError as exc:
        raise _fail(exc) from None
    err.print(json.dumps(counts))


if __name__ == "__main__":  # pragma: no cover
    app()
