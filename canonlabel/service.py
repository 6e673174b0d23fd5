"""The single worker that owns a Classifier for the HTTP service.

Requests from many threads or event loops are queued; one worker thread takes every
request waiting at that moment as one batch (so embeddings are micro-batched), answers
hits at once, keeps up to ``concurrency`` LLM calls in flight through the Engine (near-
duplicates in flight share one call) and performs every store write. Curation and reads
are queued as callables and run between batches, so they see a consistent state.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, cast

from canonlabel.errors import CanonlabelError
from canonlabel.pipeline import Classifier
from canonlabel.types import Result

_STOP = object()


class ServiceClosed(CanonlabelError):
    """The service is shutting down and takes no new work; retry against a live instance."""


class Service:
    def __init__(
        self, clf: Classifier, concurrency: int | None = None, max_batch: int = 256
    ) -> None:
        self.clf = clf
        self.engine = clf.engine.start(concurrency or clf.settings.concurrency, background=True)
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="canonlabel-worker", daemon=True)
        self._thread.start()

    # -- API (any thread) ---------------------------------------------------------------
    def classify(self, text: str, id: str | None = None) -> Future:
        """A future resolving to ``(Result, error or None)``."""
        return self._put(("item", text, id))

    def call(self, fn: Callable[[Classifier], Any], *, exclusive: bool = False) -> Future:
        """Run ``fn(classifier)`` on the worker thread between batches; ``exclusive``
        (curation) first lets every in-flight LLM answer land."""
        return self._put(("call", fn, exclusive))

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking work, finish everything accepted (committed), close the store."""
        self._accepting = False
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self.engine.close()
        self.clf.close()

    def _put(self, message) -> Future:
        if not self._accepting:
            raise ServiceClosed("the service is shutting down")
        future: Future = Future()
        self._queue.put((*message, future))
        return future

    # -- worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping or self.engine.busy or not self._queue.empty():
            batch, calls = [], []
            block = not self.engine.busy and not stopping
            try:
                message = self._queue.get(timeout=0.1 if block else 0.0)
                while True:
                    if message is _STOP:
                        stopping = True
                    elif message[0] == "item":
                        batch.append(message)
                    else:
                        calls.append(message)
                    if len(batch) >= self.max_batch:
                        break
                    message = self._queue.get_nowait()
            except queue.Empty:
                pass
            if batch:
                self._submit(batch)
            for _, fn, exclusive, future in calls:
                self._run_call(fn, exclusive, future)
            if self.engine.busy or self.engine.adjudicating:
                self.engine.poll(timeout=0.002)

    def _submit(self, batch) -> None:
        def done(future: Hashable, result: Result, error: Exception | None) -> None:
            cast(Future, future).set_result((result, error))  # the items' tokens: their futures

        try:
            self.engine.submit(
                [m[1] for m in batch], [m[2] for m in batch], [m[3] for m in batch], done
            )
        except Exception as exc:  # a store or embedder failure fails this batch only
            for m in batch:
                if not m[3].done():
                    m[3].set_exception(exc)

    def _run_call(self, fn, exclusive: bool, future: Future) -> None:
        while exclusive and self.engine.busy:  # curation rebuilds in-memory state
            self.engine.poll()
        try:
            if exclusive:  # act on what other replicas of a shared store committed too
                self.clf.sync(force=True)
            future.set_result(fn(self.clf))
        except Exception as exc:
            future.set_exception(exc)
