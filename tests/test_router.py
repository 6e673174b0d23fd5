"""The self-training router: thresholds under an error bound, audits, training, budget."""

from __future__ import annotations

import math

from canonlabel.errors import BudgetError
from canonlabel.router import threshold, wilson_upper

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
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(0, 20) > 0.1 > wilson_upper(0, 200)
    assert wilson_upper(5, 100) > 0.05


def test_threshold_is_the_lowest_confidence_that_keeps_the_bound():
    pairs = [(0.9, True)] * 100 + [(0.5, False)] * 30 + [(0.5, True)] * 30
    assert threshold(pairs, 0.05, 20) == 0.52  # only the confident region qualifies
    assert math.isinf(threshold(pairs[:10], 0.05, 20))  # too few audits: no threshold
    worse = pairs + [(0.95, False)] * 8  # disagreeing audits tighten it
    assert threshold(worse, 0.05, 20) > 0.52 or math.isinf(threshold(worse, 0.05, 20))


def test_router_trains_online_answers_confident_items_and_is_audited(make_clf):
    from canonlabel.testing import FakeLabeler

    llm = FakeLabeler(_topic_rule)
    clf, _ = make_clf(
        labeler=llm,
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
    summary = clf.router.summary()
    assert summary["version"] >= 1 and summary["audits"] > 0
    assert clf.counters["model_hits"] > 0, summary  # the router answered some items...
    assert clf.counters["llm_calls"] < len(texts)  # ...so the LLM was asked less
    assert clf.counters["audits"] > 0  # and some would-be answers were sent to the LLM
    rows = dict(clf.store.conn.execute("SELECT source, count(*) FROM items GROUP BY source"))
    assert rows.get("model") == clf.counters["model_hits"]
    assert clf.store.count("SELECT count(*) FROM router_versions") >= 1


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
