"""The ``canonlabel`` command line: each command parses its flags, calls one job of the
library and prints what it returns. Heavy libraries load inside commands, never at import.

The commands on an existing store are in :mod:`canonlabel.cli_store`; what both modules
share (error handling, common flags) in :mod:`canonlabel.cli_common`. ``COMMANDS`` at the
end registers them all, in the order ``--help`` lists them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canonlabel import cli_store
from canonlabel.cli_common import (
    ConcurrencyOpt,
    ConfigOpt,
    DbOpt,
    EmbOpt,
    LlmOpt,
    err,
    exit_on_error,
    renamed,
    settings_from,
    writable,
)
from canonlabel.io import JobIO

app = typer.Typer(
    help="Consistent open-set labels for streams of short texts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

InputArg = Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt file, or - for stdin")]
RecordsArg = Annotated[str, typer.Argument(help=".jsonl, .csv, .tsv, .txt or -")]
RowsOpt = Annotated[Path | None, typer.Option("-o", "--output", callback=writable)]
FieldOpt = Annotated[str, typer.Option()]
LimitOpt = Annotated[int | None, typer.Option(min=1)]
SplitOpt = Annotated[str | None, typer.Option(help="only rows of this split (train/val/test)")]
OutDir = Annotated[Path, typer.Option("--out", help="report directory")]

# -- classify's flags -----------------------------------------------------------------
_Output = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="JSONL output (default: stdout)", callback=writable),
]
_TextField = Annotated[str, typer.Option(help="field holding the text")]
_IdField = Annotated[str, typer.Option(help="field holding the item id")]
_Limit = Annotated[int | None, typer.Option(help="stop after N items", min=1)]
_BaseUrl = Annotated[
    str | None, typer.Option(help="OpenAI-compatible base URL [CANONLABEL_LLM_BASE_URL]")
]
_MinSim = Annotated[float | None, typer.Option(help="semantic cache threshold", min=0, max=1)]
_LabelSim = Annotated[float | None, typer.Option(help="raw-label merge threshold", min=0, max=1)]
_Candidates = Annotated[
    int | None, typer.Option(help="existing labels shown to the LLM (0 disables)", min=0)
]
_CandidateSource = Annotated[str | None, typer.Option(help="embedding | fulltext | both")]
_TextsPerCall = Annotated[
    int | None, typer.Option(help="texts asked about in one LLM call (openai:)", min=1)
]
_StoreHits = Annotated[
    bool | None, typer.Option("--store-hits/--no-store-hits", help="add cache hits to the cache")
]
_RetryFailed = Annotated[
    bool | None,
    typer.Option("--retry-failed", help="ask again for items whose LLM answers were invalid"),
]
_SummaryJson = Annotated[
    Path | None, typer.Option(help="write the summary here", callback=writable)
]
_OnlineRouter = Annotated[
    bool | None,
    typer.Option(
        "--online-router/--no-online-router",
        help="a head trained during the job answers confident items [on]",
    ),
]
_MaxError = Annotated[
    float | None,
    typer.Option(
        help="bound on non-LLM answers' error beyond the LLM's own [0.05; bundled model 0.10]"
    ),
]
_AuditRate = Annotated[
    float | None, typer.Option(help="share of router answers audited by the LLM [0.02]")
]
_MaxLlmCalls = Annotated[
    int | None, typer.Option(help="stop asking the LLM after N calls; the rest fail", min=0)
]
_Wait = Annotated[
    float | None,
    typer.Option(
        help="seconds to queue behind another job writing the store [CANONLABEL_LOCK_WAIT]", min=0
    ),
]
_Categories = Annotated[
    Path | None,
    typer.Option(help="fixed categories file: match by embeddings instead of open-set labels"),
]
_CategoryMinSim = Annotated[
    float, typer.Option(help="with --categories: below this the answer is 'other'")
]
_TopK = Annotated[int, typer.Option(help="with --categories: up to K categories", min=1)]
_MultiThreshold = Annotated[
    float | None, typer.Option(help="with --categories: extra categories need this similarity")
]
_LlmMargin = Annotated[
    float,
    typer.Option(help="with --categories: ask the LLM when the top two are this close (0: never)"),
]
_Distilled = Annotated[
    Path | None,
    typer.Option(
        "--distilled",
        "--router",  # its name until 0.2
        help="distilled model dir: it answers confident items, the rest go to the pipeline",
        callback=renamed("--router", "--distilled"),
    ),
]
_DistilledThreshold = Annotated[
    float,
    typer.Option(
        "--distilled-threshold",
        "--router-threshold",  # its name until 0.2
        help="with --distilled: top probability needed to skip the pipeline",
        callback=renamed("--router-threshold", "--distilled-threshold"),
    ),
]
_Ray = Annotated[
    bool, typer.Option("--ray", help="run as a Ray Data pipeline (pip install canonlabel[ray])")
]
_RayAddress = Annotated[
    str | None,
    typer.Option(help="with --ray: a cluster (auto, ray://head:10001); default: local"),
]
_RayEmbedders = Annotated[int, typer.Option(help="with --ray: embedding actors", min=1)]
_RayLabelers = Annotated[
    int | None,
    typer.Option(help="with --ray: labelling actors [2 on PostgreSQL, 1 on SQLite]", min=1),
]


def classify(
    input: InputArg,
    output: _Output = None,
    db: DbOpt = None,
    text_field: _TextField = "text",
    id_field: _IdField = "id",
    limit: _Limit = None,
    llm: LlmOpt = None,
    llm_base_url: _BaseUrl = None,
    embedder: EmbOpt = None,
    min_similarity: _MinSim = None,
    label_similarity: _LabelSim = None,
    candidates: _Candidates = None,
    candidate_source: _CandidateSource = None,
    concurrency: ConcurrencyOpt = None,
    texts_per_call: _TextsPerCall = None,
    store_hits: _StoreHits = None,
    retry_failed: _RetryFailed = None,
    summary_json: _SummaryJson = None,
    online_router: _OnlineRouter = None,
    max_error: _MaxError = None,
    audit_rate: _AuditRate = None,
    max_llm_calls: _MaxLlmCalls = None,
    wait: _Wait = None,
    config: ConfigOpt = None,
    categories: _Categories = None,
    category_min_similarity: _CategoryMinSim = 0.3,
    top_k: _TopK = 1,
    multi_threshold: _MultiThreshold = None,
    llm_margin: _LlmMargin = 0.0,
    distilled: _Distilled = None,
    threshold: _DistilledThreshold = 0.7,
    ray: _Ray = False,
    ray_address: _RayAddress = None,
    ray_embedders: _RayEmbedders = 1,
    ray_labelers: _RayLabelers = None,
) -> None:
    """Label every text of INPUT with a canonical snake_case label (resumable)."""
    from canonlabel.jobs import CategoryOptions, ClassifyOptions, RayOptions, classify_job

    with exit_on_error():
        settings = settings_from(
            config, db=db, llm=llm, llm_base_url=llm_base_url, embedder=embedder,
            min_similarity=min_similarity, label_similarity=label_similarity, candidates=candidates,
            candidate_source=candidate_source, concurrency=concurrency, store_hits=store_hits,
            texts_per_call=texts_per_call, retry_failed=retry_failed, lock_wait=wait,
            router=online_router, max_error=max_error,
            audit_rate=audit_rate, max_llm_calls=max_llm_calls,
        )  # fmt: skip
        options = ClassifyOptions(
            JobIO(input, output, text_field, id_field, limit), settings, distilled, threshold,
            categories=None if categories is None else CategoryOptions(
                categories, category_min_similarity, top_k, multi_threshold, llm_margin),
            ray=RayOptions(ray_address, ray_embedders, ray_labelers) if ray else None,
            summary_json=summary_json,
        )  # fmt: skip
        summary = classify_job(options, console=err)
    if summary.get("interrupted"):
        raise typer.Exit(130)


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
    text_field: FieldOpt = "text",
    labels_field: FieldOpt = "labels",
    out: OutDir = Path("eval-report"),
    config: ConfigOpt = None,
) -> None:
    """Run labelling strategies side by side against gold labels; write a report."""
    from canonlabel.jobs import EvalOptions, evaluate_file
    from canonlabel.report import markdown_table

    names = tuple(s.strip() for s in strategies.split(",") if s.strip())
    options = EvalOptions(
        strategies=names,
        limit=limit,
        split=split,
        repeats=repeats,
        seed=seed,
        sample_seed=sample_seed,
        text_field=text_field,
        labels_field=labels_field,
    )
    with exit_on_error(ValueError):
        settings = settings_from(config, llm=llm, embedder=embedder)
        report, paths = evaluate_file(dataset, settings, options, out, console=err)
    Console().print(markdown_table(report))
    err.print("wrote " + ", ".join(str(p) for p in paths), soft_wrap=True)


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
    text_field: FieldOpt = "text",
    labels_field: FieldOpt = "labels",
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
    from canonlabel.calibrate import CalibrationOptions, run_calibration

    options = CalibrationOptions(
        limit=limit,
        llm_sample=llm_sample,
        split=split,
        target_precision=target_precision,
        sample_seed=sample_seed,
        text_field=text_field,
        labels_field=labels_field,
    )
    with exit_on_error(ValueError):
        settings = settings_from(config, llm=llm, embedder=embedder)
        result = run_calibration(dataset, settings, options, out, console=err)
    rec = result["recommended"]
    Console().print(
        f"recommended: min_similarity={rec['min_similarity']} "
        f"label_similarity={rec['label_similarity']}  ({out / 'calibration.json'})"
    )
    if write_config:
        from canonlabel.config import write_config as save

        save(write_config, rec)
        err.print(f"wrote {write_config}; use it with --config {write_config}")


def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="bind address (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    llm: LlmOpt = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    embedder: EmbOpt = None,
    concurrency: ConcurrencyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the classifier over HTTP (FastAPI; docs at /docs)."""
    import uvicorn

    from canonlabel.server import create_app

    with exit_on_error():
        settings = settings_from(
            config,
            db=db,
            llm=llm,
            llm_base_url=llm_base_url,
            embedder=embedder,
            concurrency=concurrency,
        )
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_token:
        err.print("[yellow]warning:[/] serving beyond loopback without CANONLABEL_API_TOKEN")
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=30
    )


def cluster(
    input: InputArg,
    output: RowsOpt = None,
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
    text_field: FieldOpt = "text",
    id_field: FieldOpt = "id",
    limit: LimitOpt = None,
    llm: LlmOpt = None,
    embedder: EmbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Order-invariant batch labelling: embed, cluster, name each cluster once."""
    from canonlabel.cluster import ClusterOptions, run_cluster

    files = JobIO(input, output, text_field, id_field, limit)
    options = ClusterOptions(method, k, min_cluster_size, samples, noise_similarity)
    with exit_on_error():
        settings = settings_from(config, llm=llm, embedder=embedder, db=db)
        summary = run_cluster(files, settings, options, save=db is not None, console=err)
    err.print(json.dumps(summary))


postgres_app = typer.Typer(
    help="A local PostgreSQL + pgvector server for a shared store (pgserver, no root).",
    no_args_is_help=True,
)
PgDataArg = Annotated[str, typer.Argument(help="data directory (created if missing)")]


@postgres_app.command("start")
def postgres_start(pgdata: PgDataArg = "pgdata") -> None:
    """Start a server in PGDATA (it keeps running) and print its URL for --db."""
    from canonlabel.store.postgres import start_local

    with exit_on_error(OSError):
        print(start_local(pgdata))


@postgres_app.command("stop")
def postgres_stop(pgdata: PgDataArg = "pgdata") -> None:
    """Stop the server running in PGDATA."""
    from canonlabel.store.postgres import stop_local

    with exit_on_error(OSError):
        stop_local(pgdata)


def train(
    annotated: Annotated[str, typer.Argument(help="JSONL with text and a labels list")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model directory")],
    model: Annotated[str, typer.Option(help="logreg | mlp")] = "logreg",
    val: Annotated[
        float, typer.Option(help="validation share for thresholds", min=0, max=0.9)
    ] = 0.2,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    embedder: EmbOpt = None,
    text_field: FieldOpt = "text",
    labels_field: FieldOpt = "labels",
) -> None:
    """Train a small multi-label classifier on embeddings; save weights.npz + meta.json."""
    from canonlabel.distill import TrainOptions, run_train

    options = TrainOptions(
        model=model,
        val=val,
        split=split,
        limit=limit,
        seed=seed,
        text_field=text_field,
        labels_field=labels_field,
    )
    with exit_on_error():
        summary = run_train(
            annotated, output, settings_from(embedder=embedder), options, console=err
        )
    print(json.dumps(summary, indent=1))


def predict(
    model_dir: Annotated[Path, typer.Argument(help="directory written by `train`")],
    input: RecordsArg,
    output: RowsOpt = None,
    text_field: FieldOpt = "text",
    id_field: FieldOpt = "id",
    embedder: EmbOpt = None,
    top: Annotated[int, typer.Option(help="also list the top N probabilities")] = 3,
) -> None:
    """Label texts with a distilled model: labels above threshold, top probabilities."""
    from canonlabel.distill import run_predict

    files = JobIO(input, output, text_field, id_field)
    with exit_on_error():
        run_predict(model_dir, files, settings_from(embedder=embedder), top=top)


taxonomy_app = typer.Typer(help="Discover a label taxonomy with the LLM.", no_args_is_help=True)


@taxonomy_app.command("discover")
def taxonomy_discover(
    input: Annotated[str | None, typer.Argument(help="texts to learn from")] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="taxonomy .yaml or .json", callback=writable)
    ] = Path("taxonomy.yaml"),
    n_labels: Annotated[int, typer.Option(help="at most this many labels", min=2)] = 20,
    sample: Annotated[int, typer.Option(help="texts shown to the LLM, stratified")] = 200,
    batch: Annotated[int, typer.Option(help="texts per LLM call")] = 20,
    from_db: Annotated[
        Path | None,
        typer.Option(help="seed from this store's canonical labels instead of asking the LLM"),
    ] = None,
    text_field: FieldOpt = "text",
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    llm: LlmOpt = None,
    embedder: EmbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Propose labels with one-line descriptions and examples (human-editable file)."""
    from canonlabel.jobs import DiscoverOptions, discover_taxonomy

    options = DiscoverOptions(
        n_labels=n_labels,
        sample=sample,
        batch=batch,
        text_field=text_field,
        limit=limit,
        seed=seed,
    )
    with exit_on_error():
        settings = settings_from(config, llm=llm, embedder=embedder)
        from_store = None if from_db is None else settings_from(db=from_db, embedder=embedder)
        entries = discover_taxonomy(
            input, output, settings, options, from_store=from_store, console=err
        )
    err.print(f"wrote {len(entries)} labels to {output}")


def annotate(
    input: RecordsArg,
    taxonomy: Annotated[Path, typer.Option(help="taxonomy file (name, description)")],
    output: RowsOpt = None,
    max_labels: Annotated[int, typer.Option(help="labels per text, at most", min=1)] = 3,
    db: DbOpt = None,
    text_field: FieldOpt = "text",
    id_field: FieldOpt = "id",
    limit: LimitOpt = None,
    llm: LlmOpt = None,
    config: ConfigOpt = None,
) -> None:
    """LLM multi-label annotation restricted to a taxonomy (resumable, cached)."""
    from canonlabel.jobs import annotate_file

    files = JobIO(input, output, text_field, id_field, limit)
    with exit_on_error():
        settings = settings_from(config, db=db, llm=llm)
        counts = annotate_file(files, settings, taxonomy, max_labels=max_labels, console=err)
    err.print(json.dumps(counts))


# --help lists the commands in this order, then the groups
COMMANDS = (
    ("classify", classify),
    ("labels", cli_store.labels),
    ("hierarchy", cli_store.hierarchy),
    ("stats", cli_store.stats),
    ("eval", eval_),
    ("calibrate", calibrate),
    ("serve", serve),
    ("explore", cli_store.explore),
    ("merge", cli_store.merge),
    ("rename", cli_store.rename),
    ("split", cli_store.split),
    ("undo", cli_store.undo),
    ("consolidate", cli_store.consolidate),
    ("cluster", cluster),
    ("maintain", cli_store.maintain),
    ("train", train),
    ("predict", predict),
    ("annotate", annotate),
)
GROUPS = (
    ("parents", cli_store.parents_app),
    ("postgres", postgres_app),
    ("categories", cli_store.categories_app),
    ("taxonomy", taxonomy_app),
)
for _name, _command in COMMANDS:
    app.command(_name)(_command)
for _name, _group in GROUPS:
    app.add_typer(_group, name=_name)

if __name__ == "__main__":  # pragma: no cover
    app()
