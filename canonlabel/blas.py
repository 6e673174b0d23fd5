"""Small matrix products on one BLAS thread.

The hot path multiplies a handful of query vectors by a few thousand stored ones (the
semantic cache) or by a head's few hundred weights. Split over BLAS threads, such a
product waits for cores that the embedding model's threads still hold: measured on two
busy cores, 64 queries × 2,000 cached items took 24 ms split and 4 ms on one thread, and
the router's head 2–30 ms against 0.2 ms. Big products keep every thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

ONE_THREAD_MACS = 64e6  # multiply-adds: up to about 64 queries × 2,600 items × 384 dims
TINY_MACS = 1e5  # below this, BLAS does not split a product anyway

_controller: list = []  # threadpoolctl's controller, made once (it scans loaded libraries)
_lock = threading.Lock()  # a limit restores what it found: never two at once


@contextlib.contextmanager
def small_product(rows: int, cols: int, dim: int) -> Iterator[None]:
    """Run the product of a ``rows × dim`` and a ``dim × cols`` matrix inside this block
    on one BLAS thread when it is small (and BLAS would split it)."""
    macs = float(rows) * cols * dim
    if not TINY_MACS <= macs <= ONE_THREAD_MACS:  # big: every thread; tiny: never split
        yield
        return
    with _lock:
        if not _controller:
            try:
                from threadpoolctl import ThreadpoolController

                _controller.append(ThreadpoolController())
            except ImportError:  # (comes with scikit-learn; without it, BLAS decides)
                _controller.append(None)
        if _controller[0] is None:
            yield
            return
        with _controller[0].limit(limits=1, user_api="blas"):
            yield
