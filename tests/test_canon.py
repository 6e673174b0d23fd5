import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canonlabel.canon import InvalidLabel, clean_label
from canonlabel.labelspace import LabelSpace
from canonlabel.testing import FakeLabeler


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("card_arrival", "card_arrival"),
        ("  Card Arrival\n", "card_arrival"),
        ("`card-arrival`", "card_arrival"),
        ("Label: card_arrival", "card_arrival"),
        ('"Exchange rate."', "exchange_rate"),
        ("top__up___failed_", "top_up_failed"),
    ],
)
def test_clean_label_accepts_light_variants(output, label):
    assert clean_label(output) == label


@pytest.mark.parametrize(
    "output",
    [
        "",
        "   \n",
        "I'm sorry, I cannot help with that",
        "42_is_a_number",
        "a",
        "This message is about a customer who cannot find the card they ordered last week",
        "x" * 80,
        "卡片",
    ],
)
def test_clean_label_rejects_refusals_sentences_and_junk(output):
    with pytest.raises(InvalidLabel):
        clean_label(output)


def test_merge_compares_to_representative_not_members(make_clf):
    """A~B and B~C must not chain C into A when C is far from A's representative."""
    space = LabelSpace(2)
    a = np.array([1.0, 0.0], dtype=np.float32)
    space.add_label(1, "a_label", a)
    space.add_alias("a_label", 1)
    b = np.array([np.cos(0.6), np.sin(0.6)], dtype=np.float32)  # cos 0.825 to A
    assert space.decide("b_label", b, 0.8).label_id == 1
    space.add_alias("b_label", 1)
    c = np.array([np.cos(1.2), np.sin(1.2)], dtype=np.float32)  # 0.825 to B, 0.36 to A
    decision = space.decide("c_label", c, 0.8)
    assert decision.label_id is None


def _run(make_clf, texts, db):
    clf, _ = make_clf(
        db=db,
        min_similarity=0.99,
        label_similarity=0.9,
        labeler=FakeLabeler(rule=lambda t, c: t.split()[0] + "_topic"),
    )
    return clf, [r.label for r in clf.classify_many(texts)]


words = st.sampled_from(["card", "refund", "transfer", "pin", "cash", "rate", "fee", "app"])
texts = st.lists(
    st.builds(lambda a, b: f"{a} problem with {b}", words, words), min_size=1, max_size=12
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts)
def test_canonicalisation_properties(make_clf, tmp_path_factory, batch):
    db = str(tmp_path_factory.mktemp("h") / "p.db")
    clf, first = _run(make_clf, batch, db)
    # idempotent: classifying the same texts again changes nothing and asks nothing
    calls = clf.counters["llm_calls"]
    again = [r.label for r in clf.classify_many(batch)]
    assert again == first and clf.counters["llm_calls"] == calls
    # identical inputs get identical labels, whatever their position
    by_text = {}
    for text, label in zip(batch, first):
        assert by_text.setdefault(text, label) == label
    # reload gives the same ids and names
    ids = {lab.name: lab.id for lab in clf.labels()}
    clf.close()
    clf2, _ = make_clf(db=db)
    assert {lab.name: lab.id for lab in clf2.labels()} == ids
    assert [r.label for r in clf2.classify_many(batch)] == first
