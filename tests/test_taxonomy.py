import json
import random

import pytest

from canonlabel import taxonomy as tx
from canonlabel.errors import LabelError
from canonlabel.store import SqliteStore
from canonlabel.testing import FakeLabeler, HashEmbedder
from tests.conftest import run_cli

TEXTS = (
    [f"my card has not arrived {i}" for i in range(20)]
    + [f"exchange rate for euros {i}" for i in range(20)]
    + [f"change my pin code {i}" for i in range(20)]
)


def test_parse_entries_is_lenient_and_validates_names():
    out = "1. card_delivery: the card has not arrived\n- Exchange Rate - rates\nnoise\n!!: x"
    entries = tx.parse_entries(out)
    assert [e.name for e in entries] == ["card_delivery", "exchange_rate"]


def test_merge_entries_folds_duplicates_and_caps_size():
    emb = HashEmbedder(512)
    entries = [
        tx.Entry("card_delivery", "card has not arrived"),
        tx.Entry("card_delivery_late", "card has not arrived yet"),
        tx.Entry("exchange_rate", "currency exchange rates"),
        tx.Entry("pin_change", "change the pin"),
    ]
    merged = tx.merge_entries(emb, entries, 0.8)
    assert [e.name for e in merged] == ["card_delivery", "exchange_rate", "pin_change"]
    assert len(tx.merge_entries(emb, merged, 0.99, max_size=2)) == 2


def test_discover_is_order_invariant_and_bounded():
    emb = HashEmbedder()
    a = tx.discover(TEXTS, emb, FakeLabeler(), n_labels=5, sample=30, batch=10)
    shuffled = TEXTS[:]
    random.Random(1).shuffle(shuffled)
    b = tx.discover(shuffled, emb, FakeLabeler(), n_labels=5, sample=30, batch=10)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert 1 <= len(a) <= 5 and sum(bool(e.examples) for e in a) >= 3
    assert tx.overlap(a, b, emb) == 1.0


def test_discover_without_usable_answers_is_a_clear_error():
    llm = FakeLabeler()
    llm.enqueue(*["nothing useful"] * 10)
    with pytest.raises(LabelError, match="no usable labels"):
        tx.discover(TEXTS[:20], HashEmbedder(), llm, n_labels=3, sample=20, batch=10)


def test_annotation_never_leaves_the_taxonomy_and_is_cached(tmp_path):
    entries = [tx.Entry("card_delivery", "x"), tx.Entry("exchange_rate", "y")]
    store = SqliteStore(tmp_path / "a.db")
    llm = FakeLabeler()
    llm.enqueue("card_delivery, made_up_label, card_delivery", "not_in_taxonomy", "nope")
    out = tx.annotate(store, llm, entries, ["my card", "euro rate"], max_labels=2)
    assert out[0] == (["card_delivery"], None, False)
    assert out[1][0] is None and "no taxonomy label" in out[1][1]
    assert llm.history[0].closed and llm.history[0].max_labels == 2
    calls = llm.calls
    again = tx.annotate(store, llm, entries, ["my card"], max_labels=2)
    assert again[0] == (["card_delivery"], None, True) and llm.calls == calls


def test_local_grammar_for_closed_multi_label():
    from canonlabel.llm.llamacpp import label_grammar

    g = label_grammar(("a_b", "c_d"), closed=True, max_labels=3)
    assert 'label ::= cand (", " cand){0,2}' in g and "new" not in g


def test_discover_and_annotate_cli(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")

    tax = tmp_path / "taxonomy.yaml"
    r = run_cli(
        "taxonomy",
        "discover",
        str(src),
        "-o",
        str(tax),
        "--n-labels",
        "4",
        "--sample",
        "30",
        "--llm",
        "fake",
        "--embedder",
        "hash",
    )
    assert r.returncode == 0, r.stderr
    names = {e.name for e in tx.load_taxonomy(tax)}
    out = tmp_path / "ann.jsonl"
    r = run_cli(
        "annotate",
        str(src),
        "--taxonomy",
        str(tax),
        "--max-labels",
        "2",
        "-o",
        str(out),
        "--llm",
        "fake",
        "--db",
        str(tmp_path / "db"),
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 60 and all(set(x.get("labels", [])) <= names for x in rows)
