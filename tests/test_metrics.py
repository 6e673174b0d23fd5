import numpy as np
import pytest
from sklearn import metrics as m

from canonlabel.metrics import (
    cluster_accuracy,
    clustering_scores,
    hit_precision,
    label_set_scores,
    mean_pairwise_ari,
    stable_share,
)


def test_accuracy_hand_computed():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = [1, 1, 2, 2, 2, 3]  # best map: 1->a (2), 2->b (2), 3->c (1) = 5/6
    assert cluster_accuracy(gold, pred) == pytest.approx(5 / 6)
    assert cluster_accuracy(gold, ["x"] * 6) == pytest.approx(3 / 6)  # one label, one match


def test_scores_match_sklearn():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 5, 300).tolist()
    pred = [g if rng.random() < 0.7 else int(rng.integers(0, 8)) for g in gold]
    s = clustering_scores(gold, pred)
    assert s["nmi"] == pytest.approx(m.normalized_mutual_info_score(gold, pred), abs=1e-4)
    assert s["ari"] == pytest.approx(m.adjusted_rand_score(gold, pred), abs=1e-4)
    assert s["v_measure"] == pytest.approx(m.v_measure_score(gold, pred), abs=1e-4)
    assert s["gold_labels"] == 5


def test_hit_precision_and_consistency():
    gold = ["a", "a", "b", "b"]
    assert hit_precision([(1, 0), (3, 0)], gold) == 0.5
    assert hit_precision([], gold) is None
    runs = [["x", "x", "y", "y"], ["p", "p", "q", "q"], ["p", "q", "q", "q"]]
    assert mean_pairwise_ari(runs[:2]) == 1.0
    assert stable_share(runs[:2]) == 1.0
    assert stable_share(runs) == 0.75


def test_label_set_scores():
    s = label_set_scores([["a", "b"], ["c"]], [["a"], ["c"]])
    assert s["exact_match"] == 0.5
    assert s["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
