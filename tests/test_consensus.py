"""Consensus labels: a wrong LLM answer that the evidence contradicts does not decide."""

from __future__ import annotations

import numpy as np
import pytest

from canonlabel import Settings
from canonlabel.labelspace import consensus, undo
from canonlabel.store import Correction, Recheck
from canonlabel.testing import SimulatedLLM
from canonlabel.types import LabelRequest
from tests.test_consolidate import _OPENED, INTENTS, build, corpus, final_labels


@pytest.fixture(autouse=True)
def _close_classifiers():
    yield
    while _OPENED:
        _OPENED.pop().close()


def _blobs(n_per: int = 20, seed: int = 0):
    """Three tight clusters of unit vectors, answer label = cluster, except item 0."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16)
    X = np.concatenate([c + 0.05 * rng.standard_normal((n_per, 16)) for c in centres])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    answers = np.repeat([101, 102, 103], n_per)
    return np.arange(1, 3 * n_per + 1), X.astype(np.float32), answers


def test_a_wrong_answer_inside_another_cluster_is_contested():
    ids, X, answers = _blobs()
    answers = answers.copy()
    answers[0] = 103  # the LLM said 103 about a text deep inside cluster 101
    found, share = consensus.contests(ids, X, answers)
    assert [(c.item_id, c.answer_label, c.label_id) for c in found] == [(1, 103, 101)]
    assert share == pytest.approx(1 / len(ids))
    assert not found[0].sure  # 103 is a label of its own: the LLM is asked again
    answers[0] = 999  # a label of this answer alone: a stray
    found, _ = consensus.contests(ids, X, answers)
    assert [(c.label_id, c.sure) for c in found] == [(101, False)]
    # moved without asking only for an LLM whose second answers showed it often wrong
    found, _ = consensus.contests(ids, X, answers, stray_moves=True)
    assert [(c.label_id, c.sure) for c in found] == [(101, True)]


def test_right_answers_are_not_contested_and_no_answer_votes_for_itself():
    ids, X, answers = _blobs()
    assert consensus.contests(ids, X, answers)[0] == []
    ev = consensus.gather(ids, X, answers)
    # leave-one-out: a label held by one item gives that item no probability of its own
    lonely = answers.copy()
    lonely[5] = 999
    ev = consensus.gather(ids, X, lonely)
    col = list(ev.labels).index(999)
    assert ev.p[5, col] == 0.0
    assert np.allclose(ev.p.sum(axis=1), 1.0, atol=1e-5)


def test_plan_moves_sure_and_rechecked_items_and_restores_the_rest():
    sure = consensus.Contest(1, 10, 20, 0.9, True)
    asked = consensus.Contest(2, 10, 20, 0.6, False)
    unconfirmed = consensus.Contest(3, 10, 20, 0.6, False)
    current = {
        4: Correction(4, 10, 20, 0.9),  # no longer contested: goes back to its answer
        5: Correction(5, 10, 20, 0.9, kept=True),  # a person kept its answer
    }
    rechecks = {2: Recheck(2, 20, True), 3: Recheck(3, 20, False)}
    moved, restored = consensus.plan([sure, asked, unconfirmed], current, rechecks)
    assert [m.item_id for m in moved] == [1, 2]
    assert [(r.item_id, r.answer_label) for r in restored] == [(4, 10)]
    assert consensus.to_recheck([sure, asked, unconfirmed], {}) == [asked, unconfirmed]
    assert consensus.to_recheck([asked], rechecks) == []


def _noisy(gold, rate=0.25):
    """A simulated LLM whose open answers are wrong ``rate`` of the time."""
    return SimulatedLLM(gold, inconsistency=0.0, error_rate=rate, seed=1)


def test_consensus_moves_wrong_answers_to_their_cluster_and_keeps_the_raw_answer(tmp_path):
    gold = corpus(n_per_intent=20)
    llm = _noisy(gold)
    wrong = {t for t in gold if llm.intent(t) != gold[t]}
    assert len(wrong) > 5
    plain = build(tmp_path, "plain", sorted(gold), gold, labeler=_noisy(gold), consensus=False)
    clf = build(tmp_path, "c", sorted(gold), gold, labeler=llm)
    plain.consolidate()
    report = clf.consolidate()
    assert report["consensus"]["moved"] > 0

    def errors(c):
        labels = final_labels(c)
        main = {i: max({labels[t] for t in gold if gold[t] == i},
                       key=lambda n: sum(labels[t] == n for t in gold)) for i in INTENTS}  # fmt: skip
        return sum(labels[t] != main[gold[t]] for t in gold)

    assert errors(clf) < errors(plain)
    moved = clf.store.corrections.all()
    assert moved and all(not c.kept for c in moved.values())
    raw = clf.store.items.raw_labels(list(moved))
    assert all(raw[i] is not None for i in moved)  # what the LLM said is kept
    assert sum(lab.moved for lab in clf.labels()) == len(moved)
    assert clf.stats()["llm_error_estimate"] > 0


def test_a_second_consolidation_with_no_new_text_changes_nothing(tmp_path):
    gold = corpus(n_per_intent=20)
    clf = build(tmp_path, "i", sorted(gold), gold, labeler=_noisy(gold))
    clf.consolidate()
    labels = {(lab.id, lab.name, lab.count) for lab in clf.labels()}
    items = final_labels(clf)
    calls = clf.counters["llm_calls"]
    report = clf.consolidate()
    assert report["consensus"]["moved"] == report["consensus"]["restored"] == 0
    assert {(lab.id, lab.name, lab.count) for lab in clf.labels()} == labels
    assert final_labels(clf) == items
    assert clf.counters["llm_calls"] == calls  # nothing asked twice


def test_undo_gives_back_the_llm_answer_and_keeps_it(tmp_path):
    gold = corpus(n_per_intent=20)
    clf = build(tmp_path, "u", sorted(gold), gold, labeler=_noisy(gold))
    before = final_labels(clf)
    report = clf.consolidate()
    assert report["consensus"]["moved"] > 0
    result = undo(clf.space)
    assert result["kind"] == "undo" and result["kept"] == report["consensus"]["moved"]
    kept = clf.store.corrections.all()
    assert kept and all(c.kept for c in kept.values())
    clf.consolidate()  # the next consolidation leaves a kept answer alone
    assert all(c.kept for c in clf.store.corrections.all().values())
    assert {i for i in kept} == {i for i, c in clf.store.corrections.all().items() if c.kept}
    assert before  # (the items were labelled)


def test_simulated_errors_vary_with_the_question_and_can_be_confusable():
    gold = corpus(n_per_intent=30)
    near = {i: ["exchange_rate"] for i in INTENTS}
    near["exchange_rate"] = ["card_arrival"]
    llm = SimulatedLLM(gold, error_rate=0.3, confusions=near, seed=2)
    texts = list(gold)
    wrong = [t for t in texts if llm.intent(t) != gold[t]]
    assert wrong and {llm.intent(t) for t in wrong} <= {"exchange_rate", "card_arrival"}
    # the open question errs the same way every time; a closed one errs independently
    assert [llm.intent(t) for t in texts] == [llm.intent(t) for t in texts]
    closed = [llm.intent(t, "closed:a|b") for t in texts]
    assert closed != [llm.intent(t) for t in texts]
    # a misreading (``persistence``) is repeated by every question about the text
    sticky = SimulatedLLM(gold, error_rate=0.3, confusions=near, seed=2, persistence=1.0)
    assert [sticky.intent(t, "closed:a|b") for t in wrong] == [llm.intent(t) for t in wrong]
    # a recheck is a closed choice between two names
    t = texts[0]
    out = llm.label(LabelRequest(t, (gold[t], "something_else"), closed=True)).output
    assert out in (gold[t], "something_else")


def test_consensus_can_be_turned_off_to_measure_it(tmp_path):
    gold = corpus()
    clf = build(tmp_path, "off", sorted(gold), gold, labeler=_noisy(gold), consensus=False)
    assert "consensus" not in clf.consolidate()
    assert Settings().consensus is True


def test_an_answer_in_doubt_needs_a_second_and_a_third_breaks_a_tie():
    from canonlabel.labelspace.adjudicate import VARIANTS, variant_key, verdict

    key = "a|b"
    assert verdict({}, key) == (None, 0)
    assert verdict({key: False}, key, second=False) == (False, VARIANTS)  # decides alone
    assert verdict({key: True}, key, second=False) == (True, VARIANTS)
    assert verdict({key: False}, key) == (None, 1)  # in doubt: asked again
    assert verdict({key: True}, key) == (None, 1)
    assert verdict({key: True, variant_key(key, 1): True}, key) == (True, VARIANTS)
    assert verdict({key: False, variant_key(key, 1): True, variant_key(key, 2): True}, key)[0]
    tie = {key: True, variant_key(key, 1): False}
    assert verdict(tie, key) == (None, 2)
    assert verdict(tie | {variant_key(key, 2): True}, key)[0] is True
    assert verdict(tie | {variant_key(key, 2): False}, key)[0] is False


def test_an_answer_the_similarity_contradicts_is_asked_again_one_it_agrees_with_decides():
    """For an LLM found often wrong, the evidence decides which answers need a second: a
    "same" between dissimilar groups, a "different" between groups as similar as most
    pairs judged the same. The need is stored with the first answer."""
    import numpy as np

    from canonlabel.labelspace.adjudicate import Adjudication, _Links, confirm_key

    adj = Adjudication.__new__(Adjudication)
    unit = np.eye(3, dtype=np.float32)
    adj._names = adj.content = np.stack([unit[0], unit[0] * 0.8 + unit[1] * 0.6, unit[2]])
    adj.name_weight, adj.lean, adj.confirm = 0.6, 0.7, True
    adj.group_of = {"refund": 0, "reimbursement": 1, "card_lost": 2}
    adj.links = _Links([False] * 3, [5, 5, 5])
    adj.pair_of = {"refund|reimbursement": (0, 1), "card_lost|refund": (2, 0)}
    adj.contested, adj._texts = set(), {}
    near, far = "refund|reimbursement", "card_lost|refund"  # similarity 0.8 and 0
    assert adj._needs_second(near, False) and not adj._needs_second(near, True)
    assert adj._needs_second(far, True) and not adj._needs_second(far, False)
    adj.stored = {near: False}
    assert adj._verdict(near) == (False, 3)  # stored without the mark: it decided
    adj.stored[confirm_key(near)] = True
    assert adj._verdict(near) == (None, 1)  # marked when it came: asked again
    adj.confirm = False  # an LLM rarely wrong: its first answer decides
    assert not adj._needs_second(near, False) and not adj._needs_second(far, True)


def test_a_tie_is_never_broken_by_a_question_that_repeats_the_first():
    """With too few texts for new examples, a third question would be the first one
    again (and get its answer again): two answers that disagree leave the pair apart."""
    from canonlabel.labelspace.adjudicate import VARIANTS, Adjudication, variant_key, verdict

    key = "a|b"
    tie = {key: True, variant_key(key, 1): False}
    assert verdict(tie, key, variants=2) == (None, VARIANTS)  # undecided: not joined
    assert verdict({key: True}, key, variants=2) == (None, 1)  # the reverse order is new
    adj = Adjudication.__new__(Adjudication)  # only its texts per raw label matter here
    adj._texts = {"a": 1, "b": 4}  # two questions show texts 1-2 and 3-4 of b
    assert adj._variants(key) == 2
    adj._texts["b"] = 5  # a fifth text: the third question shows something new
    assert adj._variants(key) == VARIANTS


def test_a_same_between_two_big_groups_is_confirmed_whatever_the_estimated_error():
    """The consensus estimates the LLM's error only where embeddings contest its answers
    (GoEmotions at 10% wrong: 2.5%, so one "same" decided alone), and one wrong "same"
    between two big groups mislabels all of one. Such a pair is marked when first
    answered, and its "same" then waits for a second answer; the mark is stored, so a
    later grouping decides the pair the same way."""
    from canonlabel.labelspace.adjudicate import (
        CONFIRM_ITEMS,
        VARIANTS,
        Adjudication,
        _Links,
        confirm_key,
        variant_key,
    )

    adj = Adjudication.__new__(Adjudication)  # only groups, weights and answers matter
    adj.group_of = {"love": 0, "disapproval": 1, "love_query": 2}
    adj.links = _Links([False] * 3, [CONFIRM_ITEMS + 100, CONFIRM_ITEMS, 3])
    adj.confirm, adj.contested, adj._texts = False, set(), {"love": 9, "disapproval": 9}
    big, small = "disapproval|love", "love|love_query"
    assert adj._weighty(big) and not adj._weighty(small)
    assert adj._needs_second(big, True) and not adj._needs_second(small, True)
    adj.stored = {small: True}
    assert adj._verdict(small) == (True, VARIANTS)  # a small group's "same" decides alone
    adj.stored = {big: True, confirm_key(big): True}
    assert adj._verdict(big) == (None, 1)  # asked again, the other way round
    adj.stored[variant_key(big, 1)] = False
    assert adj._verdict(big) == (None, 2)  # two that disagree: a third decides
    adj.stored[variant_key(big, 2)] = False
    assert adj._verdict(big) == (False, VARIANTS)


def test_an_early_same_is_outvoted_by_later_answers_about_the_same_two_groups():
    """A "same" given while a group was small stands only while the answers about the
    two groups' raw labels, all taken together, do not say "different" more often."""
    from canonlabel.labelspace.adjudicate import Adjudication, _Links, variant_key

    def judged(stored: dict[str, bool]) -> Adjudication:
        adj = Adjudication.__new__(Adjudication)  # only groups and answers matter here
        adj.group_of = {"activation_my_card": 0, "activate_my_card": 0}
        adj.group_of |= {"get_physical": 1, "get_physical_card": 1}
        adj.top = ["activate_my_card", "get_physical_card"]
        adj.links = _Links([False] * 2, [50, 40])
        adj.confirm, adj.contested, adj._texts, adj._votes_of = False, set(), {}, {}
        adj.stored = stored
        for asked, same in stored.items():
            adj._vote(asked, same)
        adj._stored_same("activation_my_card|get_physical")
        return adj

    early = {"activation_my_card|get_physical": True}
    assert judged(early).links.joined(0, 1)  # nothing says otherwise: it joins
    later = "activate_my_card|get_physical_card"
    adj = judged(early | {later: False, variant_key(later, 1): False})
    assert not adj.links.joined(0, 1) and adj._outvoted(1, 0)
    adj = judged(early | {later: True, variant_key(later, 1): False})
    assert adj.links.joined(0, 1) and not adj._outvoted(0, 1)  # a tie does not outvote


def test_a_same_is_outvoted_by_the_answers_about_the_groups_already_joined_to_its_sides():
    """An intent split over several groups is judged "different" from its neighbour
    group by group; one "same" about another of its groups must not join the two."""
    from canonlabel.labelspace.adjudicate import Adjudication, _Links

    adj = Adjudication.__new__(Adjudication)
    adj.group_of = {"order_physical_card": 0, "physical_order": 1, "get_physical_card": 2}
    adj.top = list(adj.group_of)
    adj.links = _Links([False] * 3, [40, 10, 40])
    adj.confirm, adj.contested, adj._texts, adj._votes_of = False, set(), {}, {}
    adj.stored = {"order_physical_card|physical_order": True}
    adj.stored |= {"get_physical_card|order_physical_card": False}
    adj.stored |= {"get_physical_card|order_physical_card#2": False}
    adj.stored |= {"get_physical_card|physical_order": True}
    for asked, same in adj.stored.items():
        adj._vote(asked, same)
    assert not adj._outvoted(1, 2)  # the two groups alone: one "same", nothing against
    adj._stored_same("order_physical_card|physical_order")
    assert adj.links.joined(0, 1)
    assert adj._outvoted(1, 2)  # with group 0 joined to 1: two "different" against one
    adj._stored_same("get_physical_card|physical_order")
    assert not adj.links.joined(1, 2)


def test_the_control_shows_the_top_raw_label_s_own_texts():
    """A group's texts mix in its other raw labels' (and wrong answers'): halves of them
    can be about different things, and a control that fails in every call spends the
    budget and joins nothing. The control shows the top raw label's texts, as pairs do."""
    from types import SimpleNamespace

    import numpy as np

    from canonlabel.labelspace.adjudicate import Adjudication

    asked = []

    def typical_texts(raws, centroid, n):
        asked.append(list(raws))
        return [f"{raws[0]} text {k}" for k in range(n)]

    adj = Adjudication.__new__(Adjudication)
    adj.rows = [np.array([0, 1, 2]), np.array([3])]
    adj.raws = [["admiration", "gratitude_inquiry", "thanks"], ["love"]]
    adj.top, adj._examples = ["admiration", "love"], {}
    adj._top_centroids = np.ones((2, 4), dtype=np.float32)
    adj.store = SimpleNamespace(members=SimpleNamespace(typical_texts=typical_texts))
    (same, expected), (other, _) = adj.controls()[0]
    assert expected and asked[0] == ["admiration"]  # never the group's other raw labels
    assert same[0][1] == ["admiration text 0", "admiration text 1"]
    assert same[1][1] == ["admiration text 2", "admiration text 3"]
    assert other[0] == same[0]  # against placeholder text: the same label and texts


def test_the_erring_judge_depends_on_the_question_not_only_the_texts():
    gold = corpus(n_per_intent=30)
    llm = SimulatedLLM(gold, error_rate=0.0, judge_error_rate=0.5, seed=4)
    texts = [t for t in gold if gold[t] == "card_arrival"]
    a, b = f"x\n- {texts[0]}\n- {texts[1]}", f"y\n- {texts[2]}\n- {texts[3]}"
    answers = {llm._judged(a, b), llm._judged(b, a), llm._judged(a, f"y\n- {texts[4]}")}
    assert answers == {True, False}  # the same two kinds of text, judged both ways


@pytest.mark.slow
def test_a_rerun_of_a_finished_job_on_the_bundled_stack_changes_no_row(tmp_path):
    """The bundled stack (Gemma 3 270M, MiniLM, grouping by items): a second run over the
    same file resumes every item, asks nothing, and changes no label and no name."""
    import json
    from pathlib import Path

    from tests.conftest import run_cli

    sample = Path(__file__).resolve().parents[1] / "examples" / "banking77_sample.jsonl"
    src = tmp_path / "in.jsonl"
    src.write_text("".join(sample.read_text(encoding="utf-8").splitlines(True)[:80]))
    db = str(tmp_path / "b.db")
    runs = []
    for n in range(2):
        out = tmp_path / f"out{n}.jsonl"
        done = run_cli("classify", str(src), "-o", str(out), "--db", db, timeout=900)
        assert done.returncode == 0, done.stderr
        runs.append([json.loads(x) for x in out.read_text().splitlines()])
    first, second = runs
    assert len(first) == len(second) == 80
    assert [(r["label_id"], r["label"]) for r in first] == [
        (r["label_id"], r["label"]) for r in second
    ]


def test_a_disputed_answer_is_contested_only_where_the_evidence_leans_away_from_it():
    ids, X, answers = _blobs()
    X = X.copy()
    between = 0.45 * np.eye(3, 16)[0] + 0.55 * np.eye(3, 16)[1]
    X[0] = between / np.linalg.norm(between)  # item 1, answered 101, leans to 102
    assert consensus.contests(ids, X, answers)[0] == []  # not enough for a label issue
    found, _ = consensus.contests(ids, X, answers, disputed={1: 102, 2: 103, 3: 101})
    # item 2 sits deep in 101: its dispute is the disputer's mistake; item 3 agrees
    assert [(c.item_id, c.answer_label, c.label_id, c.sure) for c in found] == [
        (1, 101, 102, False)
    ]
    # a second answer that chose the other label keeps the item moved at every pass
    rechecks = {1: Recheck(1, 102, True)}
    moved, restored = consensus.plan(found, {}, rechecks)
    assert [(m.item_id, m.label_id) for m in moved] == [(1, 102)] and restored == []


def test_second_questions_go_sixteen_a_call_and_alone_when_they_must(tmp_path):
    requests = [LabelRequest(f"text {i}", (f"a{i}_x", f"b{i}_y"), closed=True) for i in range(20)]
    prompt = consensus.recheck_prompt(requests[:16])
    assert [t for t, _ in consensus.split_recheck_prompt(prompt)] == [
        f"text {i}" for i in range(16)
    ]
    assert consensus.recheck_grammar(requests[:2]).startswith('root ::= "1: " c1 "\\n" "2: " c2')
    # an answer that names neither label is left out: that question is asked alone
    assert consensus.read_recheck_answers("1: b0_y\n2: neither\n", requests[:2]) == {0: "b0_y"}

    gold = corpus(n_per_intent=20)
    clf = build(tmp_path, "r", sorted(gold), gold, labeler=_noisy(gold))
    clf.consolidate()
    asked = len(clf.store.corrections.rechecks())
    assert asked > 16 and clf.counters["recheck_calls"] <= asked // 4  # batches of up to 16

    class Closed(SimulatedLLM):  # no free completions: one question a call, as before
        def complete(self, prompt, **kw):
            raise NotImplementedError

    other = build(tmp_path, "s", sorted(gold), gold, labeler=Closed(gold, inconsistency=0.3,
                  error_rate=0.2))  # fmt: skip
    other.consolidate()
    assert other.counters["recheck_calls"] >= len(other.store.corrections.rechecks()) > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_second_consolidation_of_a_finished_job_changes_nothing(tmp_path, seed):
    """Consolidation judges a raw label by its answers whether or not the consensus moved
    them, and leaves alone a raw label whose label the consensus emptied and merged away:
    the pass after the one that finished a job (no new text, nothing asked) moves no raw
    label and no item, and renames and creates nothing."""
    gold = corpus(n_per_intent=25, seed=seed)
    llm = SimulatedLLM(gold, inconsistency=0.7, error_rate=0.25, seed=seed)
    clf = build(tmp_path, "twice", sorted(gold), gold, labeler=llm)
    clf.consolidate()
    clf.consolidate(adjudication_budget=0)  # the LLM's error estimate settles
    before = final_labels(clf)
    again = clf.consolidate(adjudication_budget=0)
    changes = ("moved_raw_labels", "merged_labels", "renamed_labels", "new_labels")
    assert {k: again[k] for k in changes} == dict.fromkeys(changes, 0)
    assert (again["consensus"]["moved"], again["consensus"]["restored"]) == (0, 0)
    assert again["consensus"]["emptied_merged"] == 0
    assert final_labels(clf) == before


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_consolidation_asks_what_its_own_answers_make_due(tmp_path, seed):
    """A consolidation goes on while its answers leave questions due (a join meets new
    borderline neighbours; a "same" the evidence contradicts needs a second answer): the
    next consolidation, with no new text and the same budget, changes no label."""
    gold = corpus(n_per_intent=25, seed=seed)
    llm = SimulatedLLM(gold, inconsistency=0.7, error_rate=0.25, seed=seed)
    clf = build(tmp_path, "due", sorted(gold), gold, labeler=llm)
    first = clf.consolidate()
    before = final_labels(clf)
    again = clf.consolidate()
    changes = ("moved_raw_labels", "merged_labels", "renamed_labels", "new_labels")
    assert {k: again[k] for k in changes} == dict.fromkeys(changes, 0), (first, again)
    assert final_labels(clf) == before


def test_one_undo_reverts_every_pass_of_a_consolidation(tmp_path):
    """A consolidation that took several passes is one change: one undo restores the
    labels it found."""
    gold = corpus(n_per_intent=25, seed=0)
    llm = SimulatedLLM(gold, inconsistency=0.7, error_rate=0.25, seed=0)
    clf = build(tmp_path, "undo", sorted(gold), gold, labeler=llm)
    before = final_labels(clf)
    report = clf.consolidate()
    assert report["passes"] > 1 and final_labels(clf) != before
    undone = clf.undo()
    assert undone["consolidation"] and len(undone["entries"]) > 1
    assert final_labels(clf) == before
