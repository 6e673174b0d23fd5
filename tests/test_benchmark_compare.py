"""Paired comparison of two consistency results over the same orders."""

from __future__ import annotations

import pytest

from benchmarks.compare import compare, paired
from canonlabel.metrics import mean_pairwise_ari, pairwise_ari


def _result(ari: list[float], labels: list[int]) -> dict:
    figures = {"ari": sum(ari) / len(ari), "per_order": {"ari": ari, "labels": labels}}
    run = {"data": "set", "error_rate": 0.1, "error_kind": "uniform"}
    return {"runs": [run | {"strategies": {"canonlabel": figures}}]}


def test_a_paired_difference_is_judged_by_its_own_spread():
    mean, se = paired([0.80, 0.90, 0.70], [0.82, 0.92, 0.72])
    assert mean == pytest.approx(0.02) and se == pytest.approx(0.0, abs=1e-12)
    mean, se = paired([0.80, 0.90, 0.70], [0.90, 0.80, 0.76])
    assert mean == pytest.approx(0.02) and se > 0.02  # the orders disagree: no difference
    assert paired([0.8], [0.9]) is None and paired([0.8, 0.9], [0.9]) is None


def test_rows_both_results_hold_are_compared_figure_by_figure():
    before = _result([0.80, 0.90, 0.70], [80, 82, 84])
    after = _result([0.82, 0.92, 0.72], [80, 83, 84])
    (line,) = compare(before, after)
    assert line.startswith("set 0.1 uniform canonlabel: ari +0.0200 ± 0.0000*")
    assert "labels +0.3 ± 0.3;" in line and "order_pairs_ari –" in line
    assert compare(before, {"runs": []}) == []


def test_pairwise_ari_lists_every_pair_of_runs_in_order():
    runs = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 0, 1]]
    pairs = pairwise_ari(runs)
    assert len(pairs) == 3 and pairs[0] == pytest.approx(1.0)
    assert mean_pairwise_ari(runs) == pytest.approx(round(sum(pairs) / 3, 4))
    assert mean_pairwise_ari([[0, 1]]) == 1.0
