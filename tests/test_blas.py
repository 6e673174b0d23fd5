"""Small products run on one BLAS thread; the thread count is restored afterwards."""

from __future__ import annotations

import pytest

from canonlabel.blas import small_product

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_a_small_product_runs_on_one_thread_and_the_count_comes_back():
    import numpy as np

    before = _blas_threads()
    with small_product(64, 2000, 384):
        inside = _blas_threads()
        np.ones((64, 384), np.float32) @ np.ones((384, 2000), np.float32)
    assert all(n == 1 for n in inside)
    assert _blas_threads() == before
    with small_product(256, 100_000, 384):  # big: BLAS keeps every thread
        assert _blas_threads() == before
    with small_product(1, 80, 384):  # tiny: not worth a limit
        assert _blas_threads() == before
