"""The Store contract: every backend (SQLite, PostgreSQL + pgvector) passes the same tests."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pytest

from canonlabel import Classifier, Settings
from canonlabel.errors import IncompatibleStoreError, TransientStoreError
from canonlabel.store import open_store
from canonlabel.testing import FakeLabeler, HashEmbedder

DIM = 8


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _item(ext_id, text, label_id, *, source="llm", raw=None, cached=True, seed=0):
    return {
        "ext_id": ext_id,
        "text": text,
        "text_key": text.lower(),
        "label_id": label_id,
        "raw_label": raw,
        "source": source,
        "vector": _vec(seed) if cached else None,
        "cached": cached,
        "prompt_tokens": 3,
        "completion_tokens": 2,
    }


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    s.bind_embedder("test", DIM)
    yield s
    s.close()


def _seed(store) -> tuple[int, int]:
    with store.write(label_space=True) as c:
        a = store.insert_label(c, "card_arrival", _vec(1))
        store.insert_alias(c, "card_arrival", a, None, _vec(1))
        b = store.insert_label(c, "refund", _vec(2))
        store.insert_alias(c, "refund", b, None, _vec(2))
        store.insert_alias(c, "money_back", b, 0.81, _vec(3))
    return a, b


def test_meta_and_embedder_binding(store, store_url):
    store.set_meta({"x": [1, 2], "y": "z"})
    store.set_meta({"x": 3})
    meta = store.meta()
    assert meta["x"] == "3" and meta["y"] == '"z"'
    with pytest.raises(IncompatibleStoreError, match="--embedder test"):
        store.bind_embedder("other", DIM)
    store.close()
    again = open_store(store_url)  # reopening keeps everything
    try:
        again.bind_embedder("test", DIM)
        assert again.meta()["x"] == "3"
    finally:
        again.close()


def test_labels_and_aliases_in_write_order(store):
    a, b = _seed(store)
    assert [r[:2] for r in store.label_rows()] == [(a, "card_arrival"), (b, "refund")]
    assert [r[0] for r in store.label_rows(after=a)] == [b]
    np.testing.assert_allclose(np.frombuffer(store.label_rows()[1][2], np.float32), _vec(2))
    rows = store.alias_rows()
    assert [(r[0], r[1]) for r in rows] == [("card_arrival", a), ("refund", b), ("money_back", b)]
    assert [r[0] for r in store.alias_rows(after=rows[0][2])] == ["refund", "money_back"]
    assert set(store.alias_vectors(DIM)) == {"card_arrival", "refund", "money_back"}
    assert store.count("SELECT count(*) FROM merges WHERE kind = 'alias'") == 1


def test_items_are_idempotent_by_id_and_text(store):
    a, b = _seed(store)
    with store.write() as c:
        first = store.insert_items(
            c, [_item("1", "Card late", a, raw="card_arrival"), _item("2", "Refund?", b, seed=5)]
        )
        again = store.insert_items(
            c, [_item("1", "Card late", b), _item("1", "Other", b, cached=False)]
        )
    assert again[0] == first[0] and again[1] not in first
    assert store.count("SELECT count(*) FROM items") == 3
    found, known = store.items_by_identity([("1", "card late"), ("1", "nope"), ("9", "x")])
    assert set(found) == {("1", "card late")} and known == {"1"}
    assert found[("1", "card late")].label_id == a  # the first row stands
    assert store.items_by_ext_id(["1"])["1"].text == "Other"  # the latest under an id
    assert store.items_by_text_key(["refund?"])["refund?"].id == first[1]
    assert store.raw_labels([first[0]]) == {first[0]: "card_arrival"}
    assert store.raw_label_uses() == {"card_arrival": 1}
    assert store.label_item_counts() == {a: 1, b: 2}
    ids, vectors, labels = store.cached_items(DIM)
    assert ids.tolist() == sorted(ids.tolist()) and len(ids) == 2  # "Other" has no vector
    np.testing.assert_allclose(vectors[1], _vec(5), rtol=1e-6)
    assert store.cached_items(DIM, after=int(ids[0]))[0].tolist() == [ids[1]]
    assert labels.tolist() == [a, b]
    assert store.cached_ids() == ids.tolist() and store.cached_ids(after=int(ids[1])) == []
    some = store.cached_items_by_id([int(ids[1]), 999], DIM)
    assert some[0].tolist() == [ids[1]] and some[2].tolist() == [b]


def test_a_failed_transaction_leaves_nothing(store):
    a, _ = _seed(store)
    with pytest.raises(RuntimeError), store.write() as c:
        store.insert_items(c, [_item("1", "Card late", a)])
        raise RuntimeError("crash mid-transaction")
    assert store.count("SELECT count(*) FROM items") == 0
    assert store.integrity_check() == "ok"


def test_failures_that_were_paid_are_remembered(store):
    with store.write() as c:
        for kind in ("invalid_output", "rejected", "backend"):
            store.record_failure(
                c, ext_id=kind, text_key=kind, text="t", kind=kind, error=f"{kind}!", outputs=["x"]
            )
    paid = store.paid_failures(["invalid_output", "rejected", "backend", "none"])
    assert paid == {
        "invalid_output": ("invalid_output", "invalid_output!"),
        "rejected": ("rejected", "rejected!"),
    }


def test_fulltext_finds_labels_by_alias_and_member_text(store):
    a, b = _seed(store)
    with store.write() as c:
        store.insert_items(c, [_item("1", "where is my parcel", a)])
    assert store.fulltext_labels("money back please", 3)[0] == b
    assert store.fulltext_labels("parcel", 3) == [a]
    assert store.fulltext_labels("!!!", 3) == []
    assert store.member_texts(["card_arrival"], 5) == []  # raw label of that row is None


def test_epoch_counts_rewrites(store):
    assert store.epoch() == 0
    with store.write(label_space=True) as c:
        store.bump_epoch(c)
        store.bump_epoch(c)
    assert store.epoch() == 2


def test_router_versions_keep_the_newest(store):
    for n in range(4):
        store.save_router(bytes([n]), {"n": n}, keep=2)
    assert store.count("SELECT count(*) FROM router_versions") == 2
    assert [
        bytes(r[0]) for r in store.query("SELECT weights FROM router_versions ORDER BY id")
    ] == [
        b"\x02",
        b"\x03",
    ]


def test_upserts_and_small_tables(store):
    a, _ = _seed(store)
    with store.write() as c:
        c.execute("UPDATE labels SET pinned = 1 WHERE id = ?", (a,))
        for same in (1, 0):
            c.execute(
                "INSERT INTO adjudications VALUES (?, ?, ?) ON CONFLICT (pair) DO UPDATE SET "
                "same = excluded.same, created_at = excluded.created_at",
                ("a|b", same, 0.0),
            )
    assert store.pinned_labels() == {a}
    assert store.adjudications(["a|b", "c|d"]) == {"a|b": False}


def test_claims_are_exclusive_across_processes_only_where_shared(store, store_url):
    assert store.claim("k")
    other = open_store(store_url)
    try:
        if store.shared:
            assert not other.claim("k")  # another process is asking the LLM about it
            assert other.claim("j")
            store.release("k")
            assert other.claim("k")
            assert other.try_exclusive("consolidate") and not store.try_exclusive("consolidate")
        else:  # one writer process: nothing to contend with
            assert other.claim("k")
    finally:
        other.close()
    # a closed process's claims are gone (the server ends its session a moment later)
    deadline = time.monotonic() + 5
    while not store.claim("k") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.claim("k")


def test_classifier_end_to_end(store_url):
    settings = Settings(db=store_url, consolidate_every=0)
    texts = ["card not arrived", "refund please", "reset my pin", "card not arrived"]
    with Classifier(open_store(store_url), HashEmbedder(), FakeLabeler(), settings) as clf:
        first = clf.classify_many(texts, ["1", "2", "3", "4"])
        assert [r.source for r in first] == ["llm", "llm", "llm", "exact"]
        report = clf.consolidate()
        assert report["raw_labels"] == 3
        labels = clf.labels()
        clf.merge(labels[1].id, labels[0].id)
        assert len(clf.labels()) == len(labels) - 1
        clf.undo()
        assert len(clf.labels()) == len(labels)
    labeler = FakeLabeler()
    with Classifier(open_store(store_url), HashEmbedder(), labeler, settings) as clf:
        again = clf.classify_many(texts, ["1", "2", "3", "4"])  # a resumed job pays nothing
        assert [r.label for r in again] == [r.label for r in first]
        assert labeler.calls == 0
        assert clf.stats()["items"] == 4


def test_a_transient_rollback_is_retried(store):
    a, _ = _seed(store)
    tries = []

    def insert(c):
        store.insert_items(c, [_item("1", "Card late", a)])
        tries.append(1)
        if len(tries) == 1:  # as a deadlock or a lost connection would
            raise TransientStoreError("simulated rollback")
        return "done"

    assert store.transaction(insert) == "done"
    assert len(tries) == 2 and store.count("SELECT count(*) FROM items") == 1


def test_an_engine_answer_survives_a_transient_rollback(store_url):
    settings = Settings(db=store_url, consolidate_every=0)
    with Classifier(open_store(store_url), HashEmbedder(), FakeLabeler(), settings) as clf:
        real, failed = clf.store.write, []

        @contextmanager
        def flaky(**kw):
            with real(**kw) as c:
                yield c
                if kw.get("label_space") and not failed:
                    failed.append(1)
                    raise TransientStoreError("simulated deadlock at commit")

        clf.store.write = flaky
        result = clf.classify("card not arrived", id="1")
        assert failed and result.source == "llm" and clf.labeler.calls == 1
        assert clf.store.count("SELECT count(*) FROM items") == 1
        assert clf.store.count("SELECT count(*) FROM labels") == 1


def test_a_raw_label_equal_to_a_label_name_joins_that_label(store_url):
    # consolidation names a label after its members' core name, which need not be any
    # raw label; a later answer with exactly that name must join it, not repeat the name
    settings = Settings(db=store_url, consolidate_every=0, label_similarity=0.999)
    with Classifier(open_store(store_url), HashEmbedder(), FakeLabeler(), settings) as clf:
        first = clf.classify("card not arrived")
        with clf.store.write() as c:  # as consolidation's renaming does
            c.execute("UPDATE labels SET name = 'parcel_late' WHERE id = ?", (first.label_id,))
        clf.space.reload()
        clf.labeler.enqueue("parcel_late")
        second = clf.classify("the courier never came")
        assert second.label_id == first.label_id and second.label == "parcel_late"
        assert clf.store.count("SELECT count(*) FROM labels") == 1
