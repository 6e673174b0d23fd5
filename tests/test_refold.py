"""Folded labels decided again by their later answers."""

from __future__ import annotations

import pytest

from canonlabel.labelspace import refold
from canonlabel.testing import SimulatedLLM
from tests.test_consensus import _blobs
from tests.test_consolidate import _OPENED, build, corpus, final_labels


@pytest.fixture(autouse=True)
def _close_classifiers():
    yield
    while _OPENED:
        _OPENED.pop().close()


def test_answers_that_hold_together_let_a_folded_label_stand_again():
    ids, X, answers = _blobs()  # clusters answered 101, 102, 103
    # label 900 was folded into 101 on its first answers; all of cluster 103 named it since
    fold_of = {int(i): 900 for i, a in zip(ids, answers, strict=True) if a == 103}
    answers = answers.copy()
    answers[answers == 103] = 101  # their answers name 101 now, through the fold
    found = refold.refolds(ids, X, answers, fold_of, {900: 101})
    assert found == [refold.Refold(900, None, 20)]


def test_answers_the_evidence_places_elsewhere_move_the_fold_there():
    ids, X, answers = _blobs()
    of = {a: [int(i) for i, x in zip(ids, answers, strict=True) if x == a] for a in (102, 103)}
    scattered = of[102][:3] + of[103][:1]  # answers naming 900 about texts of 102 and 103
    fold_of = dict.fromkeys(scattered, 900)
    folded = answers.copy()
    folded[[i - 1 for i in scattered]] = 101  # folded into 101 by its name
    assert refold.refolds(ids, X, folded, fold_of, {900: 101}) == [refold.Refold(900, 102, 4)]
    # where the fold already points, nothing changes
    assert refold.refolds(ids, X, folded, fold_of, {900: 102}) == []
    # a fold decided on a label's few first answers stands until more come
    few = dict.fromkeys(scattered[:2], 900)
    assert refold.refolds(ids, X, folded, few, {900: 101}) == []
    # a fragment of one cluster holds together: it stands, and the regrouping decides
    fragment = dict.fromkeys(of[102][:5], 900)
    assert refold.refolds(ids, X, answers, fragment, {900: 101}) == [refold.Refold(900, None, 5)]


def test_fold_root_stops_at_the_first_folded_label():
    parent = {1: 2, 2: 3, 3: 4}
    assert refold.fold_root(parent, 1, {2, 3}) == 2
    assert refold.fold_root(parent, 3, {2, 3}) == 3
    assert refold.fold_root(parent, 1, set()) is None
    assert refold.fold_root(parent, None, {2}) is None


def _fold_by_mistake(clf, intent: str, into_intent: str, gold) -> tuple[int, int]:
    """Fold the label of ``intent`` into that of ``into_intent``, its items along, the way
    an early consensus fold leaves them (later uses stored under the label folded into)."""
    labels = final_labels(clf)
    rows = clf.store.conn.execute("SELECT id, ext_id, label_id FROM items").fetchall()
    source = next(lab for _, ext, lab in rows if gold[ext] == intent)
    into = next(lab for _, ext, lab in rows if gold[ext] == into_intent)
    source, into = clf.space.resolve(source), clf.space.resolve(into)
    assert source != into and labels
    moved = [i for i, _, lab in rows if clf.space.resolve(lab) == source]
    with clf.space.rewrite() as c:
        clf.store.items.relabel(c, moved, into)
        clf.store.labels.merge_emptied(c, [(source, into, 0.7)])
    clf.space.reload()
    return source, into


def test_a_label_folded_by_mistake_stands_again_and_undo_folds_it_back(tmp_path):
    gold = corpus(n_per_intent=25, seed=0)
    clf = build(tmp_path, "refold", sorted(gold), gold, labeler=SimulatedLLM(gold, seed=0))
    clf.consolidate()
    right = final_labels(clf)
    source, into = _fold_by_mistake(clf, "card_arrival", "exchange_rate", gold)
    folded = final_labels(clf)
    assert len(set(folded.values())) == len(set(right.values())) - 1
    folded_name = folded[next(t for t, i in gold.items() if i == "card_arrival")]

    report = clf.consolidate()
    assert report["consensus"]["refolded"] >= 1
    assert clf.space.resolve(source) != clf.space.resolve(into)
    now = final_labels(clf)
    arrival = {now[t] for t, i in gold.items() if i == "card_arrival"}
    exchange = {now[t] for t, i in gold.items() if i == "exchange_rate"}
    assert len(arrival) == 1 and arrival.isdisjoint(exchange)
    again = clf.consolidate()  # decided once: the next consolidation changes nothing
    assert again["consensus"]["refolded"] == 0 and final_labels(clf) == now
    assert clf.store.log.emptied().get(source) is None  # it stands: no longer folded

    clf.undo()  # the consolidation that brought it back, whole (undone corrections
    # keep their items' answers, so only the fold is compared)
    assert clf.space.resolve(source) == clf.space.resolve(into)
    assert source in clf.store.log.emptied()
    undone = final_labels(clf)
    assert {undone[t] for t, i in gold.items() if i == "card_arrival"} == {folded_name}
