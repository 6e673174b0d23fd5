"""Jobs behind the commands on an existing store, on fixed categories, on a taxonomy and
on evaluation: each builds its backends from :class:`~canonlabel.config.Settings`,
runs the concept module (``categories``, ``taxonomy``, ``evaluate``) and reports through
a rich console; the CLI only parses flags and prints what a job returns.

``classify`` is :func:`classify_job`, which picks the runner: fixed categories and the
streaming pipeline (:mod:`canonlabel.runner`) or Ray (:mod:`canonlabel.batch`); ``cluster`` and
``train``/``predict`` are in :mod:`canonlabel.cluster` and :mod:`canonlabel.distill`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

from canonlabel.config import Settings
from canonlabel.errors import CanonlabelError
from canonlabel.io import JobIO, Record, count_lines, read_labelled, read_records, usable_text
from canonlabel.runner import CategoryOptions, run_categories, run_classify

if TYPE_CHECKING:
    from rich.console import Console

    from canonlabel.llm import Labeler
    from canonlabel.pipeline import Classifier
    from canonlabel.store import Store
    from canonlabel.taxonomy import Entry


@dataclass(frozen=True)
class RayOptions:
    """``classify --ray``: where the Ray Data pipeline runs and its actor pools."""

    address: str | None = None  # a cluster (auto, ray://head:10001); None: local
    embedders: int = 1
    labelers: int | None = None  # None: 2 on PostgreSQL, 1 on SQLite


@dataclass(frozen=True)
class ClassifyOptions:
    """One ``classify`` job, as its flags describe it: files, settings, and at most one
    of a distilled model, fixed categories or Ray."""

    files: JobIO
    settings: Settings
    distilled: Path | None = None  # a model directory from ``train``
    distilled_threshold: float = 0.7  # its top probability needed to skip the pipeline
    categories: CategoryOptions | None = None
    ray: RayOptions | None = None
    summary_json: Path | None = None  # also write the summary here


def classify_job(options: ClassifyOptions, console: Console | None = None) -> dict:
    """Run one ``classify`` job: fixed categories, on Ray, or the streaming pipeline
    (with or without a distilled model); returns its summary."""
    from canonlabel.batch import run_classify_ray
    from canonlabel.errors import ConfigError

    files, settings = options.files, options.settings
    alone = options.categories is None and options.distilled is None
    if options.ray is not None and not alone:
        raise ConfigError(
            "--ray runs the open-set pipeline; drop --categories/--distilled, or --ray"
        )
    if options.categories is not None:
        summary = run_categories(files, settings, options.categories, console=console)
    elif options.ray is not None:
        ray = options.ray
        summary = run_classify_ray(
            files.input,
            files.output,
            settings,
            address=ray.address,
            embedders=ray.embedders,
            labelers=ray.labelers,
            text_field=files.text_field,
            id_field=files.id_field,
            limit=files.limit,
            console=console,
        )
    else:
        summary = run_classify(
            files.input,
            files.output,
            settings,
            text_field=files.text_field,
            id_field=files.id_field,
            limit=files.limit,
            console=console,
            distilled=options.distilled,
            distilled_threshold=options.distilled_threshold,
        )
    if options.summary_json:
        options.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def open_classifier(
    settings: Settings, *, need_llm: bool = False, read_only: bool = False
) -> Classifier:
    """A classifier on the existing store ``settings.db`` (an error when there is none),
    with no LLM loaded unless ``need_llm``."""
    from canonlabel.llm.base import NoLabeler
    from canonlabel.pipeline import Classifier
    from canonlabel.store import store_exists

    if not store_exists(settings.db):
        raise CanonlabelError(
            f"store {settings.db} does not exist; run canonlabel classify first or pass --db"
        )
    labeler = None if need_llm else NoLabeler()
    return Classifier.open(settings=settings, labeler=labeler, read_only=read_only)


# -- fixed categories ----------------------------------------------------------------


def define_categories(settings: Settings, file: Path) -> dict:
    """``categories define``: store the definitions of ``file``; returns the counts."""
    from canonlabel.categories import open_categories

    opened = open_categories(settings, file)
    opened.store.close()
    return opened.defined


def map_categories(settings: Settings, file: Path, *, margin: float = 0.0) -> dict:
    """``categories map``: map every canonical label of the store to a category of
    ``file`` (items are not touched); the LLM breaks ties closer than ``margin``."""
    from canonlabel import categories as cat

    with open_classifier(settings) as clf:
        cat.define(clf.store, clf.embedder, cat.load_categories(file))
        labeler = None
        if margin > 0:
            from canonlabel.llm import make_labeler

            labeler = make_labeler(settings.llm, settings)
        return cat.map_labels(clf, labeler=labeler, margin=margin)


# -- taxonomy ------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoverOptions:
    """``taxonomy discover``: how many labels, and what the LLM is shown."""

    n_labels: int = 20  # at most this many labels
    sample: int = 200  # texts shown to the LLM, stratified
    batch: int = 20  # texts per LLM call
    text_field: str = "text"
    limit: int | None = None  # the first N input records only
    seed: int = 0


def discover_taxonomy(
    input: str | None,
    output: Path,
    settings: Settings,
    options: DiscoverOptions,
    *,
    from_store: Settings | None = None,
    console: Console | None = None,
) -> list[Entry]:
    """``taxonomy discover``: propose labels with descriptions and examples from the texts
    of ``input``, or seed them from the canonical labels of the store ``from_store``
    opens; save them to ``output`` (YAML, or JSON by suffix) and return them."""
    from rich.console import Console

    from canonlabel import taxonomy as tx

    console = console or Console(stderr=True)
    if from_store is not None:
        with open_classifier(from_store, read_only=True) as clf:
            entries = tx.from_store(clf, options.n_labels)
    else:
        if input is None:
            raise CanonlabelError("give INPUT texts, or --from-db to seed from a store")
        from canonlabel.embed import make_embedder
        from canonlabel.llm import make_labeler

        texts = usable_texts(input, options.text_field, options.limit)
        emb = make_embedder(settings.embedder, settings)
        labeler = make_labeler(settings.llm, settings)
        with console.status(f"discovering from a sample of {min(options.sample, len(texts))}..."):
            entries = tx.discover(
                texts,
                emb,
                labeler,
                n_labels=options.n_labels,
                sample=options.sample,
                batch=options.batch,
                seed=options.seed,
            )
    tx.save_taxonomy(entries, output)
    return entries


def usable_texts(input: str, text_field: str, limit: int | None) -> list[str]:
    """The non-blank texts among the first ``limit`` records of ``input``."""
    from itertools import islice

    records = read_records(input, text_field=text_field)
    texts = [
        r.text
        for r in (islice(records, limit) if limit else records)
        if r.error is None and r.text and r.text.strip()
    ]
    if not texts:
        raise CanonlabelError(f"{input} has no usable texts")
    return texts


def annotate_file(
    files: JobIO,
    settings: Settings,
    taxonomy: Path,
    *,
    max_labels: int = 3,
    console: Console | None = None,
) -> dict[str, int]:
    """``annotate``: up to ``max_labels`` labels of the ``taxonomy`` file per input text,
    by the LLM, answers cached in the store (resumable); rows are written as they come.
    Returns the counts: items, annotated, cached, failed."""
    from rich.console import Console
    from rich.progress import Progress

    from canonlabel import taxonomy as tx
    from canonlabel.llm import make_labeler
    from canonlabel.store import open_store

    console = console or Console(stderr=True)
    entries = tx.load_taxonomy(taxonomy)
    labeler = make_labeler(settings.llm, settings)
    store = open_store(settings.db)
    records = files.records()
    counts = {"items": 0, "annotated": 0, "cached": 0, "failed": 0}
    with files.writer() as sink, Progress(console=console, disable=not console.is_terminal) as bar:
        # counting reads the input once more: not when --limit already bounds it
        task = bar.add_task("annotate", total=files.limit or count_lines(files.input))
        for r in records:
            row: dict[str, object] = {"id": r.id or f"line:{r.line}", "text": r.text}
            try:
                found = _annotate_one(store, labeler, entries, r, settings, max_labels)
                row["labels"] = found.labels
                counts["annotated"] += 1
                counts["cached"] += found.cached
            except CanonlabelError as exc:
                row["error"] = str(exc)
                counts["failed"] += 1
            counts["items"] += 1
            sink.write(row)
            sink.flush()  # rows reach the output as they are made
            bar.advance(task)
    store.close()
    return counts


class _Annotation(NamedTuple):
    labels: list[str]
    cached: bool  # the store had the answer


def _annotate_one(
    store: Store,
    labeler: Labeler,
    entries: list[Entry],
    record: Record,
    settings: Settings,
    max_labels: int,
) -> _Annotation:
    """One record's labels; raises why there are none."""
    from canonlabel import taxonomy as tx

    usable_text(record, settings.max_chars)
    [(labels, error, was_cached)] = tx.annotate(
        store,
        labeler,
        entries,
        [cast(str, record.text)],  # usable_text() checked it
        max_labels=max_labels,
        max_chars=settings.max_chars,
    )
    if error:
        raise CanonlabelError(error)
    return _Annotation(cast("list[str]", labels), was_cached)  # no error: the labels


# -- evaluation ----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    """``eval``: which strategies, on which rows, how many times."""

    strategies: tuple[str, ...] = ("seed", "canonlabel", "kmeans-k", "hdbscan")
    limit: int | None = None  # the first N rows (after ``sample_seed``)
    split: str | None = None  # only rows of this split
    repeats: int = 1  # shuffled runs, for order invariance
    seed: int = 0  # for shuffles and k-means
    sample_seed: int | None = None  # shuffle rows with it before ``limit``
    text_field: str = "text"
    labels_field: str = "labels"


class EvalReport(NamedTuple):
    """What ``eval`` found, and the report files it wrote."""

    report: dict
    paths: list[Path]


def evaluate_file(
    dataset: str,
    settings: Settings,
    options: EvalOptions,
    out: Path,
    *,
    console: Console | None = None,
) -> EvalReport:
    """``eval``: run the strategies side by side on the gold-labelled ``dataset`` and
    write the report (JSON, Markdown, plots) into ``out``."""
    from rich.console import Console

    from canonlabel.embed import make_embedder
    from canonlabel.evaluate import EvalData, evaluate
    from canonlabel.llm import make_labeler
    from canonlabel.llm.base import NoLabeler
    from canonlabel.report import write_eval_report

    console = console or Console(stderr=True)
    texts, golds = read_labelled(
        dataset,
        text_field=options.text_field,
        labels_field=options.labels_field,
        split=options.split,
        limit=options.limit,
        shuffle_seed=options.sample_seed,
    )
    emb = make_embedder(settings.embedder, settings)
    needs_llm = any(n in ("llm-only", "seed", "canonlabel") for n in options.strategies)
    labeler = make_labeler(settings.llm, settings) if needs_llm else NoLabeler()
    with console.status(f"embedding {len(texts)} texts..."):
        data = EvalData.build(texts, [g[0] for g in golds], emb, settings.max_chars)
    with console.status("evaluating...") as status:
        report = evaluate(
            data,
            list(options.strategies),
            labeler,
            settings,
            repeats=options.repeats,
            seed=options.seed,
            progress=lambda msg: status.update(msg),
        )
    report |= _eval_context(dataset, options, settings, labeler, emb)
    return EvalReport(report, write_eval_report(report, out))


def _eval_context(dataset: str, options: EvalOptions, settings: Settings, labeler, emb) -> dict:
    """What the report was run on: data, models, the settings that matter."""
    from canonlabel.memory import shown_candidates

    return {
        "dataset": f"{dataset}{f' split={options.split}' if options.split else ''}"
        f"{f' limit={options.limit}' if options.limit else ''}",
        "llm": labeler.id,
        "embedder": emb.id,
        "settings": {k: getattr(settings, k) for k in ("min_similarity", "label_similarity")}
        | {
            "candidates": shown_candidates(settings, labeler),
            "candidate_source": settings.candidate_source,
        },
    }
