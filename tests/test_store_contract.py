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
        a = store.labels.insert(c, "card_arrival", _vec(1))
        store.aliases.insert(c, "card_arrival", a, None, _vec(1))
        b = store.labels.insert(c, "refund", _vec(2))
        store.aliases.insert(c, "refund", b, None, _vec(2))
        store.aliases.insert(c, "money_back", b, 0.81, _vec(3))
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
    assert [(r.id, r.name) for r in store.labels.rows()] == [(a, "card_arrival"), (b, "refund")]
    assert [r.id for r in store.labels.rows(after=a)] == [b]
    np.testing.assert_allclose(np.frombuffer(store.labels.rows()[1].vector, np.float32), _vec(2))
    assert all(r.merged_into is None for r in store.labels.rows())
    rows = store.aliases.rows()
    assert [(r.raw_label, r.label_id) for r in rows] == [
        ("card_arrival", a),
        ("refund", b),
        ("money_back", b),
    ]
    assert [r.raw_label for r in store.aliases.rows(after=rows[0].seq)] == ["refund", "money_back"]
    assert set(store.aliases.vectors(DIM)) == {"card_arrival", "refund", "money_back"}
    assert store.count("SELECT count(*) FROM merges WHERE kind = 'alias'") == 1


def test_items_are_idempotent_by_id_and_text(store):
    a, b = _seed(store)
    with store.write() as c:
        first = store.items.insert(
            c, [_item("1", "Card late", a, raw="card_arrival"), _item("2", "Refund?", b, seed=5)]
        )
        again = store.items.insert(
            c, [_item("1", "Card late", b), _item("1", "Other", b, cached=False)]
        )
    assert again[0] == first[0] and again[1] not in first
    assert store.count("SELECT count(*) FROM items") == 3
    found, known = store.items.by_identity([("1", "card late"), ("1", "nope"), ("9", "x")])
    assert set(found) == {("1", "card late")} and known == {"1"}
    assert found[("1", "card late")].label_id == a  # the first row stands
    assert store.items.by_ext_id(["1"])["1"].text == "Other"  # the latest under an id
    assert store.items.by_text_key(["refund?"])["refund?"].id == first[1]
    assert store.items.raw_labels([first[0]]) == {first[0]: "card_arrival"}
    assert store.members.raw_label_uses() == {"card_arrival": 1}
    assert store.members.label_counts() == {a: 1, b: 2}
    ids, vectors, labels = store.items.cached(DIM)
    assert ids.tolist() == sorted(ids.tolist()) and len(ids) == 2  # "Other" has no vector
    np.testing.assert_allclose(vectors[1], _vec(5), rtol=1e-6)
    assert store.items.cached(DIM, after=int(ids[0]))[0].tolist() == [ids[1]]
    assert labels.tolist() == [a, b]
    assert (
        store.items.cached_ids() == ids.tolist() and store.items.cached_ids(after=int(ids[1])) == []
    )
    some = store.items.cached_by_id([int(ids[1]), 999], DIM)
    assert some[0].tolist() == [ids[1]] and some[2].tolist() == [b]


def test_a_failed_transaction_leaves_nothing(store):
    a, _ = _seed(store)
    with pytest.raises(RuntimeError), store.write() as c:
        store.items.insert(c, [_item("1", "Card late", a)])
        raise RuntimeError("crash mid-transaction")
    assert store.count("SELECT count(*) FROM items") == 0
    assert store.integrity_check() == "ok"


def test_failures_that_were_paid_are_remembered(store):
    with store.write() as c:
        for kind in ("invalid_output", "rejected", "backend"):
            store.failures.record(
                c, ext_id=kind, text_key=kind, text="t", kind=kind, error=f"{kind}!", outputs=["x"]
            )
    paid = store.failures.paid(["invalid_output", "rejected", "backend", "none"])
    assert paid == {
        "invalid_output": ("invalid_output", "invalid_output!"),
        "rejected": ("rejected", "rejected!"),
    }


def test_fulltext_finds_labels_by_alias_and_member_text(store):
    a, b = _seed(store)
    with store.write() as c:
        store.items.insert(c, [_item("1", "where is my parcel", a)])
    assert store.labels.search("money back please", 3)[0] == b
    assert store.labels.search("parcel", 3) == [a]
    assert store.labels.search("!!!", 3) == []
    assert store.members.texts(["card_arrival"], 5) == []  # raw label of that row is None


def test_epoch_counts_rewrites(store):
    assert store.epoch() == 0
    with store.write(label_space=True) as c:
        store.bump_epoch(c)
        store.bump_epoch(c)
    assert store.epoch() == 2


def test_router_versions_keep_the_newest(store):
    for n in range(4):
        store.router_versions.save(bytes([n]), {"n": n}, keep=2)
    assert store.router_versions.count() == 2
    assert [
        bytes(r[0]) for r in store.query("SELECT weights FROM router_versions ORDER BY id")
    ] == [
        b"\x02",
        b"\x03",
    ]


def test_upserts_and_small_tables(store):
    a, _ = _seed(store)
    with store.write() as c:
        store.labels.pin(c, [a])
    store.adjudications.save({"a|b": True, "e|f": True})
    store.adjudications.save({"a|b": False})  # a new answer replaces the old one
    store.adjudications.save({})
    assert store.labels.pinned() == {a}
    assert store.adjudications.get(["a|b", "c|d"]) == {"a|b": False}
    assert store.adjudications.get() == {"a|b": False, "e|f": True}


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
        store.items.insert(c, [_item("1", "Card late", a)])
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


# -- repositories: every method, on both backends ------------------------------------------


def _items(store, a: int, b: int) -> list[int]:
    """Three LLM answers, a cache hit on the first and an exact hit on the third."""
    with store.write() as c:
        first = store.items.insert(
            c,
            [
                _item("1", "Card late", a, raw="card_arrival", seed=1),
                _item("2", "Card still late", a, raw="card_late", seed=2),
                _item("3", "Refund?", b, raw="refund", seed=3),
            ],
        )
        hits = store.items.insert(
            c,
            [
                _item("4", "Card is late", a, source="cache", raw="card_arrival", seed=4)
                | {"matched_item": first[0], "cached": False, "prompt_tokens": 0},
                _item("5", "Refund?!", b, source="exact", cached=False)
                | {"matched_item": first[2], "prompt_tokens": 0, "completion_tokens": 0},
            ],
        )
    return first + hits


def test_labels_are_renamed_pinned_merged_and_deleted(store):
    a, b = _seed(store)
    with store.write(label_space=True) as c:
        assert store.labels.named(c, "refund") == b and store.labels.named(c, "nope") is None
        assert store.labels.names(c) == {"card_arrival", "refund"}
        assert store.labels.holders(c, ["refund", "nope"]) == [(b, "refund")]
        store.labels.rename(c, a, "parcel_late")
        store.labels.rename(c, b, "money_back", vector=_vec(7), pin=True)
        store.labels.set_vector(c, a, _vec(8))
        extra = store.labels.insert(c, "unused", _vec(9))
        store.labels.pin(c, [a, extra])
        store.labels.pin(c, [extra], False)
        store.labels.merge(c, extra, a)
    rows = {r.id: r for r in store.labels.rows()}
    assert (rows[a].name, rows[b].name) == ("parcel_late", "money_back")
    np.testing.assert_allclose(np.frombuffer(rows[b].vector, np.float32), _vec(7))
    np.testing.assert_allclose(np.frombuffer(rows[a].vector, np.float32), _vec(8))
    assert rows[extra].merged_into == a and store.labels.pinned() == {a, b}
    assert store.labels.search("unused", 3) == [extra]
    with store.write(label_space=True) as c:
        assert not store.labels.delete_unused(c, a)  # aliases and a merged label point at it
        assert store.labels.delete_unused(c, extra)  # nothing points at it
    assert [r.id for r in store.labels.rows()] == [a, b]
    assert store.labels.search("unused", 3) == []
    times = store.labels.created_times()
    assert len(times) == 2 and times == sorted(times)


def test_emptied_labels_are_merged_and_logged(store):
    a, b = _seed(store)
    with store.write(label_space=True) as c:
        store.labels.merge_emptied(c, [(a, b, 0.7)])
    assert {r.id: r.merged_into for r in store.labels.rows()} == {a: b, b: None}
    assert [(e.kind, e.from_label, e.into_label, e.similarity) for e in store.log.history([a])] == [
        ("emptied", a, b, pytest.approx(0.7))
    ]


def test_aliases_move_and_keep_their_vectors(store):
    a, b = _seed(store)
    with store.write(label_space=True) as c:
        store.aliases.move(c, "money_back", a)
        store.aliases.set_vector(c, "refund", _vec(9))
    assert {r.raw_label: r.label_id for r in store.aliases.rows()}["money_back"] == a
    np.testing.assert_allclose(store.aliases.vectors(DIM)["refund"], _vec(9))


def test_the_merge_log_lists_undoes_and_counts(store):
    a, b = _seed(store)  # one alias entry
    with store.write(label_space=True) as c:
        merge = store.log.add(
            c, "merge", from_label=a, into_label=b, similarity=0.5, detail={"pinned_before": 0}
        )
        store.log.add(c, "split", from_label=b, into_label=a, similarity=0.4)
        consolidation = store.log.add(c, "consolidate", detail={"moves": []})
    assert consolidation > merge
    last = store.log.last_undoable()
    assert (last.id, last.kind, last.details()) == (consolidation, "consolidate", {"moves": []})
    with store.write(label_space=True) as c:
        store.log.mark_undone(c, consolidation)
    last = store.log.last_undoable()
    assert (last.id, last.from_label, last.into_label, last.kind) == (merge, a, b, "merge")
    assert last.details() == {"pinned_before": 0}
    assert store.log.live_count() == 3  # the alias, the merge and the split
    history = store.log.history([a])
    assert [(e.kind, e.from_label, e.into_label, e.undone) for e in history] == [
        ("merge", a, b, 0),
        ("split", b, a, 0),
    ]
    assert [e.raw_label for e in store.log.history([b])] == ["money_back", None, None]
    with store.write(label_space=True) as c:
        store.log.mark_undone(c, merge)
    assert store.log.last_undoable() is None


def test_the_passes_of_one_consolidation_are_grouped_with_their_emptied_merges(store):
    a, b = _seed(store)
    before = store.log.last_id()
    with store.write(label_space=True) as c:
        store.log.add(c, "merge", from_label=a, into_label=b, detail={"pinned_before": 0})
        first = store.log.add(c, "consolidate", detail={"moves": []})
        store.log.add(c, "consensus", detail={"moved": [], "restored": []})
    assert store.log.last_id() > before
    with store.write(label_space=True) as c:
        store.labels.merge_emptied(c, [(a, b, 0.7)])
        assert store.log.group(c, before) == [first, first + 1]  # the merge is a person's
    last = store.log.last_undoable()
    assert (last.kind, last.details()) == ("consensus", {"moved": [], "restored": [], "run": first})
    (emptied, label), *rest = store.log.emptied_after(last.id)
    assert label == a and rest == [] and store.log.emptied_after(emptied) == []
    with store.write(label_space=True) as c:
        assert store.log.group(c, first) == [first + 1]  # one entry: nothing to group


def test_items_are_read_counted_and_relabelled(store):
    a, b = _seed(store)
    one, two, three, hit, exact = _items(store, a, b)
    assert store.items.get(one).raw_label == "card_arrival" and store.items.get(999) is None
    assert store.items.label_ids([one, three, 999]) == {one: a, three: b}
    assert store.items.label_ids_by_key(["card late", "refund?!"]) == {
        ("1", "card late"): a,
        (None, "card late"): a,
        ("5", "refund?!"): b,
        (None, "refund?!"): b,
    }
    assert store.items.texts([one, 999]) == {one: "Card late"}
    assert store.items.texts(cached=True) == {
        one: "Card late",
        two: "Card still late",
        three: "Refund?",
    }
    assert len(store.items.texts()) == 5
    assert ("4", "Card is late") in store.items.identities()
    assert store.items.count() == 5 and store.items.count(source="llm") == 3
    assert store.items.count(cached=True) == 3 and store.items.count(cached=False) == 2
    assert (
        store.items.count(label_ids=[b]) == 2
        and store.items.count(source="cache", label_ids=[a]) == 1
    )
    assert store.items.count_by_source() == {"llm": 3, "cache": 1, "exact": 1}
    assert store.items.tokens() == 3 * 5 + 2
    summaries = store.items.summaries()
    assert [(s.id, s.source, s.matched_item) for s in summaries] == [
        (one, "llm", None),
        (two, "llm", None),
        (three, "llm", None),
        (hit, "cache", one),
        (exact, "exact", three),
    ]
    assert all(isinstance(s.created_at, float) for s in summaries)
    assert sorted(store.items.ext_labels()) == [("1", a), ("2", a), ("3", b), ("4", a), ("5", b)]
    assert sorted(store.items.hit_matches()) == [("4", "1"), ("5", "3")]
    with store.write(label_space=True) as c:
        store.items.relabel(c, [one], b)
        store.items.relabel_hits(c, [one], b, was=b)  # the hit is not at b: stays
        store.items.relabel(c, [two], b, was=b)  # not at b: stays
        store.items.relabel_hits(c, [three], a)
    assert store.items.label_ids([one, two, hit, exact]) == {one: b, two: a, hit: a, exact: a}
    with store.write(label_space=True) as c:
        store.items.relabel_raw(c, "card_arrival", b, [a])  # the hit follows its raw label
        store.items.relabel_raw(c, "card_late", b, [b])  # not there: stays
    assert store.items.label_ids([one, two, hit]) == {one: b, two: a, hit: b}


def test_members_are_read_by_label_and_raw_label(store):
    a, b = _seed(store)
    one, two, three, hit, exact = _items(store, a, b)
    assert store.members.label_counts() == {a: 3, b: 2}
    # the LLM's answers only: the cache hit that reused card_arrival is not the LLM again
    assert store.members.raw_label_uses() == {"card_arrival": 1, "card_late": 1, "refund": 1}
    assert store.members.texts(["card_arrival", "card_late"], 5) == ["Card late", "Card still late"]
    assert store.members.texts(["card_arrival", "card_late"], 1) == ["Card late"]
    assert store.members.typical_texts(["card_arrival", "card_late"], _vec(2), 1) == [
        "Card still late"
    ]
    assert store.members.typical_texts(["nope"], _vec(2), 1) == []
    assert store.members.typical_label_texts([a], _vec(1), 2) == ["Card late", "Card still late"]
    assert store.members.label_texts([a, b], 2) == ["Card late", "Card still late"]
    assert [i.id for i in store.members.newest([a], 2)] == [hit, two]
    assert [(m.id, m.label_id, m.raw_label) for m in store.members.cached([a])] == [
        (one, a, "card_arrival"),
        (two, a, "card_late"),
    ]
    np.testing.assert_allclose(
        np.frombuffer(store.members.cached([b])[0].vector, np.float32), _vec(3)
    )
    vectors = {v.id: v for v in store.members.vectors()}
    assert set(vectors) == {one, two, three, hit, exact}  # the exact hit takes its original's
    assert vectors[exact].vector == vectors[three].vector and vectors[exact].label_id == b
    raw = sorted((r.raw_label, r.label_id) for r in store.members.raw_label_vectors())
    assert raw == [("card_arrival", a), ("card_arrival", a), ("card_late", a), ("refund", b)]


def test_corrections_and_rechecks(store):
    from canonlabel.store import Correction, Recheck

    a, b = _seed(store)
    one, two, three, hit, exact = _items(store, a, b)
    moved = [Correction(one, a, b, 0.8), Correction(two, a, b, 0.6, kept=True)]
    with store.write(label_space=True) as c:
        store.corrections.write(c, moved, [])
    assert store.corrections.all() == {one: moved[0], two: moved[1]}
    assert store.corrections.counts() == {b: 1}  # the kept one is not counted
    assert store.items.label_ids([one, two, hit]) == {one: b, two: a, hit: b}  # the hit follows
    # a moved item is no example of its new label (the LLM misread it once); a kept one is
    assert store.members.typical_label_texts([b], _vec(1), 5) == ["Refund?"]
    assert store.members.typical_label_texts([a, b], _vec(2), 5) == ["Card still late", "Refund?"]
    entry = store.log.last_undoable()
    assert entry.kind == "consensus" and entry.details()["moved"][0] == [one, a, b, 0.8]
    with store.write(label_space=True) as c:  # back to the LLM's answer, unlogged
        store.corrections.write(c, [], [moved[0]], log=False)
    assert set(store.corrections.all()) == {two}
    assert store.items.label_ids([one, hit]) == {one: a, hit: a}
    assert store.log.last_undoable().id == entry.id
    store.corrections.save_rechecks([Recheck(one, b, True), Recheck(two, b, False)])
    store.corrections.save_rechecks([Recheck(one, b, False)])  # a new answer replaces it
    assert store.corrections.rechecks() == {
        one: Recheck(one, b, False),
        two: Recheck(two, b, False),
    }


def test_failures_are_listed_and_counted(store):
    with store.write() as c:
        store.failures.record(c, ext_id="x", text_key="k", text="t", kind="backend", error="e")
        store.failures.record(c, ext_id=None, text_key="j", text="u", kind="rejected", error="f")
    assert store.failures.ext_ids() == {"x", None}
    assert store.failures.count() == 2
    assert store.failures.paid(["k", "j"]) == {"j": ("rejected", "f")}


def test_the_hierarchy_is_replaced_whole(store):
    a, b = _seed(store)
    store.hierarchy.save([(1, 1, "cards", 2, 3), (2, 2, "all", None, 5)], [(a, 1), (b, 1)])
    store.hierarchy.save([(1, 1, "cards", None, 3)], [(a, 1)])
    parents, links = store.hierarchy.rows()
    assert [tuple(r) for r in parents] == [(1, 1, "cards", None, 3)]
    assert [tuple(r) for r in links] == [(a, 1)]


def test_categories_and_their_labels(store):
    a, b = _seed(store)
    with store.write() as c:
        store.categories.save(c, "cards", "Card things", ["x"], "h1", b"\0" * 4, b"\1" * 4)
        store.categories.save(c, "money", "Money", [], "h2", b"\2" * 4, None)
        store.categories.save(c, "cards", "Cards", [], "h3", b"\3" * 4, None)  # replaces it
    assert store.categories.hashes() == {"cards": "h3", "money": "h2"}
    assert [(v.name, bytes(v.vector), v.examples_vector) for v in store.categories.vectors()] == [
        ("cards", b"\3" * 4, None),
        ("money", b"\2" * 4, None),
    ]
    with store.write() as c:
        store.categories.delete(c, "money")
        store.categories.map_labels(c, [(a, "cards", 0.9, "embedding"), (b, "other", 0.1, "llm")])
        store.categories.map_labels(c, [(a, "cards", 0.9, "embedding")])  # replaces all
    assert store.categories.hashes() == {"cards": "h3"}
    assert store.categories.of_labels() == {a: "cards"}


def test_annotations_by_text_taxonomy_and_cap(store):
    assert store.annotations.get("k", "tax", 2) is None
    store.annotations.save("k", "tax", 2, ["a", "b"])
    store.annotations.save("k", "tax", 2, ["b"])
    store.annotations.save("k", "tax", 1, [])
    assert store.annotations.get("k", "tax", 2) == ["b"]
    assert store.annotations.get("k", "tax", 1) == []
    assert store.annotations.get("k", "other", 2) is None


def test_projection_places_items_once(store):
    a, b = _seed(store)
    one, two, three, hit, _ = _items(store, a, b)  # the exact hit has no vector
    assert [i for i, _ in store.projection.unplaced()] == [one, two, three, hit]
    with store.write() as c:
        store.projection.save(c, [(one, 0.5, 1.5), (two, 2.0, 3.0)])
        store.projection.save(c, [(two, 2.5, 3.5)])  # moved
    assert store.projection.positions() == {one: (0.5, 1.5), two: (2.5, 3.5)}
    placed = store.projection.placed()
    assert [(p.x, p.y) for p in placed] == [(0.5, 1.5), (2.5, 3.5)]
    np.testing.assert_allclose(np.frombuffer(placed[0].vector, np.float32), _vec(1))
    assert next(i for i, _ in store.projection.unplaced()) == three
    store.projection.clear()
    assert store.projection.positions() == {}


def _schema(store) -> list:
    if store.shared:
        return store.query(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, "
            "column_default, is_identity FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ) + store.query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "ORDER BY indexname"
        )
    return store.query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


def _old_store(store_url: str, tmp_path, version: int) -> str:
    """A new location holding a store built up to schema ``version``, as an older
    canonlabel left it."""
    from canonlabel.store.schema import upgrade

    if not store_url.startswith("postgres"):
        import sqlite3

        path = str(tmp_path / f"v{version}.db")
        conn = sqlite3.connect(path)
        for v in range(version):
            conn.executescript(f"BEGIN;{upgrade('sqlite', v)}PRAGMA user_version={v + 1};COMMIT;")
        conn.close()
        return path
    import uuid

    import psycopg

    from tests.conftest import _with_database

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = _with_database(store_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        for v in range(version):
            conn.execute(upgrade("postgres", v))
        conn.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(version),))
    return url


@pytest.mark.parametrize("version", [1, 7])
def test_an_older_store_is_upgraded_by_the_same_steps(store, store_url, tmp_path, version):
    from canonlabel.store import SCHEMA_VERSION

    old = open_store(_old_store(store_url, tmp_path, version))
    try:
        old.bind_embedder("test", DIM)
        assert _schema(old) == _schema(store)  # as if it had been made today
        if old.shared:
            assert old.meta()["schema_version"] == str(SCHEMA_VERSION)
        else:
            assert old.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        a, b = _seed(old)
        _items(old, a, b)
        assert old.items.count() == 5 and old.integrity_check() == "ok"
    finally:
        old.close()


def test_answer_and_vector_caches(tmp_path):
    from canonlabel.store.caches import AnswerCache, VectorCache

    answers = AnswerCache(tmp_path / "sub" / "answers.db")
    assert answers.get("k") is None
    answers.put("k", "refund", 10, 2)
    answers.put("k", "card", 11, 3)
    assert AnswerCache(tmp_path / "sub" / "answers.db").get("k") == ("card", 11, 3)
    vectors = VectorCache(tmp_path / "vectors.db")
    vectors.put([(f"k{i}", bytes([i % 256])) for i in range(600)])  # more than one query's worth
    found = VectorCache(tmp_path / "vectors.db").get([f"k{i}" for i in range(0, 700, 2)] + ["k0"])
    assert len(found) == 300 and found["k598"] == bytes([598 % 256])
