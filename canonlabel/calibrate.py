"""Threshold calibration on a labelled sample.

``min_similarity``: simulate the semantic cache over the sample in order (a miss joins the
cache, a hit reuses its nearest cached item) for each threshold and measure the hit rate
and the hit precision (matched item has the same reference label). The recommendation is
the lowest threshold whose precision reaches the target, i.e. the most hits that are
still right often enough.

``label_similarity``: the LLM labels a sample once (every item asked); each threshold then
replays canonicalisation of those raw labels and is scored by label count, NMI and ARI
against the reference labels. The recommendation maximises ARI.

Reference labels are the gold labels when the data has them, else the LLM's raw labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.embed import Embedder
from canonlabel.llm import Labeler
from canonlabel.metrics import clustering_scores
from canonlabel.types import LabelRequest

CACHE_GRID = tuple(round(float(x), 3) for x in np.arange(0.5, 0.976, 0.025))
LABEL_GRID = CACHE_GRID


def sweep_cache(vectors: np.ndarray, reference: Sequence, thresholds=CACHE_GRID) -> list[dict]:
    """Hit rate and hit precision of the streaming cache at each threshold."""
    sims = vectors @ vectors.T
    ref = np.asarray([hash(x) for x in reference])
    rows = []
    n = len(vectors)
    for t in thresholds:
        cached = np.zeros(n, dtype=bool)
        hits = correct = 0
        for i in range(n):
            idx = np.flatnonzero(cached[:i])
            if len(idx):
                j = idx[int(sims[i, idx].argmax())]
                if sims[i, j] >= t:
                    hits += 1
                    correct += ref[i] == ref[j]
                    continue
            cached[i] = True
        rows.append(
            {
                "min_similarity": t,
                "hit_rate": round(hits / n, 4),
                "hit_precision": round(correct / hits, 4) if hits else None,
                "cached": int(cached.sum()),
            }
        )
    return rows


def recommend_cache(rows: list[dict], target_precision: float) -> dict:
    ok = [
        r
        for r in rows
        if r["hit_precision"] is not None
        and r["hit_precision"] >= target_precision
        and r["hit_rate"] > 0
    ]
    if not ok:
        best = max(rows, key=lambda r: (r["hit_precision"] or 0, r["min_similarity"]))
        return best | {"reached_target": False}
    return min(ok, key=lambda r: r["min_similarity"]) | {"reached_target": True}


def ask_raw_labels(texts: Sequence[str], labeler: Labeler, progress=None) -> list[str | None]:
    raws: list[str | None] = []
    for text in texts:
        try:
            raws.append(clean_label(labeler.label(LabelRequest(text)).output))
        except InvalidLabel:
            raws.append(None)
        if progress:
            progress(1)
    return raws


def canonicalise_replay(
    raw_labels: Sequence[str | None], label_vectors: dict[str, np.ndarray], threshold: float
) -> list[str | None]:
    """Greedy representative merging, as the pipeline does, in order of appearance."""
    reps: list[str] = []
    rep_vecs: list[np.ndarray] = []
    alias: dict[str, str] = {}
    for raw in raw_labels:
        if raw is None or raw in alias:
            continue
        v = label_vectors[raw]
        if rep_vecs:
            s = np.stack(rep_vecs) @ v
            j = int(s.argmax())
            if s[j] >= threshold:
                alias[raw] = reps[j]
                continue
        alias[raw] = raw
        reps.append(raw)
        rep_vecs.append(v)
    return [None if r is None else alias[r] for r in raw_labels]


def sweep_labels(
    raw_labels: Sequence[str | None], reference: Sequence, embedder: Embedder, thresholds=LABEL_GRID
) -> list[dict]:
    names = sorted({r for r in raw_labels if r})
    vectors = dict(zip(names, embedder.embed([label_text(n) for n in names])))
    keep = [i for i, r in enumerate(raw_labels) if r is not None]
    rows = []
    for t in thresholds:
        canon = canonicalise_replay(raw_labels, vectors, t)
        s = clustering_scores([reference[i] for i in keep], [canon[i] for i in keep])
        rows.append(
            {
                "label_similarity": t,
                "labels": s["labels"],
                "nmi": s["nmi"],
                "ari": s["ari"],
                "acc": s["acc"],
            }
        )
    return rows


def recommend_labels(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["ari"], r["nmi"]))


def plot_calibration(cache_rows, label_rows, out) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [r for r in cache_rows if r["hit_precision"] is not None]
    ax.plot([r["hit_rate"] for r in pts], [r["hit_precision"] for r in pts], marker="o")
    for r in pts[::2]:
        ax.annotate(f"{r['min_similarity']:.2f}", (r["hit_rate"], r["hit_precision"]), fontsize=7)
    ax.set(xlabel="cache-hit rate", ylabel="hit precision", title="min_similarity sweep")
    fig.tight_layout()
    paths.append(out / "cache_calibration.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if label_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            [r["labels"] for r in label_rows],
            [r["nmi"] for r in label_rows],
            marker="o",
            label="NMI",
        )
        ax.plot(
            [r["labels"] for r in label_rows],
            [r["ari"] for r in label_rows],
            marker="s",
            label="ARI",
        )
        for r in label_rows[::2]:
            ax.annotate(f"{r['label_similarity']:.2f}", (r["labels"], r["nmi"]), fontsize=7)
        ax.set(xlabel="canonical labels", ylabel="score", title="label_similarity sweep")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "label_calibration.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


@dataclass(frozen=True)
class CalibrationOptions:
    """The ``calibrate`` command's sample and target."""

    limit: int = 2000  # texts used for the cache sweep
    llm_sample: int = 300  # texts the LLM labels for the label_similarity sweep (0: skip)
    split: str | None = None  # only rows of this split
    target_precision: float = 0.95  # of cache hits, for the recommended min_similarity
    sample_seed: int = 0  # rows are shuffled with this seed
    text_field: str = "text"
    labels_field: str = "labels"


def run_calibration(dataset: str, settings, options: CalibrationOptions, out, console=None) -> dict:
    """The ``calibrate`` command: both sweeps, plots and ``calibration.json``."""
    import json
    from pathlib import Path

    from canonlabel.embed import make_embedder
    from canonlabel.llm import make_labeler

    texts, reference = _sample(dataset, settings, options)
    embedder = make_embedder(settings.embedder, settings)
    vectors = embedder.embed(texts)
    raw = None
    if options.llm_sample or reference is None:
        labeler = make_labeler(settings.llm, settings)
        n = max(options.llm_sample, 0) if reference is not None else len(texts)
        raw = ask_raw_labels(texts[:n], labeler)
        if reference is None:
            reference = [r or "_failed" for r in raw]
    cache_rows = sweep_cache(vectors, reference)
    cache_rec = recommend_cache(cache_rows, options.target_precision)
    label_rows = sweep_labels(raw, reference[: len(raw)], embedder) if raw else []
    label_rec = recommend_labels(label_rows) if label_rows else None
    result = {
        "dataset": dataset,
        "items": len(texts),
        "embedder": embedder.id,
        "reference": "gold" if golds_present(reference, raw) else "llm",
        "target_precision": options.target_precision,
        "cache_sweep": cache_rows,
        "label_sweep": label_rows,
        "recommended": {
            "min_similarity": cache_rec["min_similarity"],
            "label_similarity": label_rec["label_similarity"]
            if label_rec
            else settings.label_similarity,
        },
        "cache_recommendation": cache_rec,
        "label_recommendation": label_rec,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_calibration(cache_rows, label_rows, out)
    return result


class _Sample(NamedTuple):
    texts: list[str]  # normalised
    reference: list | None  # gold labels, None when the data has none


def _sample(dataset: str, settings, options: CalibrationOptions) -> _Sample:
    """The texts to calibrate on, and their gold labels when the data has them."""
    from canonlabel.errors import InputError
    from canonlabel.io import read_labelled, read_records
    from canonlabel.normalize import normalize

    try:
        texts, golds = read_labelled(
            dataset,
            text_field=options.text_field,
            labels_field=options.labels_field,
            split=options.split,
            limit=options.limit,
            shuffle_seed=options.sample_seed,
        )
        reference: list | None = [g[0] for g in golds]
    except InputError:  # no gold labels: the LLM's raw labels become the reference
        texts = [
            r.text
            for r in read_records(dataset, text_field=options.text_field, fmt="jsonl")
            if r.error is None and r.text and r.text.strip()
        ][: options.limit]
        reference = None
    return _Sample([normalize(t, settings.max_chars)[0] for t in texts], reference)


def golds_present(reference, raw) -> bool:
    return raw is None or list(reference[: len(raw)]) != [r or "_failed" for r in raw]
