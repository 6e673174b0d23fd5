"""Consolidation: order-invariant regrouping of raw labels, stable ids, undo, hand curation
respected; and the simulated inconsistent LLM it is measured with."""

from __future__ import annotations

import json
import random
import threading
import time
from types import SimpleNamespace

import pytest

from canonlabel import Classifier, Settings
from canonlabel.errors import BackendError, CurationError
from canonlabel.labelspace import adjudicate
from canonlabel.service import Service
from canonlabel.testing import FakeLabeler, HashEmbedder, SimulatedLLM
from canonlabel.types import LabelRequest, LabelResponse, Usage
from tests.conftest import run_cli

INTENTS = {
    "card_arrival": "card arrive arrived delivery post mail waiting",
    "exchange_rate": "exchange rate euro dollar currency convert",
    "lost_or_stolen_card": "lost stolen card missing theft wallet",
    "top_up_failed": "top up failed topup reload declined app",
}
FILLER = [
    "please",
    "help",
    "today",
    "now",
    "again",
    "still",
    "really",
    "quite",
    "just",
    "so",
    "very",
    "urgent",
]


def corpus(n_per_intent: int = 12, seed: int = 0) -> dict[str, str]:
    """Synthetic texts with a gold intent each: intent words plus filler."""
    rng = random.Random(seed)
    out = {}
    for intent, words in INTENTS.items():
        vocab = words.split()
        for i in range(n_per_intent):
            picked = rng.sample(vocab, 4) + rng.sample(FILLER, 2) + [f"ref{intent[:3]}{i}"]
            out[" ".join(picked)] = intent
    return out


_OPENED: list[Classifier] = []


@pytest.fixture(autouse=True)
def _close_classifiers():
    yield
    while _OPENED:
        _OPENED.pop().close()


def build(tmp_path, name: str, order: list[str], gold, labeler=None, **overrides) -> Classifier:
    settings = Settings(db=tmp_path / f"{name}.db").model_copy(
        update={"min_similarity": 0.99, "candidates": 0, "consolidate_every": 0} | overrides
    )
    llm = labeler or SimulatedLLM(gold, inconsistency=0.7)
    clf = Classifier.open(settings=settings, embedder=HashEmbedder(), labeler=llm)
    _OPENED.append(clf)
    for text in order:
        clf.classify(text, id=text)
    return clf


def final_labels(clf: Classifier) -> dict[str, str]:
    rows = clf.store.conn.execute("SELECT ext_id, label_id FROM items")
    return {ext: clf.space.name(label_id) for ext, label_id in rows}


def test_simulated_llm_is_deterministic_and_inconsistent():
    gold = corpus()
    llm = SimulatedLLM(gold, inconsistency=0.7)
    texts = list(gold)
    first = [llm.label(LabelRequest(t)).output for t in texts]
    assert first == [llm.label(LabelRequest(t)).output for t in texts]
    per_intent = {i: {o for t, o in zip(texts, first) if gold[t] == i} for i in INTENTS}
    assert all(len(names) > 1 for names in per_intent.values())  # inconsistent naming
    wrong = SimulatedLLM(gold, error_rate=0.5, seed=3)
    share = sum(wrong.intent(t) != gold[t] for t in texts) / len(texts)
    assert 0.3 < share < 0.7


def test_simulated_llm_reuses_fitting_candidates_and_answers_closed_questions():
    text = next(t for t, i in corpus().items() if i == "card_arrival")
    llm = SimulatedLLM({text: "card_arrival"}, reuse=1.0)
    assert llm.label(LabelRequest(text, ("exchange_rate", "card_delivery"))).output == (
        "card_delivery"  # delivery is a synonym of arrival: the words fit
    )
    closed = LabelRequest(text, ("exchange_rate", "arrival_of_card"), closed=True)
    assert llm.label(closed).output == "arrival_of_card"


def test_final_labels_do_not_depend_on_arrival_order(tmp_path):
    gold = corpus()
    texts = sorted(gold)
    shuffled = texts[:]
    random.Random(7).shuffle(shuffled)
    strict = {"consolidate_threshold": 0.4}  # the hash embedder's similarities run low
    a = build(tmp_path, "a", texts, gold, **strict)
    b = build(tmp_path, "b", shuffled, gold, **strict)
    before_a, before_b = final_labels(a), final_labels(b)
    a.consolidate()
    b.consolidate()
    after_a, after_b = final_labels(a), final_labels(b)
    assert after_a == after_b  # the same partition and the same names
    assert len(set(after_a.values())) < len(set(before_a.values()))  # variants collapsed
    # every consolidated label is pure: one gold intent
    for name in set(after_a.values()):
        assert len({gold[t] for t, n in after_a.items() if n == name}) == 1
    assert before_a != before_b or len(set(before_a.values())) > len(INTENTS)


def test_consolidation_keeps_ids_and_undo_restores_exactly(tmp_path):
    gold = corpus()
    clf = build(tmp_path, "u", sorted(gold), gold, consolidate_threshold=0.4)
    labels_before = {(lab.id, lab.name, lab.count) for lab in clf.labels()}
    items_before = final_labels(clf)
    aliases_before = dict(clf.space.aliases)
    report = clf.consolidate()
    assert report["moved_raw_labels"] + report["merged_labels"] > 0
    largest = max(labels_before, key=lambda x: (x[2], -x[0]))[0]
    assert clf.space.resolve(largest) == largest  # matched by overlap: its id stays
    assert all(clf.space.resolve(i) in clf.space.names for i, _, _ in labels_before)
    assert clf.classify("card arrive mail waiting please", id="new").label in {
        lab.name for lab in clf.labels()
    }
    clf.undo()
    items = final_labels(clf)
    assert {k: items[k] for k in items_before} == items_before
    new_item = 1  # the text classified after the consolidation
    restored = {(lab.id, lab.name) for lab in clf.labels()}
    assert {(i, n) for i, n, c in labels_before} <= restored
    assert sum(lab.count for lab in clf.labels()) == len(items_before) + new_item
    assert {
        r: clf.space.resolve(i) for r, i in clf.space.aliases.items() if r in aliases_before
    } == {r: clf.space.resolve(i) for r, i in aliases_before.items()}


def test_consolidation_respects_hand_curation(tmp_path):
    gold = corpus()
    clf = build(tmp_path, "h", sorted(gold), gold, consolidate_threshold=0.4)
    clf.consolidate()
    # a second pass has nothing left to do: consolidation is idempotent
    again = clf.consolidate(dry_run=True)
    assert again["moved_raw_labels"] == again["merged_labels"] == again["renamed_labels"] == 0
    target = next(lab for lab in clf.labels() if "arriv" in lab.name or "deliver" in lab.name)
    clf.rename(target.id, "where_is_my_card")
    for _ in range(2):
        clf.consolidate()
        assert clf.space.name(target.id) == "where_is_my_card"
        assert clf.space.resolve(target.id) == target.id


def test_periodic_consolidation_runs_in_the_stream(tmp_path):
    gold = corpus(20)
    clf = build(tmp_path, "p", sorted(gold), gold, consolidate_every=5, consolidate_growth=0.0)
    assert clf.counters["consolidations"] >= 2
    pure = final_labels(clf)
    assert len(set(pure.values())) <= len(set(clf.space.aliases))


def test_adjudication_is_budgeted_counted_and_cached(tmp_path):
    gold = corpus()
    clf = build(tmp_path, "j", sorted(gold), gold, consolidate_threshold=0.95)
    calls = clf.labeler.calls
    first = clf.consolidate(adjudication_budget=0)  # a strict threshold: many borderline
    report = clf.consolidate(adjudication_budget=3)
    assert 0 < report["adjudication_calls"] <= 3
    rechecks = report["consensus"]["rechecked"]  # the consensus's second questions
    assert clf.labeler.calls == calls + report["adjudication_calls"] + rechecks
    assert first["adjudication_calls"] == 0
    stored = clf.store.count("SELECT count(*) FROM adjudications")
    # several pairs share one call, and every answered pair is kept
    per_call = clf.settings.adjudication_batch
    assert report["adjudication_calls"] < stored <= per_call * report["adjudication_calls"]
    again = clf.consolidate(adjudication_budget=3)  # stored pairs are never asked again
    added = clf.store.count("SELECT count(*) FROM adjudications") - stored
    assert again["adjudication_calls"] <= 3
    assert added >= again["adjudication_calls"]


def test_batched_answers_are_parsed_leniently_and_hostile_lines_ignored():
    assert adjudicate.parse("1: same\n2: different\n", 2) == {0: True, 1: False}
    assert adjudicate.parse("**1.** Same\n2) different\n9: same\n1: different", 2) == {
        0: True,
        1: False,
    }
    assert adjudicate.parse("I think they are the same", 3) == {}
    grammar = adjudicate.batch_grammar(3)
    assert grammar.count('answer "\\n"') == 3 and 'answer ::= "same" | "different"' in grammar


class Scripted(SimulatedLLM):
    """The simulated LLM, with the raw label of some texts fixed in advance."""

    def __init__(self, gold, names: dict[str, str]):
        super().__init__(gold)
        self.names = names

    def _answer(self, request):
        if request.text in self.names:
            self.calls += 1
            return LabelResponse(self.names[request.text], Usage(1, 1))
        return super()._answer(request)


@pytest.mark.parametrize("other", ["lost_or_stolen_card", "card_arrival"])
def test_same_is_not_transitive_through_one_generic_raw_label(tmp_path, other):
    """`waiting_generic` was said to be like both sides; the sides join only if their own
    most used raw labels are judged the same too (asked, then kept)."""
    gold = corpus()
    side_a = [t for t, i in gold.items() if i == "card_arrival"][:6]
    side_b = [t for t, i in gold.items() if i == other and t not in side_a][-6:]
    names = {t: "card_delivery_question" for t in side_a[1:]}
    names |= {t: "unrelated_side_matter" for t in side_b[1:]}
    names |= {side_a[0]: "waiting_generic", side_b[0]: "waiting_generic"}
    llm = Scripted(gold, names)
    clf = build(
        tmp_path, f"t{other}", side_a + side_b, gold, labeler=llm, consolidate_threshold=0.99
    )
    with clf.store.write() as c:
        for pair in (
            "card_delivery_question|waiting_generic",
            "unrelated_side_matter|waiting_generic",
        ):  # two agreeing answers (two questions) decide a pair
            c.execute("INSERT INTO adjudications VALUES (?, 1, 0)", (pair,))
            c.execute("INSERT INTO adjudications VALUES (?, 1, 0)", (pair + "#2",))
    clf.consolidate(adjudication_budget=3)
    labels = final_labels(clf)
    heads = clf.store.adjudications.get()["card_delivery_question|unrelated_side_matter"]
    assert heads == (other == "card_arrival")  # the heads' pair was asked
    joined = labels[side_a[1]] == labels[side_b[1]]
    assert joined == heads
    assert labels[side_a[0]] == labels[side_a[1]]  # the generic one joins the first side


def test_adjudication_without_free_completion_asks_one_closed_question_per_pair(tmp_path):
    class ClosedOnly(SimulatedLLM):
        def complete(self, prompt, *, grammar=None, max_tokens=256):
            raise NotImplementedError

    gold = corpus()
    llm = ClosedOnly(gold, inconsistency=0.7)
    clf = build(tmp_path, "k", sorted(gold), gold, consolidate_threshold=0.95, labeler=llm)
    calls = llm.calls
    report = clf.consolidate(adjudication_budget=2)
    assert report["adjudication_calls"] == 2 == llm.calls - calls
    assert clf.store.count("SELECT count(*) FROM adjudications") <= 2


def test_a_failed_adjudication_call_is_counted_and_decides_nothing(tmp_path):
    class Down(SimulatedLLM):
        def complete(self, prompt, *, grammar=None, max_tokens=256):
            raise BackendError("endpoint down", retryable=True)

    gold = corpus()
    llm = Down(gold, inconsistency=0.7)
    clf = build(tmp_path, "d", sorted(gold), gold, consolidate_threshold=0.95, labeler=llm)
    report = clf.consolidate(adjudication_budget=2)
    assert report["adjudication_calls"] == 2
    assert clf.store.count("SELECT count(*) FROM adjudications") == 0


def test_consolidate_cli_dry_run_then_undo(tmp_path):
    gold = corpus()
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(gold))
    )
    db = str(tmp_path / "c.db")
    common = ["--db", db, "--embedder", "hash"]
    r = run_cli("classify", str(src), "--llm", "fake", "-o", str(tmp_path / "o.jsonl"), *common)
    assert r.returncode == 0, r.stderr
    r = run_cli("consolidate", "--dry-run", *common)
    assert r.returncode == 0 and json.loads(r.stdout)["dry_run"] is True
    r = run_cli("consolidate", "--dry-run", "--by", "items", "--threshold", "0.6", *common)
    assert r.returncode == 0 and json.loads(r.stdout)["by"] == "items", r.stderr
    r = run_cli("consolidate", *common)
    assert r.returncode == 0, r.stderr
    r = run_cli("undo", *common)
    assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "undo", r.stderr
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert all(row["label"] for row in out)


def test_undoing_a_consolidation_after_a_split_took_a_freed_name(tmp_path):
    """Found by the property test: a split after a consolidation names its new label with
    a name the consolidation had freed; undoing the consolidation gives that name back,
    and the split's label keeps its items under a free name instead of crashing."""
    s = Settings(
        db=tmp_path / "u.db", min_similarity=0.9, consolidate_every=0, consolidate_threshold=0.5
    )
    with Classifier.open(settings=s, embedder=HashEmbedder(), labeler=FakeLabeler()) as clf:
        clf.classify_many(["card refund", "card", "pin", "card declined"])
        clf.consolidate()
        for label in sorted({clf.space.resolve(i) for i in clf.space.names}):
            try:
                clf.split(label, k=2)
                break
            except CurationError:
                continue
        clf.undo()
        names = [n for (n,) in clf.store.conn.execute("SELECT name FROM labels")]
        assert len(names) == len(set(names))
        assert clf.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        items = clf.store.conn.execute("SELECT label_id FROM items").fetchall()
        assert all(clf.space.resolve(lab) in clf.space.names for (lab,) in items)


def test_the_stream_keeps_serving_while_adjudication_questions_are_out(tmp_path):
    """Periodic consolidation asks its LLM questions on a side thread: hits and new texts
    are answered meanwhile, and the answers apply once they are in."""
    gate, started = threading.Event(), threading.Event()

    class Slow(SimulatedLLM):
        def complete(self, prompt, *, grammar=None, max_tokens=256):
            started.set()
            gate.wait(20)
            return super().complete(prompt, grammar=grammar, max_tokens=max_tokens)

    gold = corpus()
    texts = sorted(gold)
    s = Settings(db=tmp_path / "s.db").model_copy(
        update={
            "min_similarity": 0.99,
            "candidates": 0,
            "consolidate_every": 5,
            "consolidate_growth": 0.0,
            "consolidate_threshold": 0.95,
            "adjudication_share": 1.0,
        }
    )
    clf = Classifier.open(settings=s, embedder=HashEmbedder(), labeler=Slow(gold))
    service = Service(clf)
    try:
        for text in texts[:30]:
            assert service.classify(text).result(timeout=20)[1] is None
        assert started.wait(20) and service.engine.adjudicating
        start = time.perf_counter()
        hit, error = service.classify(texts[0]).result(timeout=5)
        assert error is None and hit.source == "exact"
        fresh, error = service.classify(texts[40]).result(timeout=5)
        assert error is None and fresh.source == "llm"
        assert time.perf_counter() - start < 5
        gate.set()
        deadline = time.monotonic() + 20
        while service.engine.adjudicating and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not service.engine.adjudicating
        assert clf.store.count("SELECT count(*) FROM adjudications") > 0
        assert int(clf.store.meta()["adjudication_calls"]) >= 1
    finally:
        gate.set()
        service.close()


def test_an_adjudicator_that_fails_the_controls_joins_nothing(tmp_path):
    """A model that answers `same` to everything (or at random) would join whole regions;
    the known-answer pairs in each call catch it, and its answers are dropped."""

    class YesMan(SimulatedLLM):
        def complete(self, prompt, *, grammar=None, max_tokens=256):
            self.calls += 1
            n = prompt.count("\nPair ")
            return LabelResponse("".join(f"{k}: same\n" for k in range(1, n + 1)), Usage(1, 1))

    gold = corpus()
    llm = YesMan(gold, inconsistency=0.7)
    clf = build(tmp_path, "y", sorted(gold), gold, consolidate_threshold=0.95, labeler=llm)
    before = len(clf.space)
    report = clf.consolidate(adjudication_budget=3)
    assert report["adjudication_calls"] == 3
    assert clf.store.count("SELECT count(*) FROM adjudications") == 0
    assert report["labels_after"] == before or report["merged_labels"] == 0
    honest = SimulatedLLM(gold, inconsistency=0.7)
    clf.labeler = honest
    assert clf.consolidate(adjudication_budget=3)["adjudication_calls"] > 0
    assert clf.store.count("SELECT count(*) FROM adjudications") > 0


def test_controls_are_slotted_in_at_varying_positions():
    shown = [((f"a{i}", ["x"]), (f"b{i}", ["y"])) for i in range(5)]
    controls = [
        [((("same", [s]), ("same", [t])), True), ((("far", [d]), ("x", ["e"])), False)]
        for s, t, d in (("s", "t", "d"), ("u", "v", "w"))
    ]
    positions, sets = set(), set()
    for n in range(20):
        keys = [f"k{n}_{i}" for i in range(5)]
        mixed, where = adjudicate._mix(keys, shown, controls)
        assert len(mixed) == 7 and sorted(
            where["pairs"] + [p for p, _ in where["controls"]]
        ) == list(range(7))
        assert [mixed[p] for p in where["pairs"]] == shown
        assert {mixed[p][0][0] for p, _ in where["controls"]} == {"same", "far"}
        positions.add(tuple(p for p, _ in where["controls"]))
        sets.update(mixed[p][0][1][0] for p, same in where["controls"] if same)
    assert len(positions) > 3
    assert sets == {"s", "u"}  # the sets take turns


def test_a_control_the_judge_always_gets_wrong_costs_only_the_calls_that_draw_it():
    """A judge answers a question the same way each time: with one control set, a control
    it gets wrong would discard every call."""

    class Judge:
        def complete(self, prompt, *, grammar=None, max_tokens=256):
            lines = []
            for n, (a, b) in enumerate(adjudicate.split_batch(prompt), 1):
                same = a.splitlines()[0] == b.splitlines()[0]
                lines.append(f"{n}: {'same' if same and 'blind' not in a else 'different'}")
            return LabelResponse("\n".join(lines), Usage(1, 1))

    saved = {}
    store = SimpleNamespace(adjudications=SimpleNamespace(save=saved.update))
    controls = [
        [(((name, ["t"]), (name, ["u"])), True), (((name, ["t"]), ("far", ["v"])), False)]
        for name in ("blind_spot", "fine")
    ]
    pairs = [(f"p{i}", lambda i=i: ((f"x{i}", ["a"]), (f"x{i}", ["b"]))) for i in range(40)]
    calls = adjudicate.ask(store, Judge(), pairs, 20, per_call=4, controls=controls)
    assert calls == 20
    assert 0 < len(saved) < 40 and all(saved.values())


def test_simulated_llm_names_by_units_and_never_ambiguously():
    from canonlabel.testing.simulated import content_words, units

    assert units("top_up_limits") == ["top_up", "limits"]
    assert units("Refund_not_showing_up") == ["refund", "not_showing_up"]
    assert content_words("money_back_request") == content_words("refund")
    intents = ["top_up_limits", "top_up_failed", "pending_top_up", "top_up_reverted"]
    gold = {f"text {i} {j}": intent for i, intent in enumerate(intents) for j in range(60)}
    llm = SimulatedLLM(gold, inconsistency=0.9)
    contents = {i: content_words(i) for i in intents}
    for intent in intents:
        for j in range(60):
            name = llm.name(intent, f"salt{j}")
            assert "up_top" not in name and not name.startswith("up_")  # "top_up" is whole
            have = content_words(name)
            assert have and not any(have <= c for i, c in contents.items() if i != intent), name


def test_simulated_llm_reads_a_clipped_example_as_the_whole_text():
    # Adjudication shows long member texts clipped; a real model still understands them,
    # and the instrument must too, or it answers "different" for two names of one intent.
    long_a = "I transferred money to a friend abroad and they received less than I sent. " * 3
    long_b = "Someone stole my bag with my phone and wallet and all my cards in it on holiday. " * 3
    gold = {long_a: "transfer_fee_charged", "Why was I charged a fee?": "transfer_fee_charged"}
    gold |= {long_b: "lost_or_stolen_card"}
    llm = SimulatedLLM(gold)
    shown = adjudicate._clip(long_a)
    assert shown.endswith(" …") and len(shown) < len(long_a)
    assert llm.intent(shown) == "transfer_fee_charged"
    pairs = [
        (("transfer_cost", [long_a]), ("transfer_fee", ["Why was I charged a fee?"])),
        (("transfer_cost", [long_a]), ("stolen_card", [long_b])),
    ]
    out = llm.complete(adjudicate.batch_question(pairs)).output
    assert adjudicate.parse(out, 2) == {0: True, 1: False}
    assert llm.intent("I transferred money") is None  # too short to stand for one text


def test_an_llm_that_declares_its_grouping_is_grouped_its_way_and_settings_win(tmp_path):
    """A labeler may declare how its raw labels group (the bundled 270M model does: by
    their texts, without adjudication). The store records it, so a later command that
    loads no LLM groups the same way; an explicit setting still wins."""
    from canonlabel.types import Grouping

    gold = corpus()

    class Echoing(SimulatedLLM):
        grouping = Grouping(name_weight=0.0, threshold=0.3, adjudication_share=0.0)
        candidates = 0

    llm = Echoing(gold, inconsistency=0.7)
    clf = build(tmp_path, "g", sorted(gold), gold, labeler=llm)
    generic = build(tmp_path, "n", sorted(gold), gold)
    assert clf.grouping() == Echoing.grouping and generic.grouping() == Grouping()
    unset = {"candidates": None}  # build() shows none; unset, the LLM's own count applies
    clf.settings = clf.settings.model_copy(update=unset)
    generic.settings = generic.settings.model_copy(update=unset)
    assert clf.shown_candidates() == 0 and generic.shown_candidates() == 3
    calls = llm.calls
    report = clf.consolidate()
    assert report["adjudication_calls"] == 0 and llm.calls == calls  # nothing to adjudicate
    assert report["grouping"] == {
        "name_weight": 0.0,
        "threshold": 0.3,
        "adjudication_share": 0.0,
        "by": "raw_labels",
    }
    generic.consolidate()
    # members alone at a low cut: fewer labels than the generic grouping leaves
    assert len(clf.space) < len(generic.space)
    clf.close()

    class NoLLM:
        id = "none"

    reopened = Classifier.open(
        settings=Settings(db=tmp_path / "g.db"), embedder=HashEmbedder(), labeler=NoLLM()
    )
    _OPENED.append(reopened)
    assert reopened.grouping() == Echoing.grouping
    mine = Settings(db=tmp_path / "g.db", consolidate_threshold=0.9, candidates=2)
    reopened.settings = mine
    assert reopened.grouping() == Grouping(0.0, 0.9, 0.0) and reopened.shown_candidates() == 2


def test_a_cache_hit_counts_as_a_member_of_the_raw_label_it_reused(tmp_path):
    """Which of two near-duplicates is asked depends on arrival order; the raw label's
    member evidence must not, so the hit's text counts as well (and is not cached)."""
    from canonlabel.labelspace.evidence import gather

    first = "card arrive arrived delivery post mail waiting"
    second = first + " please"
    clf = build(
        tmp_path, "hits", [first, second], corpus(), FakeLabeler(), min_similarity=0.5, router=False
    )
    sources = dict(clf.store.conn.execute("SELECT ext_id, source FROM items"))
    assert sources == {first: "llm", second: "cache"}
    cached = dict(clf.store.conn.execute("SELECT ext_id, cached FROM items"))
    assert cached[second] == 0  # evidence only: store_hits decides what joins the cache
    ev = gather(clf.space)
    (row,) = [i for i, r in enumerate(ev.raw_labels) if r == clf.classify(first).raw_label]
    assert ev.members[row] == 2
    expected = clf.embedder.embed([first, second]).sum(0)
    assert abs(ev.member_sums[row] - expected).max() < 1e-5
