import pytest

from canonlabel.errors import CurationError
from canonlabel.testing import FakeLabeler

TEXTS = {
    "card_delivery": ["my card has not arrived", "where is my new card", "card still not here"],
    "exchange_rate": ["what exchange rate do you use", "euro exchange rate today"],
    "pin_change": ["how do I change my pin", "reset my pin number please"],
}


def _rule(text, candidates):
    return next(label for label, texts in TEXTS.items() if text in texts)


@pytest.fixture
def clf(make_clf):
    clf, _ = make_clf(labeler=FakeLabeler(rule=_rule), min_similarity=0.99, label_similarity=0.99)
    clf.classify_many([t for texts in TEXTS.values() for t in texts])
    return clf


def _mapping(clf):
    rows = clf.store.conn.execute("SELECT id, label_id FROM items ORDER BY id").fetchall()
    return {i: clf.space.name(lab) for i, lab in rows}


def _id(clf, name):
    return next(lab.id for lab in clf.labels() if lab.name == name)


def test_merge_then_undo_restores_the_old_mapping_exactly(clf, make_clf):
    before = _mapping(clf)
    labels_before = {(lab.id, lab.name, lab.count) for lab in clf.labels()}
    entry = clf.merge(_id(clf, "exchange_rate"), _id(clf, "card_delivery"))
    assert entry["kind"] == "merge"
    after = _mapping(clf)
    assert sum(v == "card_delivery" for v in after.values()) == 5
    # new texts whose raw label is the merged one now get the target label
    assert clf.classify("euro exchange rate today").label == "card_delivery"
    clf.undo()
    mapping = _mapping(clf)
    assert {i: mapping[i] for i in before} == before
    assert {(lab.id, lab.name, lab.count) for lab in clf.labels()} >= {
        (i, n, c) for i, n, c in labels_before if n != "exchange_rate"
    }
    with pytest.raises(CurationError, match="nothing to undo"):
        clf.undo()
    # the log survives a reload
    clf.close()
    clf2, _ = make_clf(labeler=FakeLabeler(rule=_rule))
    assert clf2.store.count("SELECT count(*) FROM merges WHERE kind='merge' AND undone=1") == 1


def test_rename_keeps_the_id(clf):
    label_id = _id(clf, "pin_change")
    clf.rename(label_id, "PIN reset")
    assert _id(clf, "pin_reset") == label_id
    assert clf.classify("how do I change my pin").label == "pin_reset"
    with pytest.raises(CurationError, match="already"):
        clf.rename(_id(clf, "card_delivery"), "pin_reset")
    with pytest.raises(CurationError, match="invalid name"):
        clf.rename(label_id, "!!")


def test_split_moves_members_by_items_and_by_k(clf):
    label_id = _id(clf, "card_delivery")
    members = [
        r[0]
        for r in clf.store.conn.execute(
            "SELECT id FROM items WHERE label_id = ? ORDER BY id", (label_id,)
        )
    ]
    out = clf.split(label_id, items=members[:1], name="lost_card")
    new = out["created"][0]
    assert new["items"] == 1 and new["name"] == "lost_card"
    assert _mapping(clf)[members[0]] == "lost_card"
    assert _mapping(clf)[members[1]] == "card_delivery"
    out = clf.split(label_id, k=2)
    assert len(out["created"]) == 1
    with pytest.raises(CurationError, match="leave some members"):
        clf.split(
            _id(clf, "pin_change"),
            items=[
                r[0]
                for r in clf.store.conn.execute(
                    "SELECT id FROM items WHERE label_id = ?", (_id(clf, "pin_change"),)
                )
            ],
        )


def test_curation_errors_say_what_to_do(clf):
    a, b = _id(clf, "pin_change"), _id(clf, "card_delivery")
    with pytest.raises(CurationError, match="does not exist"):
        clf.merge(999, a)
    with pytest.raises(CurationError, match="itself"):
        clf.merge(a, a)
    clf.merge(a, b)
    with pytest.raises(CurationError, match="use that id"):
        clf.merge(a, b)
