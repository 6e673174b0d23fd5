"""The label hierarchy: balanced grouping, LLM-named parents, stable ids, paths."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from canonlabel import hierarchy
from canonlabel.testing import SimulatedLLM
from tests.conftest import run_cli
from tests.test_consolidate import _OPENED, build, corpus, final_labels

COARSE = {
    "card_arrival": "card_matters",
    "lost_or_stolen_card": "card_matters",
    "exchange_rate": "money_matters",
    "top_up_failed": "money_matters",
}


@pytest.fixture(autouse=True)
def _close_classifiers():
    yield
    while _OPENED:
        _OPENED.pop().close()


def test_level_sizes_fall_geometrically_to_the_top():
    assert hierarchy.level_sizes(400, 12, 1) == [12]
    assert hierarchy.level_sizes(400, 12, 2) == [69, 12]
    assert hierarchy.level_sizes(5, 12, 2) == [5, 5]


def test_no_group_swallows_the_stream_while_another_merge_is_possible():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    weights = np.ones(40)
    groups = hierarchy.balanced_groups(X, weights, 4)
    sizes = np.bincount(groups)
    assert len(sizes) == 4 and sizes.max() <= hierarchy.BALANCE * 40 / 4
    # a label heavier than the fair share stays a group of its own, and is allowed
    weights[0] = 100
    groups = hierarchy.balanced_groups(X, weights, 4)
    assert len(np.bincount(groups)) == 4


def _store(tmp_path, name="h", order=None):
    gold = corpus(n_per_intent=15)
    llm = SimulatedLLM(gold, inconsistency=0.3, coarse=COARSE)
    texts = order or sorted(gold)
    clf = build(tmp_path, name, texts, gold, labeler=llm, consolidate_threshold=0.4)
    clf.consolidate()
    return clf, gold


def test_parents_are_named_by_the_llm_from_their_members(tmp_path):
    """(The hash embedder groups by shared words, not by the coarse table, so the test
    checks names against each parent's own members.)"""
    clf, gold = _store(tmp_path)
    tree = clf.hierarchy(top=2)
    assert len(tree.top()) == 2
    labels = final_labels(clf)
    rows = clf.store.query("SELECT ext_id, label_id FROM items")
    members: dict[str, list[str]] = {}
    for text, label_id in rows:
        path = tree.path(clf.space.resolve(label_id))
        assert len(path) == 1
        members.setdefault(path[0], []).append(COARSE[gold[text]])
    for name, coarse in members.items():
        assert name.startswith(max(set(coarse), key=coarse.count)), (name, labels)


def test_a_refit_keeps_ids_and_names_and_the_tree_is_order_invariant(tmp_path):
    clf, gold = _store(tmp_path)
    first = clf.hierarchy(top=2)
    calls = clf.labeler.calls
    again = clf.hierarchy(top=2)
    assert {p.id: p.name for p in again.top()} == {p.id: p.name for p in first.top()}
    # unchanged parents are not named again: a refit pays only the theme proposals (two
    # rounds or more, see propose_themes)
    rounds = -(-len(clf.label_counts()) // hierarchy.PROPOSALS_PER_CALL)
    assert 2 * rounds <= clf.labeler.calls - calls <= hierarchy.ROUNDS * rounds
    shuffled = sorted(gold)
    random.Random(3).shuffle(shuffled)
    other, _ = _store(tmp_path, "h2", shuffled)
    tree = other.hierarchy(top=2)

    def partition(c, t):
        rows = c.store.query("SELECT ext_id, label_id FROM items")
        return {text: t.path(c.space.resolve(lab))[0] for text, lab in rows}

    assert partition(clf, first) == partition(other, tree)


def test_a_big_label_needs_three_agreeing_themes_a_small_one_two(tmp_path):
    """One wrong theme moves a whole label: a label holding many items is asked until
    three answers agree, so two wrong ones that happen to agree do not decide it."""
    import re
    from types import SimpleNamespace

    clf, _ = _store(tmp_path)
    big, small = sorted(clf.label_counts())[:2]
    script = ["wrong_theme", "wrong_theme", "right_theme", "right_theme", "right_theme"]
    asked: dict[str, int] = {}

    class Scripted:
        def complete(self, prompt, **kw):
            lines = []
            for n, name in re.findall(r"^(\d+): (\w+)$", prompt, re.MULTILINE):
                asked[name] = asked.get(name, 0) + 1
                lines.append(f"{n}: {script[asked[name] - 1]}")
            return SimpleNamespace(output="\n".join(lines))

    counts = {big: 1000, small: 1}
    themes = hierarchy.propose_themes(clf, [big, small], Scripted(), counts)
    assert themes == {big: "right_theme", small: "wrong_theme"}
    assert asked == {clf.space.names[big]: 5, clf.space.names[small]: 2}


def test_a_theme_question_shows_enough_texts_that_one_cannot_tie_the_vote(tmp_path):
    """With two texts a label's one misleading text ties the vote, and the theme is a
    coin flip; each round shows ``THEME_EXAMPLES`` (odd) texts, new ones each round."""
    import re
    from types import SimpleNamespace

    clf, _ = _store(tmp_path)
    label = max(clf.label_counts().items(), key=lambda kv: kv[1])[0]
    shown: list[list[str]] = []

    class Undecided:  # a new theme every time: every round is asked
        def complete(self, prompt, **kw):
            shown.append(re.findall(r"^- (.*)$", prompt, re.MULTILINE))
            return SimpleNamespace(output=f"1: theme_{len(shown)}")

    hierarchy.propose_themes(clf, [label], Undecided(), {label: 1})
    assert hierarchy.THEME_EXAMPLES % 2 == 1 and len(shown) >= 3
    assert all(len(texts) == hierarchy.THEME_EXAMPLES for texts in shown[:3])
    assert len({t for texts in shown[:3] for t in texts}) == 3 * hierarchy.THEME_EXAMPLES


def test_cli_hierarchy_labels_tree_and_rows_carry_their_path(tmp_path, monkeypatch):
    clf, gold = _store(tmp_path)
    clf.hierarchy(top=2)
    db = str(clf.settings.db)
    clf.close()
    _OPENED.remove(clf)
    shown = run_cli("labels", "--db", db, "--tree", "--json", "--embedder", "hash")
    assert shown.returncode == 0, shown.stderr
    nodes = json.loads(shown.stdout)
    assert len(nodes) == 2
    assert sum(n["count"] for n in nodes) == len(gold)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in sorted(gold)[:10]))
    out = tmp_path / "out.jsonl"
    done = run_cli("classify", str(src), "-o", str(out), "--db", db, "--embedder", "hash")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    names = {n["name"] for n in nodes}
    assert all(len(r["path"]) == 1 and r["path"][0] in names for r in rows)


def test_the_service_fits_and_serves_the_hierarchy(tmp_path):
    from canonlabel.server import create_app
    from tests.conftest import with_app

    clf, gold = _store(tmp_path)
    app = create_app(clf.settings, classifier=clf)

    async def go(c):
        assert (await c.get("/v1/hierarchy")).json() == {"parents": []}
        fitted = await c.post("/v1/labels/hierarchy", json={"top": 2})
        assert fitted.status_code == 200, fitted.text
        parents = (await c.get("/v1/hierarchy")).json()["parents"]
        assert len(parents) == 2 and sum(p["count"] for p in parents) == len(gold)
        assert (await c.post("/v1/labels/hierarchy", json={"top": 0})).status_code == 422
        a, b = (p["id"] for p in parents)
        url = f"/v1/labels/hierarchy/parents/{a}/rename"
        assert (await c.post(url, json={"name": "card_things"})).status_code == 200
        merged = await c.post("/v1/labels/hierarchy/parents/merge", json={"from": b, "into": a})
        assert merged.status_code == 200, merged.text
        assert [p["name"] for p in (await c.get("/v1/hierarchy")).json()["parents"]] == [
            "card_things"
        ]
        assert (await c.post("/v1/labels/hierarchy/undo")).status_code == 200
        assert len((await c.get("/v1/hierarchy")).json()["parents"]) == 2
        bad = await c.post("/v1/labels/hierarchy/parents/merge", json={"from": a, "into": a})
        assert 400 <= bad.status_code < 500

    with_app(app, go)


def test_parents_are_renamed_moved_and_merged_and_each_edit_undone_exactly(tmp_path):
    from canonlabel import parents
    from canonlabel.errors import CurationError

    clf, gold = _store(tmp_path)
    tree = clf.hierarchy(top=2)
    a, b = tree.top()
    stored = clf.store.hierarchy.rows()

    parents.rename(clf, a.id, "Card Things")
    assert clf.hierarchy(refit=False).parents[a.id].name == "card_things"
    with pytest.raises(CurationError):
        parents.rename(clf, b.id, "card_things")  # names stay unique: merge instead

    label = sorted(lab for lab, pid in tree.label_parent.items() if pid == a.id)[0]
    moved = parents.move(clf, label, b.id)
    now = clf.hierarchy(refit=False)
    assert moved["to"] == b.id and now.path(label) == [b.name]
    assert now.parents[b.id].count == b.count + clf.label_counts()[label]

    parents.merge(clf, a.id, b.id)
    merged = clf.hierarchy(refit=False)
    assert list(merged.parents) == [b.id] and merged.parents[b.id].count == len(gold)
    assert {merged.path(lab)[0] for lab in tree.label_parent} == {b.name}

    for _ in range(3):
        parents.undo(clf)
    assert clf.store.hierarchy.rows() == stored  # back exactly as fitted
    with pytest.raises(CurationError):
        parents.undo(clf)
    with pytest.raises(CurationError):
        parents.merge(clf, a.id, a.id)


def test_a_consolidation_refits_a_tree_whose_labels_drifted(tmp_path):
    clf, gold = _store(tmp_path)
    tree = clf.hierarchy(top=2)
    assert "hierarchy" not in clf.consolidate()  # nothing new: the tree stands
    assert "hierarchy" not in clf.consolidate(adjudication_budget=0)
    new = [f"pizza number {i} arrived cold and the pizza box was wet" for i in range(40)]
    clf.classify_many(new)
    assert hierarchy.drift(clf, hierarchy.load(clf.store)) >= hierarchy.DRIFT
    calls = clf.counters["llm_calls"]
    report = clf.consolidate()
    assert report["hierarchy"]["drift"] >= hierarchy.DRIFT and report["hierarchy"]["calls"] > 0
    assert clf.counters["llm_calls"] >= calls + report["hierarchy"]["calls"]
    refitted = hierarchy.load(clf.store)
    assert hierarchy.drift(clf, refitted) == 0.0 and len(refitted.top()) == len(tree.top())
