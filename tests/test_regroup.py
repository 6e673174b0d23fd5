"""Consolidation by items: for an LLM that gives one raw label to unrelated texts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from canonlabel import Classifier, Settings
from canonlabel.labelspace.regroup import cluster
from canonlabel.testing import FakeLabeler, HashEmbedder
from canonlabel.types import Grouping
from tests.test_consolidate import _OPENED, INTENTS, corpus, final_labels


@pytest.fixture(autouse=True)
def _close_classifiers():
    yield
    while _OPENED:
        _OPENED.pop().close()


BY_ITEMS = Grouping(name_weight=0.1, threshold=0.6, adjudication_share=0.0, by="items")


def _sloppy(gold):
    """Card arrival and lost cards share one raw label (as a weak LLM's ``card_delivery``
    covers several intents); every other text gets a raw label of its own words."""

    def rule(text, candidates=()):
        if gold[text] in {"card_arrival", "lost_or_stolen_card"}:
            return "card_issue"
        return "_".join(sorted(text.split())[:2])

    llm = FakeLabeler(rule)
    llm.grouping, llm.candidates = BY_ITEMS, 0
    return llm


def _build(tmp_path, name, order, gold, **overrides) -> Classifier:
    settings = Settings(db=tmp_path / f"{name}.db").model_copy(
        update={"min_similarity": 0.99, "consolidate_every": 0, "router": False} | overrides
    )
    clf = Classifier.open(settings=settings, embedder=HashEmbedder(), labeler=_sloppy(gold))
    _OPENED.append(clf)
    for text in order:
        clf.classify(text, id=text)
    return clf


def _partition(labels: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for text, name in labels.items():
        groups.setdefault(name, set()).add(text)
    return {frozenset(g) for g in groups.values()}


def test_grouping_by_items_splits_a_raw_label_given_to_unrelated_texts(tmp_path):
    gold = corpus()
    texts = sorted(gold)
    shuffled = texts[:]
    random.Random(3).shuffle(shuffled)
    a, b = _build(tmp_path, "a", texts, gold), _build(tmp_path, "b", shuffled, gold)
    assert a.grouping() == BY_ITEMS
    by_raw = _build(tmp_path, "r", texts, gold, consolidate_by="raw_labels")
    by_raw.consolidate()
    mixed = [n for n in set(final_labels(by_raw).values()) if n == "card_issue"]
    assert mixed  # grouped by raw labels, the shared one stays whole: two intents in one
    report = a.consolidate()
    b.consolidate()
    assert report["by"] == "items" and report["moved_items"] > 0
    after = final_labels(a)
    assert _partition(after) == _partition(final_labels(b))  # whatever the arrival order
    assert len(set(after.values())) == len(INTENTS)
    for name in set(after.values()):  # each label is one intent...
        assert len({gold[t] for t, n in after.items() if n == name}) == 1
    # ...named by the raw label most typical of its members
    assert "card_issue" in set(after.values())
    again = a.consolidate(dry_run=True)  # nothing left to do
    assert again["moved_items"] == again["merged_labels"] == again["renamed_labels"] == 0


def test_grouping_by_items_is_undone_exactly_and_leaves_pinned_labels_alone(tmp_path):
    gold = corpus()
    clf = _build(tmp_path, "u", sorted(gold), gold)
    moved = next(t for t in sorted(gold) if gold[t] == "card_arrival")
    assert clf.classify(moved, id="twin").source == "exact"
    before = final_labels(clf)
    aliases = {r: clf.space.resolve(i) for r, i in clf.space.aliases.items()}
    clf.consolidate()
    assert final_labels(clf) != before
    assert final_labels(clf)["twin"] == final_labels(clf)[moved]  # a duplicate follows
    clf.undo()
    assert final_labels(clf) == before
    assert {r: clf.space.resolve(i) for r, i in clf.space.aliases.items()} == aliases
    # a label curated by hand keeps its items, its name and its id
    pinned = next(lab for lab in clf.labels() if lab.name == "card_issue")
    clf.rename(pinned.id, "card_problems")
    members = {t for t, n in final_labels(clf).items() if n == "card_problems"}
    clf.consolidate()
    assert {t for t, n in final_labels(clf).items() if n == "card_problems"} == members
    assert clf.space.resolve(clf.space.aliases["card_issue"]) == pinned.id


def test_the_coherence_cut_does_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    x = np.repeat(centres, 20, axis=0) + 0.3 * rng.normal(size=(100, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(100)
    a, b = cluster(x, 0.8), cluster(x[perm], 0.8)
    same = lambda lab: {frozenset(np.flatnonzero(lab == c)) for c in np.unique(lab)}  # noqa: E731
    assert same(a) == {frozenset(perm[np.flatnonzero(b == c)]) for c in np.unique(b)}
    assert len(same(a)) == 5
    assert cluster(x, 0.8, dense_items=30).max() + 1 >= 5  # reduced first, same rule


def sloppy_job(tmp_path, monkeypatch):
    """An input file and settings whose end-of-job consolidation (by items) moves items
    one by one, so rows made during the job change label: (input, settings, rows)."""
    import json

    gold = corpus()
    monkeypatch.setattr(FakeLabeler, "from_spec", classmethod(lambda cls, arg: _sloppy(gold)))
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"t{i}", "text": text}) for i, text in enumerate(sorted(gold))]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(
        db=tmp_path / "job.db",
        llm="fake",
        embedder="hash",
        consolidate_by="items",
        consolidate_threshold=0.6,
        consolidate_name_weight=0.0,
        router=False,
    )
    return src, settings, len(lines)


def test_a_classify_job_writes_each_item_where_grouping_by_items_put_it(tmp_path, monkeypatch):
    """Items move one by one, so the job's output follows each item, not its raw label."""
    import json

    from canonlabel.runner import run_classify

    src, settings, _ = sloppy_job(tmp_path, monkeypatch)
    out = tmp_path / "out.jsonl"
    run_classify(str(src), out, settings)
    clf = Classifier.open(settings=settings, labeler=FakeLabeler())
    _OPENED.append(clf)
    stored = final_labels(clf)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len({r["label"] for r in rows}) == len(INTENTS)  # "card_issue" was split
    assert {r["id"]: r["label"] for r in rows} == {
        f"t{i}": stored[f"t{i}"] for i in range(len(rows))
    }
