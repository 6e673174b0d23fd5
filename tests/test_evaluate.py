import json
from pathlib import Path

import numpy as np

from canonlabel import Settings
from canonlabel.calibrate import recommend_cache, recommend_labels, sweep_cache, sweep_labels
from canonlabel.evaluate import EvalData, evaluate
from canonlabel.testing import FakeLabeler, HashEmbedder
from canonlabel.types import Grouping
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data" / "banking77_200.jsonl"


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_calibration_recovers_a_planted_cache_threshold():
    rng = np.random.default_rng(0)
    dim, per = 256, 12
    base = _unit(rng.normal(size=(6, dim)))
    centers = []
    for b in base:  # twin classes whose centres have cosine 0.8
        other = _unit(rng.normal(size=dim) - (rng.normal(size=dim) @ b) * b)
        other = _unit(other - (other @ b) * b)
        centers += [b, _unit(0.8 * b + 0.6 * other)]
    vectors, gold = [], []
    for c, center in enumerate(centers):
        for _ in range(per):
            vectors.append(_unit(center + rng.normal(size=dim) * 0.012))
            gold.append(c)
    order = rng.permutation(len(gold))
    vectors = np.asarray(vectors, dtype=np.float32)[order]
    gold = [gold[i] for i in order]
    rows = sweep_cache(vectors, gold)
    rec = recommend_cache(rows, 0.95)
    # twins sit at cosine ~0.77 (0.8 x within-class 0.965): the cut must land just above
    assert rec["reached_target"] and 0.75 <= rec["min_similarity"] <= 0.9
    low = next(r for r in rows if r["min_similarity"] == 0.7)
    assert low["hit_precision"] < 0.95  # below the plant, twins collide


def test_calibration_label_sweep_prefers_merging_variants():
    emb = HashEmbedder(512)
    raw = [
        "card_arrival",
        "card_arrival_status",
        "exchange_rate",
        "exchange_rate_fee",
        "pin_change",
        "pin_change_request",
    ] * 5
    gold = ["card", "card", "rate", "rate", "pin", "pin"] * 5
    rows = sweep_labels(raw, gold, emb)
    best = recommend_labels(rows)
    assert best["labels"] == 3 and best["ari"] == 1.0


def test_small_end_to_end_eval_with_fake_llm(tmp_path):
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    data = EvalData.build([r["text"] for r in rows], [r["labels"][0] for r in rows], HashEmbedder())
    report = evaluate(
        data,
        ["llm-only", "seed", "canonlabel", "kmeans-k"],
        FakeLabeler(),
        Settings(db=tmp_path / "x.db"),
        repeats=2,
    )
    s = report["strategies"]
    assert s["llm-only"]["llm_calls"] == 200 and s["llm-only"]["hit_rate"] == 0
    # the cache saves labelling calls; adjudication (counted too) spends a bounded share
    c = s["canonlabel"]
    labelling = c["llm_calls"] - c["adjudication_calls"] - c["recheck_calls"]
    share = Grouping().adjudication_share  # the FakeLabeler declares none of its own
    # doubled for an LLM the consensus found wrong (a "same" then takes two answers)
    assert labelling < 200 and c["adjudication_calls"] <= 2 * share * labelling + 1
    assert s["canonlabel"]["hit_precision"] is not None
    for name in s:
        assert 0 <= s[name]["nmi"] <= 1 and "order_invariance_ari" in s[name]
    assert s["kmeans-k"]["labels"] <= s["kmeans-k"]["gold_labels"]
    assert len(report["curves"]["canonlabel"]["items"]) == 200
    # the curve counts LLM calls as the classifier does (audits included), not misses
    curve = report["curves"]["canonlabel"]["llm_calls"]
    assert curve == sorted(curve) and labelling <= curve[-1] <= s["canonlabel"]["llm_calls"]
    assert s["canonlabel"]["router"]["head"]["audits"] is not None
    assert "router_share" in s["canonlabel"] and s["canonlabel"]["llm_calls_per_1000"] == []


def test_calls_per_1000_is_the_calls_in_each_full_block():
    from canonlabel.evaluate import calls_per_1000

    cumulative = [min(i, 1500) // 2 for i in range(1, 2501)]  # half the items call the LLM
    assert calls_per_1000(cumulative) == [500, 250]  # the partial last block is left out


def test_eval_and_calibrate_cli(tmp_path):

    out = tmp_path / "ev"
    r = run_cli(
        "eval",
        str(DATA),
        "--llm",
        "fake",
        "--embedder",
        "hash",
        "--limit",
        "80",
        "--strategies",
        "seed,canonlabel,kmeans-k,hdbscan",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["strategies"]) == {"seed", "canonlabel", "kmeans-k", "hdbscan"}
    assert (out / "report.md").exists() and (out / "hit_rate_llm_calls.png").exists()
    cfg = tmp_path / "c.yaml"
    r = run_cli(
        "calibrate",
        str(DATA),
        "--llm",
        "fake",
        "--embedder",
        "hash",
        "--limit",
        "100",
        "--llm-sample",
        "50",
        "--out",
        str(tmp_path / "cal"),
        "--write-config",
        str(cfg),
    )
    assert r.returncode == 0, r.stderr
    assert "min_similarity" in cfg.read_text()
    r = run_cli(
        "classify",
        str(DATA),
        "--llm",
        "fake",
        "--embedder",
        "hash",
        "--limit",
        "5",
        "--db",
        str(tmp_path / "db"),
        "--config",
        str(cfg),
    )
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_similarty: 0.9\n")
    r = run_cli(
        "classify", str(DATA), "--llm", "fake", "--db", str(tmp_path / "db"), "--config", str(bad)
    )
    assert r.returncode == 2 and "unknown settings" in r.stderr
