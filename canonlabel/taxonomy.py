"""Taxonomy discovery (TnT-LLM style) and LLM multi-label annotation against it.

``discover``: draw a sample stratified over embedding clusters, show the LLM batches of
texts with the running taxonomy, parse its ``name: description`` lines, merge near-
duplicates by embedding similarity of name + description, and cap the size by merging
the closest pairs. The sample is ordered by text hash, so input order does not matter.

``annotate``: the LLM picks up to ``max_labels`` taxonomy labels per text under a grammar
or JSON-schema enum; anything outside the taxonomy is dropped, never accepted. Answers
are cached in the store (resumable, never paid twice).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label, label_text
from canonlabel.errors import ConfigError, LabelError
from canonlabel.normalize import normalize, text_key
from canonlabel.types import LabelRequest

_LINE = re.compile(r"^\s*[-*\d.)]*\s*`?([A-Za-z][\w -]{1,59}?)`?\s*[:\-–]\s*(.{3,200})$")
_GRAMMAR = (
    "root ::= line{1,%d}\n"
    'line ::= name ": " desc "\\n"\n'
    'name ::= [a-z] [a-z0-9]{1,14} ("_" [a-z0-9]{1,14}){0,3}\n'
    "desc ::= [A-Za-z] [A-Za-z ,'/-]{8,90}"
)


@dataclass
class Entry:
    name: str
    description: str
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "examples": self.examples}


def stratified_sample(texts: list[str], vectors: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """Indices of ``n`` texts spread over k-means clusters (proportional allocation,
    central members first), independent of input order."""
    from sklearn.cluster import KMeans

    order = sorted(range(len(texts)), key=lambda i: text_key(texts[i]))
    if len(order) <= n:
        return order
    k = max(2, min(50, int(np.sqrt(n))))
    v = vectors[order]
    km = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(v)
    picked: list[int] = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        quota = max(1, round(n * len(members) / len(order)))
        sims = v[members] @ km.cluster_centers_[c]
        picked += [order[m] for m in members[np.argsort(-sims, kind="stable")][:quota]]
    return sorted(picked, key=lambda i: text_key(texts[i]))[:n]


def discovery_prompt(batch: list[str], taxonomy: list[Entry], n_labels: int) -> str:
    current = "\n".join(f"{e.name}: {e.description}" for e in taxonomy) or "(none yet)"
    texts = "\n".join(f"- {t}" for t in batch)
    return (
        f"We are building a taxonomy of at most {n_labels} topic labels for short texts. "
        "Each label is snake_case with a one-line description. Reuse or refine the "
        "current labels; add a label only for texts none of them covers.\n\n"
        f"Current labels:\n{current}\n\nTexts:\n{texts}\n\n"
        "Labels for these texts, one per line as name: description\n"
    )


def parse_entries(output: str) -> list[Entry]:
    entries, seen = [], set()
    for line in output.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        try:
            name = clean_label(m.group(1))
        except InvalidLabel:
            continue
        if name not in seen:
            seen.add(name)
            entries.append(Entry(name, m.group(2).strip().rstrip(".")))
    return entries


def _embed_entries(embedder, entries: list[Entry]) -> np.ndarray:
    return embedder.embed([f"{label_text(e.name)}: {e.description}" for e in entries])


def merge_entries(
    embedder, entries: list[Entry], similarity: float, max_size: int | None = None
) -> list[Entry]:
    """Fold near-duplicates (name + description similarity) into the earlier entry, then
    merge the closest pairs until at most ``max_size`` remain."""
    if not entries:
        return []
    vecs = _embed_entries(embedder, entries)
    keep: list[int] = []
    for i in range(len(entries)):
        if keep:
            sims = vecs[keep] @ vecs[i]
            j = int(sims.argmax())
            if sims[j] >= similarity:
                entries[keep[j]].examples += entries[i].examples
                continue
        keep.append(i)
    while max_size and len(keep) > max_size:
        sims = vecs[keep] @ vecs[keep].T
        np.fill_diagonal(sims, -2)
        a, b = sorted(int(v) for v in np.unravel_index(int(sims.argmax()), sims.shape))
        entries[keep[a]].examples += entries[keep[b]].examples
        keep.pop(b)
    return [entries[i] for i in keep]


def discover(
    texts: list[str],
    embedder,
    labeler,
    *,
    n_labels: int,
    sample: int = 200,
    batch: int = 20,
    merge_similarity: float = 0.85,
    seed: int = 0,
    max_chars: int = 300,
    progress=None,
) -> list[Entry]:
    """Build a taxonomy of at most ``n_labels`` entries from a sample of ``texts``."""
    norm = [normalize(t, max_chars)[0] for t in texts]
    vectors = embedder.embed(norm)
    idx = stratified_sample(norm, vectors, sample, seed)
    taxonomy: list[Entry] = []
    grammar = _GRAMMAR % max(1, min(n_labels, 12))
    for start in range(0, len(idx), batch):
        chunk = [norm[i] for i in idx[start : start + batch]]
        answer = labeler.complete(
            discovery_prompt(chunk, taxonomy, n_labels),
            grammar=grammar,
            max_tokens=40 * min(n_labels, 12),
        )
        found = parse_entries(answer.output)
        taxonomy = merge_entries(embedder, taxonomy + found, merge_similarity, n_labels)
        if progress:
            progress(len(chunk))
    if not taxonomy:
        raise LabelError(
            "the LLM proposed no usable labels; try another --llm or a larger --sample", []
        )
    _attach_examples(embedder, taxonomy, [norm[i] for i in idx], vectors[idx])
    return taxonomy


def _attach_examples(embedder, taxonomy: list[Entry], texts, vectors, k: int = 3) -> None:
    evecs = _embed_entries(embedder, taxonomy)
    nearest = (vectors @ evecs.T).argmax(1)
    for j, entry in enumerate(taxonomy):
        members = [t for t, n in zip(texts, nearest) if n == j]
        sims = [float(v @ evecs[j]) for v, n in zip(vectors, nearest) if n == j]
        entry.examples = [t for _, t in sorted(zip(sims, members), reverse=True)[:k]]


def from_store(clf, n_labels: int, examples: int = 3) -> list[Entry]:
    """Seed a taxonomy from a store's most frequent canonical labels and typical members."""
    from canonlabel.labelspace import typical_centroids

    stats = typical_centroids(clf.space)
    ids, vectors, labels = clf.store.items.cached(clf.dim)
    texts = clf.store.items.texts(cached=True)
    out = []
    for lab in clf.labels()[:n_labels]:
        if lab.id not in stats:
            continue
        centroid = stats[lab.id][0]
        rows = [i for i, x in enumerate(labels) if clf.space.resolve(int(x)) == lab.id]
        rows.sort(key=lambda i: -float(vectors[i] @ centroid))
        ex = [texts[int(ids[i])] for i in rows[:examples]]
        out.append(Entry(lab.name, f"Texts like: {ex[0]}" if ex else label_text(lab.name), ex))
    return out


def overlap(a: list[Entry], b: list[Entry], embedder, similarity: float = 0.85) -> float:
    """Share of ``a``'s labels matched in ``b`` (same name, or similar name + description)."""
    if not a or not b:
        return 0.0
    va, vb = _embed_entries(embedder, a), _embed_entries(embedder, b)
    names_b = {e.name for e in b}
    hits = sum(
        e.name in names_b or float((vb @ va[i]).max()) >= similarity for i, e in enumerate(a)
    )
    return round(hits / len(a), 4)


def save_taxonomy(entries: list[Entry], path: Path) -> None:
    import yaml

    data = [e.to_dict() for e in entries]
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def load_taxonomy(path: Path) -> list[Entry]:
    from canonlabel.categories import load_categories

    return [Entry(c.name, c.description, list(c.examples)) for c in load_categories(path)]


def taxonomy_hash(entries: list[Entry]) -> str:
    payload = json.dumps([[e.name, e.description] for e in entries])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def annotate_one(labeler, text: str, names: tuple[str, ...], max_labels: int) -> list[str]:
    """Up to ``max_labels`` taxonomy labels for ``text``; one re-ask, then LabelError."""
    outputs = []
    for feedback in (None, f"Answer only with labels from: {', '.join(names)}."):
        out = labeler.label(
            LabelRequest(text, names, feedback, closed=True, max_labels=max_labels)
        ).output
        outputs.append(out)
        picked = []
        for part in re.split(r"[,\n;]", out):
            part = part.strip().strip("`'\". ")
            if part in names and part not in picked:  # outside the taxonomy: dropped
                picked.append(part)
        if picked:
            return picked[:max_labels]
    raise LabelError("no taxonomy label in the LLM's answers", outputs)


def annotate(
    store,
    labeler,
    entries: list[Entry],
    texts: list[str],
    *,
    max_labels: int,
    max_chars: int = 2000,
) -> list[tuple[list[str] | None, str | None, bool]]:
    """``(labels, error, cached)`` per text, cached in the store by text and taxonomy."""
    if max_labels < 1:
        raise ConfigError("--max-labels must be at least 1")
    names = tuple(e.name for e in entries)
    tax = taxonomy_hash(entries)
    out: list[tuple[list[str] | None, str | None, bool]] = []
    for text in texts:
        norm = normalize(text, max_chars)[0]
        key = text_key(norm)
        stored = store.annotations.get(key, tax, max_labels)
        if stored is not None:
            out.append((stored, None, True))
            continue
        try:
            labels = annotate_one(labeler, norm, names, max_labels)
        except LabelError as exc:
            out.append((None, str(exc), False))
            continue
        store.annotations.save(key, tax, max_labels, labels)
        out.append((labels, None, False))
    return out
