"""The self-training router: thresholds under an error bound, audits, training, budget."""

from __future__ import annotations

import math

import numpy as np

from canonlabel.errors import BudgetError
from canonlabel.thresholds import (
    CONFIDENCE_GRID,
    SIMILARITY_GRID,
    AuditedThresholds,
    joint_thresholds,
    laned,
    lanes,
    plain,
    region_bounds,
    threshold,
    wilson_interval,
)

TOPICS = {
    "card": "card arrived delivery post envelope",
    "rate": "exchange rate currency euro dollar",
    "pin": "pin code locked blocked reset",
    "refund": "refund money back return purchase",
}


def _texts(n_per_topic: int) -> list[str]:
    out = []
    for i in range(n_per_topic):
        for words in TOPICS.values():
            w = words.split()
            out.append(f"{w[i % 5]} {w[(i + 1) % 5]} {w[(i + 2) % 5]} ticket {i}")
    return out


def _topic_rule(text, candidates=()):
    for name, words in TOPICS.items():
        if set(text.split()) & set(words.split()):
            return f"{name}_issue"
    return "other_issue"


def test_wilson_bound_shrinks_with_evidence():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 20)[1] > 0.1 > wilson_interval(0, 200)[1]
    low, high = wilson_interval(5, 100)
    assert low < 0.05 < high and wilson_interval(50, 100)[0] > 0.35


GRID = np.array([0.5, 0.7, 0.9])


def test_threshold_is_the_lowest_edge_whose_region_keeps_the_bound():
    seen = np.array([100.0, 100.0, 100.0])
    audited = np.array([100.0, 100.0, 100.0])
    wrong = np.array([30.0, 1.0, 0.0])  # the low bin is bad, the others are near perfect
    assert threshold(seen, audited, wrong, GRID, 0.05, 20) == 0.7
    assert math.isinf(threshold(seen, audited / 10, wrong / 10, GRID, 0.05, 200))  # too few
    worse = wrong + np.array([0.0, 8.0, 0.0])  # disagreeing audits tighten it
    assert threshold(seen, audited, worse, GRID, 0.05, 20) == 0.9


def test_a_region_answered_unaudited_counts_as_unknown_not_as_right():
    """The post-stratified estimate weights each bin by the items it saw: a bin that
    answered 1,000 items on 2 clean audits does not make the region look safe."""
    audited = np.array([200.0, 2.0])
    est, upper, m = region_bounds(np.array([200.0, 1000.0]), audited, np.array([2.0, 0.0]))
    assert upper[0] > 0.05 and m[0] == 202
    audited = np.array([200.0, 300.0])
    est, upper, _ = region_bounds(np.array([200.0, 1000.0]), audited, np.array([2.0, 0.0]))
    assert upper[0] < 0.05


def _fill(gate: AuditedThresholds, score: float, n: int, wrong: int) -> None:
    for k in range(n):
        gate.seen([1], [score])
        gate.add(1, 2 if k < wrong else 1, score, lambda x: x)


def test_the_cache_keeps_its_default_until_audits_judge_it_then_obeys_the_bound():
    gate = AuditedThresholds(0.05, 10, SIMILARITY_GRID, default=0.8)
    assert gate.threshold_for(1) == 0.8  # no audits yet: today's fixed rule
    _fill(gate, 0.82, 60, 20)  # the 0.80-0.85 bin disagrees a third of the time
    _fill(gate, 0.97, 60, 0)  # near-duplicates always agree
    router = AuditedThresholds(0.05, 10)
    (_, cache_t) = joint_thresholds([router, gate], lambda x: x)
    assert 0.82 < cache_t <= 0.96  # the bad bin is left to the LLM; the good one answers


def test_joint_bound_keeps_current_thresholds_while_their_estimate_holds():
    gate = AuditedThresholds(0.05, 10, SIMILARITY_GRID, default=0.8)
    _fill(gate, 0.97, 45, 1)  # 2% wrong: too few audits to *prove* it is under 5%
    router = AuditedThresholds(0.05, 10)
    assert joint_thresholds([router, gate], lambda x: x)[1] == math.inf  # not loosened...
    current = [math.inf, 0.96]
    assert joint_thresholds([router, gate], lambda x: x, current)[1] == 0.96  # ...nor shut


def test_answers_the_head_and_the_neighbour_agree_on_are_certified_in_their_own_lane():
    """Where the head and the nearest cached neighbour agree, answers are judged on their
    own audits: that lane answers while the plain lane, at the same score, cannot keep
    the bound."""
    head = AuditedThresholds(0.05, 10, lanes(CONFIDENCE_GRID))
    cache = AuditedThresholds(0.05, 10, lanes(SIMILARITY_GRID), default=0.8)
    agreeing, alone = laned(0.75, True, CONFIDENCE_GRID), laned(0.75, False, CONFIDENCE_GRID)
    assert plain(agreeing) == (0.75, True) and plain(alone) == (0.75, False)
    assert laned(0.2, True, CONFIDENCE_GRID) == 0.2  # under the grid: unscored either way
    _fill(head, agreeing, 300, 3)  # 1% wrong where the neighbour agrees
    _fill(head, alone, 300, 120)  # 40% wrong where it does not
    _fill(head, laned(0.99, False, CONFIDENCE_GRID), 100, 20)  # even sure ones: 20%
    t, _ = joint_thresholds([head, cache], lambda x: x)
    head.set_pooled(t)
    assert head.admits(1, agreeing) and not head.admits(1, alone)
    assert not head.admits(1, laned(0.99, False, CONFIDENCE_GRID))
    assert head.summary(lambda x: x)["pooled_agreeing_only"] is True
    assert head.summary(lambda x: x)["pooled_threshold"] <= 0.75


def test_the_cache_default_is_a_plain_similarity_whatever_the_lane():
    """Before audits judge the cache, ``min_similarity`` applies to the similarity
    itself: agreement does not let a far neighbour through."""
    cache = AuditedThresholds(0.05, 10, lanes(SIMILARITY_GRID), default=0.8)
    assert cache.admits(1, laned(0.85, True, SIMILARITY_GRID))
    assert cache.admits(1, laned(0.85, False, SIMILARITY_GRID))
    assert not cache.admits(1, laned(0.75, True, SIMILARITY_GRID))


def test_the_router_scores_each_path_in_the_lane_the_other_puts_it():
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router

    router = Router(Settings(), SimpleNamespace(dim=4, resolve=lambda x: {7: 1}.get(x, x)), 0.05)
    assert router.head_score(1, 0.9, near=7) == laned(0.9, True, CONFIDENCE_GRID)  # 7 -> 1
    assert router.head_score(1, 0.9, near=2) == 0.9
    assert router.head_score(1, 0.9, near=None) == 0.9
    assert router.cache_score(7, 0.9, guess=1) == laned(0.9, True, SIMILARITY_GRID)
    assert router.cache_score(7, 0.9, guess=None) == 0.9
    assert router.follow_threshold() == 0.8  # the default, before any audit
    router.cache_thresholds.set_pooled(laned(0.85, True, SIMILARITY_GRID))
    router.cache_thresholds._audits.extend([(1, 1, 0)] * 100)  # the pool is ready
    assert math.isinf(router.follow_threshold())  # only agreeing answers are certified


def test_an_llm_that_disagrees_with_itself_is_reported_not_silently_paid_for():
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router, SoftmaxHead

    def audited(max_error: float) -> Router:
        router = Router(Settings(), SimpleNamespace(dim=4, resolve=int), max_error)
        router.head = SoftmaxHead()  # a trained head (its weights play no part here)
        for k in range(100):  # near-duplicate texts, labelled apart a fifth of the time
            router.cache_thresholds.seen([1], [0.97])
            router.audit_cache(1, 0.97, 2 if k % 5 == 0 else 1)
            router.head_thresholds.seen([1], [0.99])  # the head's surest answers: 15% off
            router.audit(1, 0.99, 2 if k % 20 < 3 else 1)
        return router

    found = audited(0.05).self_disagreement()
    assert found["near_duplicate_audits"] == 100 and found["rate"] == 0.2
    low, high = found["interval_95"]
    assert 0.05 < low < 0.2 < high
    # two answers each wrong 10.6% of the time differ 20% of the time
    assert abs(found["llm_error"] - (1 - 0.8**0.5)) < 1e-3
    warning = audited(0.05).warning()
    assert "certified at max_error 5%" in warning and "15%" in warning and "20%" in warning
    assert "CANONLABEL_ROUTER=0" in warning and "LLM's own error near 11%" in warning
    assert audited(0.3).warning() is None  # a bound it can meet: paths answer, no warning


def test_answers_are_bounded_above_the_llms_own_error():
    """An LLM that labels near-duplicates apart a third of the time (each answer wrong
    about 18%): no answer can meet 5% against it, so the bound rises by the one answer's
    error that the low end of that rate's interval implies (not by the rate: an answer
    is held to one label, not to a pair), and the head's surest answers (10% off the
    LLM) are certified."""
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router, SoftmaxHead

    def audited(near_duplicates: int = 100, head_wrong: int = 10) -> Router:
        router = Router(Settings(), SimpleNamespace(dim=4, resolve=int), 0.05)
        router.head = SoftmaxHead()
        for k in range(200):
            if k < near_duplicates:
                router.cache_thresholds.seen([1], [0.97])
                router.audit_cache(1, 0.97, 2 if k % 3 == 0 else 1)
            router.head_thresholds.seen([1], [0.99])
            router.audit(1, 0.99, 2 if k % 100 < head_wrong else 1)
        return router

    noisy = audited()
    rate = noisy.self_disagreement()["rate"]
    assert 0.05 + 0.1 < noisy.bound() < 0.05 + (1 - math.sqrt(1 - rate)) < 0.05 + rate
    assert noisy.summary()["bound"] == noisy.bound() > noisy.summary()["max_error"] == 0.05
    assert 0.1 < noisy.summary()["llm_floor"] < rate
    assert not math.isinf(noisy.head_thresholds.threshold_for(-1)) and noisy.warning() is None
    assert noisy.answers(1, 0.99)
    # too few near-duplicates to trust: no floor, whatever they say; nothing certified
    unknown = audited(near_duplicates=10)
    assert unknown.bound() == 0.05 and not unknown.answers(1, 0.99)
    assert math.isinf(unknown.head_thresholds.threshold_for(-1))
    worse = audited(head_wrong=40)  # a head worse than the floor allows
    assert math.isinf(worse.head_thresholds.threshold_for(-1))
    warning = worse.warning()
    assert "max_error 5% above the LLM's floor of" in warning and "Raise --max-error" in warning


def test_the_llm_floor_weighs_near_duplicates_by_how_many_were_seen_not_audited():
    """Near-duplicates the cache answers are audited 2% of the time and agree; the ones
    left to the LLM disagree half the time. Counted plainly, the floor would be the hard
    ones' rate, and would rise the more the cache answers."""
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router

    router = Router(Settings(), SimpleNamespace(dim=4, resolve=int), 0.05)
    agreeing = laned(0.97, True, SIMILARITY_GRID)
    router.cache_thresholds.seen([1] * 2000, [agreeing] * 2000)  # answered; 40 audited, all agree
    for _ in range(40):
        router.audit_cache(1, agreeing, 1)
    for k in range(60):  # the rest, all audited: half disagree
        router.cache_thresholds.seen([1], [0.97])
        router.audit_cache(1, 0.97, 2 if k % 2 else 1)
    assert router.self_disagreement()["rate"] == 0.3  # the plain rate: 30 of 100
    assert router.floor() < 0.02  # weighted by what was seen: ~1.5% apart, at its low end


def _online(make_clf):
    """A stream of the four topics through an online router that learns fast."""
    from canonlabel.testing import FakeLabeler

    clf, _ = make_clf(
        labeler=FakeLabeler(_topic_rule),
        min_similarity=0.99,  # no semantic cache: only the router can save calls
        router_min_items=40,
        router_retrain_every=40,
        router_min_audits=10,
        max_error=0.2,
        audit_rate=0.3,
        consolidate_every=0,
    )
    texts = _texts(80)
    for start in range(0, len(texts), 16):
        clf.classify_many(texts[start : start + 16])
        clf.router.wait()  # deterministic test: let each fit land
    return clf, texts


def test_router_trains_online_answers_confident_items_and_is_audited(make_clf):
    clf, texts = _online(make_clf)
    summary = clf.router.summary()
    assert summary["version"] >= 1 and summary["audits"] > 0
    assert clf.counters["model_hits"] > 0, summary  # the router answered some items...
    assert clf.counters["llm_calls"] < len(texts)  # ...so the LLM was asked less
    assert clf.counters["audits"] > 0  # and some would-be answers were sent to the LLM
    rows = dict(clf.store.conn.execute("SELECT source, count(*) FROM items GROUP BY source"))
    assert rows.get("model") == clf.counters["model_hits"]
    assert clf.store.count("SELECT count(*) FROM router_versions") >= 1


def _routed(make_clf, db, **settings):
    from canonlabel.testing import FakeLabeler

    llm = FakeLabeler(_topic_rule)
    clf, _ = make_clf(
        db=db,
        labeler=llm,
        min_similarity=0.99,
        router_min_items=40,
        router_retrain_every=40,
        router_min_audits=10,
        max_error=0.2,
        audit_rate=1.0,  # every confident answer goes to the LLM with its guess
        consolidate_every=0,
        **settings,
    )
    texts = _texts(40)
    for start in range(0, len(texts), 16):
        clf.classify_many(texts[start : start + 16])
        clf.router.wait()
    assert clf.counters["audits"] > 0
    return llm


def test_the_guess_is_shown_only_to_an_llm_that_is_shown_labels(make_clf):
    """An LLM shown no labels (the bundled model copies what it is shown) must answer
    from the text alone: its audits then check the head instead of echoing it, and a
    text's raw label does not depend on what the stream held before it."""
    assert all(r.candidates == () for r in _routed(make_clf, "a.db", candidates=0).history)
    # no label is similar enough to be shown on its own merit: what is shown is the guess
    shown = _routed(make_clf, "b.db", candidates=1, candidate_min_similarity=1.0).history
    assert any(len(r.candidates) == 1 for r in shown)


def test_router_stays_quiet_without_enough_evidence(make_clf):
    clf, llm = make_clf(router_min_items=10_000)
    clf.classify_many(_texts(10))
    assert clf.counters["model_hits"] == 0 and clf.router.summary()["version"] == 0


def test_llm_budget_caps_calls_and_fails_the_rest(make_clf):
    clf, llm = make_clf(max_llm_calls=3, min_similarity=0.99, router=False)
    results = clf.classify_many([f"distinct topic number {i} here" for i in range(8)])
    assert llm.calls == 3
    failed = [r for r in results if r.error]
    assert len(failed) == 5 and all("budget" in r.error for r in failed)
    assert clf.store.count("SELECT count(*) FROM items") == 3  # failures are not stored...
    assert BudgetError.__name__ == "BudgetError"


def test_closing_while_a_head_is_fitted_saves_it(make_clf, monkeypatch):
    """`close()` right after the batch that started a fit: the fit lands in the store
    instead of failing on a closed connection in its thread."""
    import threading
    import time

    from canonlabel import router
    from canonlabel.store import SqliteStore
    from canonlabel.testing import FakeLabeler

    slow_fit = router.SoftmaxHead.fit

    def fit(self, X, y):
        time.sleep(0.5)  # still fitting when close() comes
        return slow_fit(self, X, y)

    monkeypatch.setattr(router.SoftmaxHead, "fit", fit)
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    clf, _ = make_clf(
        labeler=FakeLabeler(_topic_rule), router_min_items=40, router_retrain_every=40
    )
    clf.classify_many(_texts(12))
    assert clf.router._training is not None and clf.router._training.is_alive()
    path = clf.store.path
    clf.close()
    assert not failures
    reopened = SqliteStore(path)
    assert reopened.count("SELECT count(*) FROM router_versions") == 1
    reopened.close()


def test_no_audits_means_no_error_estimate_not_a_prior_of_one():
    cache = AuditedThresholds(0.05, 20, SIMILARITY_GRID, default=0.8)
    cache.seen([1, 2], [0.9, 0.85])
    assert cache.estimated_error(lambda x: x) == {"error": None, "upper_95": None}
    for _ in range(30):
        cache.add(1, 1, 0.9, lambda x: x)
    assert cache.estimated_error(lambda x: x)["error"] is not None


def test_the_error_bound_is_the_setting_else_the_llms_own_else_five_percent(make_clf):
    """A labeler may declare the bound worth holding it to (the bundled 270M model, which
    disagrees with itself about 9% of the time, declares 10%: at 5% nothing would ever
    be certified); an explicit setting wins; others get 5%."""
    from canonlabel.testing import FakeLabeler

    class Noisy(FakeLabeler):
        max_error = 0.10

    generic, _ = make_clf("g.db")
    own, _ = make_clf("o.db", labeler=Noisy())
    chosen, _ = make_clf("c.db", labeler=Noisy(), max_error=0.2)
    assert generic.router.max_error == 0.05 and own.router.max_error == 0.10
    assert chosen.router.max_error == 0.2 and chosen.router.head_thresholds.max_error == 0.2
    assert own.router.summary()["max_error"] == 0.10


def test_a_router_answer_follows_its_nearest_llm_answered_text_when_its_label_splits(make_clf):
    """Close intents a name-only merge joined come apart in a consolidation or a split by
    hand; an item the head answered goes with its nearest LLM-answered text (whose raw
    label it keeps, as a cache hit does), not with whichever part keeps the id."""
    clf, _ = _online(make_clf)
    rows = clf.store.query(
        "SELECT i.id, i.raw_label, i.label_id, m.id, m.raw_label, m.label_id, m.source "
        "FROM items i JOIN items m ON m.id = i.matched_item WHERE i.source = 'model' ORDER BY i.id"
    )
    assert rows, "no router answer matched a neighbour of its own label"
    assert all(r[1] == r[4] and r[2] == r[5] and r[6] == "llm" for r in rows)
    unmatched = clf.store.count(
        "SELECT count(*) FROM items WHERE source = 'model' AND matched_item IS NULL"
    )
    assert unmatched == clf.store.count(
        "SELECT count(*) FROM items WHERE source = 'model' AND raw_label IS NULL"
    )
    item, stored, matched = rows[-1][0], rows[-1][2], rows[-1][3]
    created = clf.split(clf.space.resolve(stored), items=[matched])["created"][0]["id"]
    now = dict(
        clf.store.query("SELECT id, label_id FROM items WHERE id IN (?, ?)", (item, matched))
    )
    assert clf.space.resolve(now[item]) == clf.space.resolve(now[matched]) == created


def test_confident_audits_that_disagree_are_disputed_for_the_consensus():
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router

    space = SimpleNamespace(dim=4, resolve=int, item_label={10: 2, 11: 2, 12: 3})
    router = Router(Settings(), space, 0.05)
    router.audit(1, laned(0.95, True, CONFIDENCE_GRID), truth=2, item=10)
    assert router.take_disputes() == {}  # a head that certifies nothing disputes nothing
    router._certifies = lambda: True
    router.audit(1, laned(0.95, True, CONFIDENCE_GRID), truth=2, item=10)  # confident, wrong
    router.audit(1, laned(0.4, True, CONFIDENCE_GRID), truth=2, item=11)  # too unsure
    router.audit(1, 0.95, truth=2, item=11)  # the neighbour disagreed with the head too
    router.audit(3, 0.95, truth=3, item=12)  # agrees
    router.audit_cache(4, laned(0.97, True, SIMILARITY_GRID), truth=3, item=12)  # neighbour: 4
    assert router.take_disputes() == {10: 1, 12: 4}
    assert router.take_disputes() == {}  # each dispute is handed over once


def test_cross_fitting_predicts_each_item_with_a_head_that_did_not_learn_it():
    """A wrong answer inside a tight group: a head fitted on it may repeat it; the fold
    head that left it out names the group, and its nearest other item is never itself."""
    from canonlabel.head import SoftmaxHead, cross_fit, nearest_other

    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3]
    X = np.repeat(centres, 40, axis=0) + 0.05 * rng.normal(size=(120, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat(np.array([10, 11, 12]), 40)
    y[5] = 12  # a wrong answer in group 10
    judged = cross_fit(X, y, np.ones(120, dtype=bool), cached=120)
    assert judged is not None and judged.guess[5] == 10 and judged.near[5] == 10
    assert (judged.guess == np.repeat([10, 11, 12], 40)).mean() == 1.0
    assert SoftmaxHead().fit(X, y).classes_.tolist() == [10, 11, 12]
    assert cross_fit(X, y, np.ones(120, dtype=bool), cached=0) is None  # nothing to audit
    twins = np.vstack([X[:1], X[:1], X[50:51]])
    assert nearest_other(twins, cached=3).tolist() == [1, 0, 0]
    # rows after the cache (items answered without the LLM) may match any cached row
    assert nearest_other(np.vstack([X[:2], X[:1]]), cached=2).tolist() == [1, 0, 0]


def test_a_new_head_is_audited_out_of_fold_not_by_the_audits_of_heads_before_it():
    """The audits of an early, weak head disagree half the time; a new head's own
    out-of-fold audits on the cached items replace them, and certify it."""
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router

    rng = np.random.default_rng(1)
    n = 400
    y = np.repeat(np.arange(1, 5), n // 4)
    X = np.eye(8, dtype=np.float32)[y] + 0.05 * rng.normal(size=(n, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    keys = np.arange(100, 100 + n)
    space = SimpleNamespace(
        dim=8, resolve=int, item_label={int(k): int(label) for k, label in zip(keys, y)}
    )
    router = Router(Settings(), space, 0.05)
    for k in range(200):  # a weak head's audits: half of them wrong
        router.head_thresholds.seen([1], [2.99])
        router.audit(1, 2.99, 1 if k % 2 else 2)
    assert math.isinf(router.head_thresholds.threshold_for(-1))
    router.train(keys, X)
    router.wait()
    assert router.version == 1 and len(router.head_thresholds._audits) == n
    assert not math.isinf(router.head_thresholds.threshold_for(-1))
    assert router.answers(1, 2.99)


def test_a_changed_label_space_makes_a_new_head_due():
    """After a consolidation the head predicts labels whose raw labels may have moved:
    a refit is due at once, not only after the next 500 items."""
    from types import SimpleNamespace

    from canonlabel import Settings
    from canonlabel.router import Router, SoftmaxHead

    router = Router(Settings(), SimpleNamespace(dim=4, resolve=int), 0.05)
    router.trained_on = 600
    assert not router.due(650)  # 50 new items: not yet
    router.refresh()
    assert not router.due(650)  # no head yet: nothing is stale
    router.head = SoftmaxHead()
    router.refresh()
    assert router.due(650) and not router.due(100)  # (still at least router_min_items)
    router._relabelled = False
    assert not router.due(650)
