"""``classify --ray``: the classify job as a Ray Data pipeline.

read (driver, with the same per-line error handling as the plain job) -> normalise and
embed (an actor pool, one embedder per actor; ``num_gpus`` where there are GPUs) ->
label (an actor pool, each actor one :class:`~canonlabel.pipeline.Classifier` on the
shared store: exact and semantic cache, router, then the LLM at ``concurrency`` calls per
actor, canonicalised through the store) -> ordered JSONL output, consolidation and the
same summary as the plain job, on the driver.

It runs on a local Ray instance (``--ray``) or unchanged on a cluster (``--ray auto`` or
``--ray ray://head:10001``); canonlabel must be installed on the cluster's nodes and the
store must be a ``postgresql://`` URL they reach. A SQLite store has one writer, so it
gets one labelling actor on the driver's machine.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from canonlabel.config import Settings
from canonlabel.errors import MissingDependencyError
from canonlabel.io import RowSpool, check_output, read_records
from canonlabel.store import is_url

BATCH = 256


class _Embed:
    """Ray actor: normalised texts -> embeddings (None where normalisation fails)."""

    def __init__(self, settings: Settings) -> None:
        from canonlabel.embed import make_embedder

        self.settings = settings
        self.embedder = make_embedder(settings.embedder, settings)

    def __call__(self, batch: dict) -> dict:
        from canonlabel.errors import CanonlabelError
        from canonlabel.normalize import normalize

        texts, rows = [], []
        for n, text in enumerate(batch["text"]):
            try:
                texts.append(normalize(text, self.settings.max_chars)[0])
                rows.append(n)
            except CanonlabelError:
                pass  # the labelling stage reports it, as the plain job does
        out = [b""] * len(batch["text"])
        if texts:
            for n, v in zip(rows, self.embedder.embed(texts)):
                out[n] = np.asarray(v, dtype=np.float32).tobytes()
        return {**batch, "vector": np.array(out, dtype=object)}


class _Label:
    """Ray actor: one Classifier on the shared store; rows in, output rows (JSON) out."""

    def __init__(self, settings: Settings, tally) -> None:
        from canonlabel.pipeline import Classifier

        self.clf = Classifier.open(settings=settings)
        self.tally = tally
        self._sent: Counter = Counter()

    def __call__(self, batch: dict) -> dict:
        from canonlabel.runner import _row, failed_record_row

        clf = self.clf
        out: list[str | None] = [None] * len(batch["text"])
        good = [n for n, e in enumerate(batch["error"]) if not e]
        vectors = [
            np.frombuffer(batch["vector"][n], dtype=np.float32) if batch["vector"][n] else None
            for n in good
        ]
        ids = [batch["id"][n] or None for n in good]
        results = clf.classify_many([batch["text"][n] for n in good], ids, vectors=vectors)
        for n, result in zip(good, results):
            out[n] = json.dumps(_row(clf, result), ensure_ascii=False)
        for n, error in enumerate(batch["error"]):
            if error:
                row = failed_record_row(batch["text"][n], batch["id"][n], batch["line"][n], error)
                out[n] = json.dumps(row, ensure_ascii=False)
                clf.counters["items"] += 1
                clf.counters["failed"] += 1
        delta = Counter(clf.counters)
        delta.subtract(self._sent)
        self._sent = Counter(clf.counters)
        self.tally.add.remote(dict(+delta))
        return {"pos": batch["pos"], "row": np.array(out, dtype=object)}


class _Tally:
    """Ray actor: the labelling actors' counters, summed."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, delta: dict) -> None:
        self.counts.update(delta)

    def get(self) -> dict:
        return dict(self.counts)


def run_classify_ray(
    input: str,
    output: Path | None,
    settings: Settings,
    *,
    address: str | None = None,
    embedders: int = 1,
    labelers: int | None = None,
    text_field: str = "text",
    id_field: str = "id",
    limit: int | None = None,
    console=None,
) -> dict:
    """Classify ``input`` on Ray (see the module docstring); returns the plain job's summary."""
    ray = _ray()
    from rich.console import Console

    from canonlabel.runner import _print_summary

    console = console or Console(stderr=True)
    check_output(output)
    shared = is_url(settings.db)
    labelers = labelers or (2 if shared else 1)
    if not shared and labelers > 1:
        console.print("[yellow]a SQLite store has one writer: using one labelling actor[/]")
        labelers = 1
    rows = _read(input, text_field, id_field, limit)
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=None if address in (None, "", "local") else address,
                 log_to_driver=False, configure_logging=False)  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # output in input order, like the plain job
    ctx.enable_progress_bars = console.is_terminal
    tally = ray.remote(_Tally).remote()
    # small inputs: at least two batches per labelling actor, so that each gets work
    size = BATCH if labelers == 1 else max(1, min(BATCH, len(rows) // (2 * labelers)))
    ds = _dataset(ray, rows, size)
    ds = ds.map_batches(
        _Embed, fn_constructor_kwargs={"settings": settings}, batch_size=size,
        concurrency=embedders, num_cpus=1, batch_format="numpy",
    ).map_batches(
        _Label, fn_constructor_kwargs={"settings": settings, "tally": tally},
        batch_size=size, concurrency=labelers, num_cpus=0.5, batch_format="numpy",
    )  # fmt: skip
    with RowSpool() as spool:
        for batch in ds.iter_batches(batch_size=BATCH, batch_format="numpy"):
            for r in batch["row"]:
                spool.write(json.loads(r))
        counts = Counter(ray.get(tally.get.remote()))
        summary = _finish(
            spool, output, settings, counts, time.perf_counter() - start, labelers, console
        )
    _print_summary(console, summary)
    return summary


def _dataset(ray, rows: list[dict], size: int):
    """One block per ``size`` rows, so every batch holds the rows the plain job would
    submit together (batch boundaries decide which near-duplicates share an LLM call)."""
    import pandas as pd

    frames = [pd.DataFrame(rows[i : i + size]) for i in range(0, len(rows), size)]
    return ray.data.from_pandas(frames or [pd.DataFrame(columns=["pos", "text", "id"])])


def _read(input: str, text_field: str, id_field: str, limit: int | None) -> list[dict]:
    rows = []
    for pos, r in enumerate(read_records(input, text_field=text_field, id_field=id_field)):
        if limit and pos >= limit:
            break
        rows.append(
            {
                "pos": pos,
                "text": r.text if isinstance(r.text, str) else "",
                "id": r.id or "",
                "line": r.line,
                "error": r.error or "",
            }
        )
    return rows


def _finish(spool, output, settings: Settings, counts: Counter, seconds: float, labelers, console):
    """Consolidate, then write the rows with the final label space, on the driver."""
    from canonlabel.pipeline import Classifier
    from canonlabel.runner import _summary, deliver_rows

    # the labelling actors have exited; a SQLite writer lock may take a moment to free
    settings = settings.model_copy(update={"lock_wait": max(settings.lock_wait, 30.0)})
    with Classifier.open(settings=settings) as clf:
        clf.counters.update(counts)
        if settings.consolidate_every > 0:
            with console.status("consolidating labels..."):
                clf.consolidate(adjudication_budget=None if clf.counters["llm_items"] else 0)
        changed = deliver_rows(spool, output, clf)
        return _summary(clf, seconds) | {"ray_labelers": labelers, "relabelled_rows": changed}


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            f"--ray needs Ray Data ({exc}); pip install 'canonlabel[ray]'"
        ) from exc
    return ray
