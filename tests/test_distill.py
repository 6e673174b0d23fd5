import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from canonlabel.distill import (
    DataWarning,
    DistilledClassifier,
    NotFittedError,
    check_training_data,
    tune_thresholds,
)
from canonlabel.testing import HashEmbedder
from tests.conftest import run_cli


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 32))
    labels = ["card", "rate", "pin"]
    X, Y = [], []
    for i in range(n):
        a = i % 3
        x = centers[a] + rng.normal(size=32) * 0.5
        sets = [labels[a]]
        if i % 5 == 0:  # some rows carry a second label
            b = (a + 1) % 3
            x = x + centers[b]
            sets.append(labels[b])
        X.append(x / np.linalg.norm(x))
        Y.append(sets)
    return np.asarray(X, dtype=np.float32), Y


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_fit_predict_save_load_roundtrip(model, tmp_path):
    X, Y = _data()
    clf = DistilledClassifier(model, epochs=40).fit(
        X[:240], Y[:240], X_val=X[240:], val_sets=Y[240:]
    )
    assert clf.classes_ == ["card", "pin", "rate"]
    assert clf.metrics_["micro_f1"] > 0.8
    P = clf.predict_proba(X[240:])
    assert P.shape == (60, 3) and P.dtype == np.float32
    clf.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["labels"] == clf.classes_ and "metrics" in meta
    with np.load(tmp_path / "m" / "weights.npz", allow_pickle=False) as w:
        assert "thresholds" in w
    again = DistilledClassifier.load(tmp_path / "m")
    assert np.array_equal(again.predict_proba(X[240:]), P)  # identical probabilities
    assert again.predict(X[240:]) == clf.predict(X[240:])


def test_not_fitted_error_says_what_to_do():
    with pytest.raises(NotFittedError, match="Call 'fit'"):
        DistilledClassifier().predict_proba(np.zeros((1, 4)))


def test_threshold_tuning_moves_off_half():
    P = np.array([[0.3], [0.35], [0.1], [0.05]], dtype=np.float32)
    Y = np.array([[1], [1], [0], [0]], dtype=np.float32)
    assert 0.1 < tune_thresholds(P, Y)[0] <= 0.3


def test_rules_of_thumb_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        msgs = check_training_data([["a"]] * 3 + [["b"], ["c"], ["d"], ["e"]] * 5)
    assert len(msgs) == 2 and all(issubclass(w.category, DataWarning) for w in caught)
    assert "fewer than 5" in msgs[0] and "(a)" in msgs[0] and "N^2 = 25" in msgs[1]
    assert check_training_data([["a"], ["b"]] * 10) == []


def test_texts_need_an_embedder_and_work_with_one():
    X, Y = _data(60)
    emb = HashEmbedder(32)
    texts = [f"{s[0]} question {i}" for i, s in enumerate(Y)]
    clf = DistilledClassifier(embedder=emb, embedder_id=emb.id).fit(emb.embed(texts), Y)
    assert len(clf.predict(texts)) == 60
    with pytest.raises(Exception, match="embedder"):
        DistilledClassifier().fit(X, Y).predict_proba(["text"])


def _run(tmp_path, *args):
    # a private cache dir, so the embedding cache of the user is neither read nor written
    env = {**os.environ, "CANONLABEL_CACHE_DIR": str(tmp_path / "cache")}
    return run_cli(*args, env=env)


def test_train_and_predict_cli(tmp_path):
    data = Path(__file__).parent / "data" / "banking77_200.jsonl"

    def run(*a):
        return _run(tmp_path, *a)

    r = run("train", str(data), "-o", str(tmp_path / "m"), "--embedder", "hash")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr  # 200 texts for ~70 labels breaks the N^2 rule
    out = tmp_path / "p.jsonl"
    r = run("predict", str(tmp_path / "m"), str(data), "-o", str(out), "--embedder", "hash")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 200 and rows[0]["labels"] and len(rows[0]["top"]) == 3
    r = run("predict", str(tmp_path / "m"), str(data), "--embedder", "hash:64")
    assert r.returncode == 2 and "trained on" in r.stderr


def test_router_mode_sends_only_unsure_items_to_the_pipeline(tmp_path):
    data = Path(__file__).parent / "data" / "banking77_200.jsonl"

    def run(*a):
        return _run(tmp_path, *a)

    assert run("train", str(data), "-o", str(tmp_path / "m"), "--embedder", "hash").returncode == 0
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    r = run(
        "classify",
        str(data),
        "-o",
        str(out),
        "--db",
        str(tmp_path / "db"),
        "--llm",
        "fake",
        "--embedder",
        "hash",
        "--distilled",
        str(tmp_path / "m"),
        "--distilled-threshold",
        "0.5",
        "--summary-json",
        str(summary),
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    s = json.loads(summary.read_text())
    model_rows = [x for x in rows if x["source"] == "model"]
    assert len(rows) == 200 and s["model_items"] == len(model_rows) > 0
    assert s["pipeline_share"] == round(1 - len(model_rows) / 200, 4)
    assert all(x["probability"] >= 0.5 for x in model_rows)
