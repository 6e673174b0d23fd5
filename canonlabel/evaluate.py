"""Side-by-side evaluation of labelling strategies against gold labels.

Every strategy sees the same items in the same order. Strategies: ``llm-only`` (every
item to the LLM, raw labels kept), ``seed`` (the Go original's rules), ``canonlabel``
(this pipeline), ``kmeans-k`` (k = number of gold labels: an oracle-k reference) and
``hdbscan`` (no k). With ``repeats`` > 1 each strategy also runs on shuffled orders and
the report gives order invariance (mean pairwise ARI) and the share of stable items.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.config import Settings
from canonlabel.embed import Embedder
from canonlabel.llm import Labeler
from canonlabel.metrics import clustering_scores, hit_precision, mean_pairwise_ari, stable_share
from canonlabel.normalize import normalize
from canonlabel.types import LabelRequest

STRATEGIES = ("llm-only", "seed", "canonlabel", "kmeans-k", "hdbscan")


class PrecomputedEmbedder(Embedder):
    """Serves vectors computed once per evaluation; falls back to the real model."""

    def __init__(self, base: Embedder, table: dict[str, np.ndarray]) -> None:
        self.base, self.table, self.id, self.batch_size = base, table, base.id, 4096

    @property
    def dim(self) -> int:
        return self.base.dim

    def prefetch(self, texts) -> None:
        """Embed texts not seen yet in one batch (label names, before they are needed
        one by one)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            self.table.update(zip(missing, self.base.embed(missing)))

    def embed_batch(self, texts):
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            self.table.update(zip(missing, self.base.embed(missing)))
        return np.stack([self.table[t] for t in texts])


@dataclass
class Run:
    """One strategy over one ordering; per-item lists are in dataset order."""

    labels: list[str | None]
    sources: list[str]
    matches: list[tuple[int, int]] = field(default_factory=list)
    llm_calls: int = 0
    adjudication_calls: int = 0  # of llm_calls: consolidation's questions
    recheck_calls: int = 0  # of llm_calls: the consensus's second questions
    llm_error_estimate: float = 0.0  # share of LLM answers the evidence contested
    tokens: int = 0
    seconds: float = 0.0
    audits: int = 0  # of llm_calls: items the router or cache would have answered
    router: dict | None = None  # the online router's summary at the end
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    curve: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class EvalData:
    texts: list[str]
    gold: list[str]
    vectors: np.ndarray
    embedder: PrecomputedEmbedder

    @classmethod
    def build(
        cls, texts: Sequence[str], gold: Sequence[str], embedder: Embedder, max_chars: int = 2000
    ) -> EvalData:
        norm = [normalize(t, max_chars)[0] for t in texts]
        vectors = embedder.embed(norm)
        return cls(
            norm, list(gold), vectors, PrecomputedEmbedder(embedder, dict(zip(norm, vectors)))
        )


def run_llm_only(data: EvalData, order, labeler: Labeler, settings: Settings) -> Run:
    run = Run([None] * len(order), ["failed"] * len(order))
    raws: set[str] = set()
    for step, i in enumerate(order, 1):
        t = time.perf_counter()
        response = labeler.label(LabelRequest(data.texts[i]))
        run.llm_calls += 1
        run.tokens += response.usage.prompt_tokens + response.usage.completion_tokens
        try:
            run.labels[i] = clean_label(response.output)
            run.sources[i] = "llm"
            raws.add(run.labels[i])
        except InvalidLabel:
            pass
        run.latency["llm"].append(time.perf_counter() - t)
        _point(run, step, 0, len(raws), len(raws), run.llm_calls)
    return run


def run_seed(data: EvalData, order, labeler: Labeler, settings: Settings) -> Run:
    from canonlabel.baselines import SeedClassifier

    seed = SeedClassifier(data.embedder, labeler, min_similarity=0.80, label_similarity=0.75)
    run = Run([None] * len(order), ["failed"] * len(order))
    hits = 0
    for step, i in enumerate(order, 1):
        t = time.perf_counter()
        r = seed.classify(data.texts[i], data.vectors[i])
        run.latency[r.source].append(time.perf_counter() - t)
        run.labels[i], run.sources[i] = r.label, r.source
        if r.source == "cache":
            hits += 1
            run.matches.append((i, order[r.matched]))
        _point(run, step, hits, seed.raw_label_count, seed.label_count, seed.llm_calls)
    run.llm_calls = seed.llm_calls
    return run


def run_canonlabel(data: EvalData, order, labeler: Labeler, settings: Settings) -> Run:
    from canonlabel.pipeline import Classifier
    from canonlabel.store import SqliteStore

    run = Run([None] * len(order), ["failed"] * len(order))
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.model_copy(update={"db": Path(tmp) / "eval.db", "concurrency": 1})
        clf = Classifier(SqliteStore(s.db), data.embedder, labeler, s)
        # the counts read here are ints (the counters also hold float seconds)
        counts = cast("dict[str, int]", clf.counters)
        hits = 0
        for step, i in enumerate(order, 1):
            t = time.perf_counter()
            r = clf.classify_many([data.texts[i]], [str(i)])[0]
            run.latency[r.source or "failed"].append(time.perf_counter() - t)
            run.labels[i], run.sources[i] = r.label, r.source or "failed"
            hits += r.source in ("exact", "cache")
            raw, labels, calls = len(clf.space.aliases), len(clf.space), counts["llm_calls"]
            _point(run, step, hits, raw, labels, calls)  # calls: audits included
        if s.consolidate_every > 0:  # what the end of a `classify` job does
            clf.consolidate()
            if run.curve.get("labels"):
                run.curve["labels"][-1] = len(clf.space)
        for ext, label_id in clf.store.items.ext_labels():
            run.labels[int(ext)] = clf.space.name(label_id)  # final labels, not as returned
        matches = clf.store.items.hit_matches()
        run.matches = [(int(m.ext_id), int(m.matched_ext_id)) for m in matches]
        run.llm_calls = counts["llm_calls"]  # adjudication questions included
        run.adjudication_calls = counts["adjudication_calls"]
        run.recheck_calls = counts["recheck_calls"]
        run.llm_error_estimate = float(clf.store.meta().get("llm_error_estimate", 0.0))
        run.tokens = counts["prompt_tokens"] + counts["completion_tokens"]
        run.audits = counts["audits"]
        run.router = clf.router.summary() if clf.router is not None else None
        clf.close()
    return run


def run_kmeans(data: EvalData, order, labeler, settings, seed: int = 0) -> Run:
    from sklearn.cluster import KMeans

    k = len(set(data.gold))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(data.vectors[order])
    return _cluster_run(order, km.labels_)


def run_hdbscan(data: EvalData, order, labeler, settings, seed: int = 0) -> Run:
    from sklearn.cluster import HDBSCAN

    hd = HDBSCAN(min_cluster_size=5, copy=True).fit(data.vectors[order])
    return _cluster_run(order, hd.labels_)  # noise (-1) counts as one cluster


def _cluster_run(order, assigned) -> Run:
    run = Run([None] * len(order), ["cluster"] * len(order))
    for i, c in zip(order, assigned):
        run.labels[i] = f"cluster_{int(c)}" if c >= 0 else "noise"
    return run


def _point(run: Run, step: int, hits: int, raw: int, labels: int, llm_calls: int) -> None:
    run.curve["items"].append(step)
    run.curve["hits"].append(hits)
    run.curve["llm_calls"].append(llm_calls)
    run.curve["raw_labels"].append(raw)
    run.curve["labels"].append(labels)


RUNNERS: dict[str, Callable[..., Run]] = {
    "llm-only": run_llm_only,
    "seed": run_seed,
    "canonlabel": run_canonlabel,
    "kmeans-k": run_kmeans,
    "hdbscan": run_hdbscan,
}


def summarize(data: EvalData, run: Run) -> dict:
    keep = [i for i, lab in enumerate(run.labels) if lab is not None]
    scores = clustering_scores([data.gold[i] for i in keep], [run.labels[i] for i in keep])
    n = len(run.labels)
    hits = sum(s in ("exact", "cache") for s in run.sources)
    latency = {
        s: {
            "n": len(v),
            "p50_ms": round(float(np.percentile(v, 50)) * 1000, 2),
            "p95_ms": round(float(np.percentile(v, 95)) * 1000, 2),
        }
        for s, v in run.latency.items()
        if v
    }
    return scores | {
        "items": n,
        "failed": n - len(keep),
        "llm_calls": run.llm_calls,
        "adjudication_calls": run.adjudication_calls,
        "recheck_calls": run.recheck_calls,
        "llm_error_estimate": run.llm_error_estimate,
        "tokens": run.tokens,
        "hit_rate": round(hits / n, 4) if n else 0.0,
        "hit_precision": hit_precision(run.matches, data.gold),
        "semantic_hits": sum(s == "cache" for s in run.sources),
        "router_share": round(sum(s == "model" for s in run.sources) / n, 4) if n else 0.0,
        "audits": run.audits,
        "llm_calls_per_1000": calls_per_1000(run.curve.get("llm_calls", [])),
        "router": _router_error(run.router),
        "raw_labels": run.curve["raw_labels"][-1] if run.curve.get("raw_labels") else None,
        "seconds": round(run.seconds, 2),
        "latency": latency,
    }


def calls_per_1000(cumulative: Sequence[int]) -> list[int]:
    """The convergence curve: LLM calls in each successive 1,000 items (a last, partial
    block is left out)."""
    marks = [cumulative[k - 1] for k in range(1000, len(cumulative) + 1, 1000)]
    return [b - a for a, b in zip([0, *marks], marks, strict=False)]


def _router_error(summary: dict | None) -> dict | None:
    """The router's and the cache's estimated disagreement with the LLM path."""
    if not summary:
        return None
    keys = ("audits", "disagreed", "pooled_threshold", "pooled_agreeing_only", "error", "upper_95")
    return {
        "head": {k: summary.get(k) for k in keys},
        "cache": {k: (summary.get("cache") or {}).get(k) for k in keys},
        "llm_self_disagreement": summary.get("llm_self_disagreement"),
        "warning": summary.get("warning"),
    }


def evaluate(
    data: EvalData,
    strategies: Sequence[str],
    labeler: Labeler,
    settings: Settings,
    *,
    repeats: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run each strategy; returns ``{"strategies": {name: summary}, "curves": ...}``."""
    n = len(data.texts)
    orders = [list(range(n))]
    rng = random.Random(seed)
    for _ in range(1, repeats):
        order = list(range(n))
        rng.shuffle(order)
        orders.append(order)
    report: dict = {
        "items": n,
        "gold_labels": len(set(data.gold)),
        "repeats": repeats,
        "strategies": {},
        "curves": {},
    }
    for name in strategies:
        if name not in RUNNERS:
            raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        runs = _runs(name, data, orders, labeler, settings, seed, progress)
        summary = summarize(data, runs[0])
        if repeats > 1:
            summary |= _consistency(name, runs, data, orders[0], labeler, settings)
        report["strategies"][name] = summary
        if runs[0].curve.get("items"):
            report["curves"][name] = dict(runs[0].curve)
    return report


def _runs(name: str, data: EvalData, orders, labeler, settings, seed: int, progress) -> list[Run]:
    """Strategy ``name`` over each ordering, timed."""
    runs = []
    for r, order in enumerate(orders):
        if progress:
            progress(f"{name} run {r + 1}/{len(orders)}")
        start = time.perf_counter()
        kwargs = {"seed": seed + r} if name in ("kmeans-k", "hdbscan") else {}
        run = RUNNERS[name](data, order, labeler, settings, **kwargs)
        run.seconds = time.perf_counter() - start
        runs.append(run)
        if name == "llm-only":  # the raw labels later strategies will embed one by one
            data.embedder.prefetch([label_text(x) for x in run.labels if x])
    return runs


def _consistency(name: str, runs: list[Run], data: EvalData, order, labeler, settings) -> dict:
    """Order invariance and stable share over the runs; for the strategies that ask the
    LLM, also test-retest agreement of the first ordering run again."""
    labelings = [_labeling(run) for run in runs]
    out = {
        "order_invariance_ari": mean_pairwise_ari(labelings),
        "stable_share": stable_share(labelings),
    }
    if name not in ("kmeans-k", "hdbscan"):
        again = RUNNERS[name](data, order, labeler, settings)
        out["test_retest_ari"] = mean_pairwise_ari([labelings[0], _labeling(again)])
    return out


def _labeling(run: Run) -> list[str]:
    """The run's labels, each failed item a label of its own."""
    return [lab if lab is not None else f"_failed_{i}" for i, lab in enumerate(run.labels)]
