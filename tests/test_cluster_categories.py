import json
import random

import numpy as np
import pytest

from canonlabel import categories as cat
from canonlabel.cluster import UNCLUSTERED, cluster_texts, representatives, save_to_store
from canonlabel.errors import ConfigError
from canonlabel.labelspace import maintain
from canonlabel.testing import FakeLabeler, HashEmbedder
from tests.conftest import run_cli

TOPICS = {
    "card": [
        "my card has not arrived",
        "card not arrived yet",
        "when will my card arrive",
        "still waiting for my card",
        "new card has not arrived",
        "card delivery delay",
    ],
    "rate": [
        "exchange rate for euros",
        "what exchange rate do you use",
        "euro exchange rate",
        "bad exchange rate applied",
        "exchange rate too high",
        "exchange rate today",
    ],
    "pin": [
        "change my pin",
        "how to change pin",
        "pin change please",
        "reset pin code",
        "forgot my pin code",
        "change pin number",
    ],
}
TEXTS = [t for ts in TOPICS.values() for t in ts]


def test_cluster_is_order_invariant_and_names_clusters():
    emb, llm = HashEmbedder(), FakeLabeler()
    a = cluster_texts(TEXTS, emb, llm, method="kmeans", k=3)
    shuffled = TEXTS[:]
    random.Random(3).shuffle(shuffled)
    b = cluster_texts(shuffled, emb, FakeLabeler(), method="kmeans", k=3)
    by_text_a = dict(zip(TEXTS, zip(a.labels, a.distances)))
    by_text_b = dict(zip(shuffled, zip(b.labels, b.distances)))
    assert by_text_a == by_text_b
    assert a.llm_calls == 3 and len(a.info) == 3
    # each topic lands in one cluster
    for texts in TOPICS.values():
        assert len({by_text_a[t][0] for t in texts}) == 1


def test_hdbscan_noise_assigned_or_unclustered():
    texts = [*TEXTS, "zebra quantum violin"]
    r = cluster_texts(
        texts,
        HashEmbedder(),
        FakeLabeler(),
        method="hdbscan",
        min_cluster_size=3,
        noise_similarity=0.9,
    )
    assert r.labels[-1] == UNCLUSTERED and r.clusters[-1] == -1
    assert r.unclustered >= 1
    r2 = cluster_texts(
        texts,
        HashEmbedder(),
        FakeLabeler(),
        method="hdbscan",
        min_cluster_size=3,
        noise_similarity=-1.0,
    )
    assert r2.unclustered == 0 and r2.noise_assigned >= 1


def test_near_duplicate_cluster_names_are_merged():
    names = iter(["card_delivery", "card_delivery_status", "exchange_rate"])
    llm = FakeLabeler(rule=lambda t, c: next(names))
    r = cluster_texts(TEXTS, HashEmbedder(512), llm, method="kmeans", k=3, label_similarity=0.7)
    assert len({i.label for i in r.info}) == 2


def test_representatives_include_a_diverse_member():
    v = np.eye(4, dtype=np.float32)[[0, 0, 0, 1]] + 0.01
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    reps = representatives(v, np.arange(4), 3)
    assert 3 in reps and len(reps) == 3


def test_clusters_seed_the_streaming_store(make_clf):
    clf, llm = make_clf(min_similarity=0.8)
    r = cluster_texts(TEXTS, clf.embedder, FakeLabeler(), method="kmeans", k=3)
    save_to_store(clf, r, [f"c{i}" for i in range(len(TEXTS))])
    assert len(clf.labels()) == len({i.label for i in r.info})
    hit = clf.classify("my card has not arrived yet")
    assert hit.source == "cache" and llm.calls == 0
    assert hit.label == r.labels[0]


def _cats(tmp_path, extra=""):
    p = tmp_path / "categories.yaml"
    p.write_text(
        """
categories:
  - name: card_delivery
    description: the customer's new card has not arrived
    examples: ["my card has not arrived", "when will my card arrive"]
  - name: exchange_rate
    description: questions about currency exchange rates
  - name: pin_change
    description: changing or resetting the PIN
"""
        + extra
    )
    return p


def test_fixed_categories_with_other_and_top_k(make_clf, tmp_path):
    clf, _ = make_clf()
    out = cat.define(clf.store, clf.embedder, cat.load_categories(_cats(tmp_path)))
    assert out == {"embedded": 3, "unchanged": 0, "removed": 0}
    index = cat.load_index(clf.store, clf.dim)
    texts = ["my card has not arrived yet", "euro exchange rate today", "zebra violin"]
    got = cat.assign(
        index, clf.embedder.embed(texts), texts, min_similarity=0.2, top_k=2, multi_threshold=0.9
    )
    assert [a.categories[0] for a in got] == ["card_delivery", "exchange_rate", "other"]
    assert all(len(a.categories) == 1 for a in got)  # nothing else reaches 0.9
    # editing one category re-embeds only that one
    p = tmp_path / "categories.yaml"
    p.write_text(p.read_text().replace("changing or resetting the PIN", "PIN questions"))
    assert cat.define(clf.store, clf.embedder, cat.load_categories(p))["embedded"] == 1


def test_llm_fallback_is_constrained_to_the_tied_categories(make_clf, tmp_path):
    clf, _ = make_clf()
    cat.define(clf.store, clf.embedder, cat.load_categories(_cats(tmp_path)))
    index = cat.load_index(clf.store, clf.dim)
    llm = FakeLabeler()
    llm.enqueue("something_else")
    text = ["card exchange"]
    got = cat.assign(
        index, clf.embedder.embed(text), text, min_similarity=-1, labeler=llm, margin=1.0
    )
    assert llm.history[0].closed and got[0].source == "embedding"  # outside: ignored
    got = cat.assign(
        index, clf.embedder.embed(text), text, min_similarity=-1, labeler=llm, margin=1.0
    )
    assert got[0].categories[0] in index.names


def test_bad_category_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: a\n- name: a\n")
    with pytest.raises(ConfigError):
        cat.load_categories(bad)
    bad.write_text("just a string")
    with pytest.raises(ConfigError, match="list of categories"):
        cat.load_categories(bad)


def test_mapping_labels_to_categories_touches_no_item(make_clf, tmp_path):
    clf, _ = make_clf(min_similarity=0.95)
    clf.classify_many(TEXTS)
    before = clf.store.conn.execute("SELECT id, label_id FROM items ORDER BY id").fetchall()
    cat.define(clf.store, clf.embedder, cat.load_categories(_cats(tmp_path)))
    out = cat.map_labels(clf)
    assert out["labels"] == len(clf.labels())
    assert all(lab.category for lab in clf.labels())
    after = clf.store.conn.execute("SELECT id, label_id FROM items ORDER BY id").fetchall()
    assert before == after


def test_maintain_merges_drifted_labels_with_log(make_clf):
    names = iter(["card_delivery", "parcel_status"] + ["other_topic"] * 50)
    clf, _ = make_clf(
        labeler=FakeLabeler(rule=lambda t, c: next(names)),
        min_similarity=0.999,
        label_similarity=0.99,
        candidates=0,
    )
    clf.classify_many(["my card has not arrived", "my card has not arrived yet"])
    report = maintain(clf.space, merge_similarity=0.8)
    assert len(report["merged"]) == 1 and len(clf.labels()) == 1
    assert clf.store.count("SELECT count(*) FROM merges WHERE kind = 'merge'") == 1
    clf.undo()
    assert len(clf.labels()) == 2


def test_cluster_and_categories_cli(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")

    out = tmp_path / "c.jsonl"
    r = run_cli(
        "cluster",
        str(src),
        "-o",
        str(out),
        "--method",
        "kmeans",
        "--k",
        "3",
        "--llm",
        "fake",
        "--embedder",
        "hash",
        "--db",
        str(tmp_path / "db"),
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == len(TEXTS) and {"label", "cluster", "distance"} <= set(rows[0])
    r = run_cli(
        "categories",
        "map",
        str(_cats(tmp_path)),
        "--db",
        str(tmp_path / "db"),
        "--embedder",
        "hash",
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "labels", "--db", str(tmp_path / "db"), "--embedder", "hash", "--json", "--by-category"
    )
    assert all(x["category"] for x in json.loads(r.stdout))
    r = run_cli(
        "classify",
        str(src),
        "--categories",
        str(_cats(tmp_path)),
        "--db",
        str(tmp_path / "db2"),
        "--embedder",
        "hash",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["label"] == "card_delivery"
    r = run_cli("maintain", "--db", str(tmp_path / "db"), "--embedder", "hash", "--dry-run")
    assert r.returncode == 0 and "wide" in r.stdout
