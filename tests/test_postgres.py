"""What only a shared store has: several classifiers (as several processes would) on one
PostgreSQL database, each with its own in-memory view."""

from __future__ import annotations

import pytest

from canonlabel import Classifier, Settings
from canonlabel.errors import ConfigError, StaleLabelSpaceError, TransientStoreError
from canonlabel.store import open_store
from canonlabel.testing import FakeLabeler, HashEmbedder
from tests.conftest import run_cli

pytest.importorskip("psycopg")


@pytest.fixture
def open_clf(pg_url):
    opened = []

    def make(labeler=None, **settings):
        settings.setdefault("consolidate_every", 0)
        clf = Classifier(
            open_store(pg_url), HashEmbedder(), labeler or FakeLabeler(),
            Settings(db=pg_url, **settings),
        )  # fmt: skip
        opened.append(clf)
        return clf

    yield make
    for clf in opened:
        clf.close()


def test_one_raw_label_from_two_stale_processes_is_one_label(open_clf):
    a, b = open_clf(sync_seconds=3600), open_clf(sync_seconds=3600)  # neither syncs
    first = a.classify("parcel lost somewhere")
    b.labeler.enqueue(first.raw_label)  # b's LLM names another text the same way
    second = b.classify("the courier never came")
    assert second.source == "llm" and second.label_id == first.label_id
    assert a.store.count("SELECT count(*) FROM labels") == 1


def test_labels_and_hits_of_another_process_arrive_by_sync(open_clf):
    a, b = open_clf(), open_clf(sync_seconds=0)
    a.classify_many(["card never arrived", "refund my money"])
    b.classify("reset my pin")  # a submit syncs
    assert {lab.name for lab in b.labels()} >= {lab.name for lab in a.labels()}
    labeler = b.labeler
    hit = b.classify("card never arrived at all")  # near-duplicate of a's item
    assert hit.source == "cache" and labeler.calls == 1


def test_pgvector_index_sees_other_processes_at_once(open_clf):
    a = open_clf(index="pgvector", sync_seconds=3600)
    b = open_clf(index="pgvector", sync_seconds=3600)
    first = a.classify("card never arrived")
    hit = b.classify("card never arrived at all")
    assert hit.source == "cache" and hit.label_id == first.label_id
    assert b.labeler.calls == 0 and len(b.cache) == 1  # hits join the cache with --store-hits


def test_pgvector_index_needs_postgres(tmp_path):
    with pytest.raises(ConfigError, match="postgresql"):
        Classifier(
            open_store(tmp_path / "s.db"), HashEmbedder(), FakeLabeler(),
            Settings(db=str(tmp_path / "s.db"), index="pgvector"),
        )  # fmt: skip


def test_curation_on_a_stale_view_is_refused(open_clf):
    a = open_clf(sync_seconds=3600)
    a.classify_many(["card never arrived", "refund my money", "reset my pin"])
    b = open_clf(sync_seconds=3600)
    ids = [lab.id for lab in b.labels()]
    b.merge(ids[0], ids[1])
    with pytest.raises(StaleLabelSpaceError, match="run the command again"):
        a.merge(ids[1], ids[2])
    a.sync(force=True)
    assert len(a.labels()) == 2
    a.merge(ids[1], ids[2])
    assert len(a.labels()) == 1


def test_one_consolidator_at_a_time(open_clf):
    a, b = open_clf(), open_clf()
    a.classify_many(["card never arrived", "card did not arrive", "refund my money"])
    assert a.store.try_exclusive("consolidate")
    assert "skipped" in b.consolidate()
    a.store.end_exclusive("consolidate")
    assert "skipped" not in b.consolidate()


def test_postgres_start_prints_a_url_the_store_opens(tmp_path):
    pytest.importorskip("pgserver")
    pgdata = tmp_path / "pgdata"
    started = run_cli("postgres", "start", str(pgdata), timeout=120)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    try:
        store = open_store(url)
        store.bind_embedder("hash:256", 256)
        store.close()
    finally:
        assert run_cli("postgres", "stop", str(pgdata), timeout=120).returncode == 0


def test_a_lost_connection_is_a_transient_error(pg_url):
    store = open_store(pg_url)
    try:
        with pytest.raises(TransientStoreError, match="try again"), store.write() as c:
            c.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        assert store.count("SELECT 1") == 1  # the pool replaces the connection
    finally:
        store.close()


def test_grouping_by_items_on_a_shared_store_is_seen_by_others_and_undone(open_clf):
    from tests.test_consolidate import INTENTS, corpus
    from tests.test_regroup import _sloppy

    gold = corpus()
    texts = sorted(gold)
    a = open_clf(
        labeler=_sloppy(gold),
        min_similarity=0.99,
        router=False,
        consolidate_by="items",
        consolidate_threshold=0.6,
        consolidate_name_weight=0.0,
    )
    b = open_clf()
    a.classify_many(texts, texts)
    query = "SELECT ext_id, label_id FROM items"
    before = dict(a.store.query(query))
    report = a.consolidate()
    assert report["by"] == "items" and report["moved_items"] > 0
    after = dict(a.store.query(query))
    assert len({a.space.resolve(label) for label in after.values()}) == len(INTENTS)
    b.space.refresh()  # the other process reads the rewritten label space
    assert {b.space.resolve(label) for label in after.values()} <= set(b.space.names)
    a.undo()
    assert dict(a.store.query(query)) == before
