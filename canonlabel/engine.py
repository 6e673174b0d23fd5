"""The pipeline engine: items go in with :meth:`Engine.submit`, results come out through
a callback as soon as each is known and committed.

Stages per item: normalise -> resume/exact lookup -> embed (batched) -> cache search ->
either a hit, a *follower* of a near-duplicate miss already waiting for the LLM, or a
*leader*: one LLM call, canonicalisation, one committed transaction. Leaders wait in a
queue and run at most ``concurrency`` at a time; candidates are computed when a leader is
dispatched, so they include every label committed before it. The engine is used by one
thread at a time (``classify_many`` or the service's worker); only LLM calls run in threads.

The engine owns one part per stage, each on the classifier's memory: :class:`Lookup`
(everything before the LLM), :class:`Dispatch` (LLM questions, budget, claims),
:class:`Commit` (an answer's transaction) and :class:`Delivery` (rows, callbacks); the
leaders they share are a :class:`Leaders`. On a shared store (PostgreSQL) several engines
in several processes write one label space (see :mod:`canonlabel.dispatch` and
:mod:`canonlabel.commit`), and each engine takes in their labels and hits every
``sync_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from canonlabel.commit import Commit
from canonlabel.delivery import Callback, Delivery, Hit
from canonlabel.dispatch import PARK_POLL, Dispatch
from canonlabel.lookup import Leaders, Lookup

if TYPE_CHECKING:
    from canonlabel.memory import Memory

log = logging.getLogger(__name__)


class Engine:
    """One classifier's pipeline: its parts, and consolidation when it falls due."""

    def __init__(
        self,
        memory: Memory,
        concurrency: int = 1,
        background: bool = False,
        *,
        consolidate: Callable[..., dict] | None = None,
    ) -> None:
        self.memory = memory
        # the owner's consolidation (a classifier's also refits its hierarchy)
        self.consolidate = consolidate or memory.consolidate
        self.leaders = Leaders(memory.dim)
        self.delivery = Delivery(memory)
        self.lookup = Lookup(memory, self.delivery, self.leaders)
        self.dispatch = Dispatch(memory, self.leaders, self.delivery)
        self.commit = Commit(memory, self.leaders, self.delivery)
        self._side: ThreadPoolExecutor | None = None  # adjudication questions
        self._adjudicating: Future | None = None
        self.start(concurrency, background)

    def start(self, concurrency: int = 1, background: bool = False) -> Engine:
        """Begin a run (a ``classify_many`` call, or a service's life): ``concurrency``
        LLM questions at once, audit sampling from its seed again so the run's audits
        do not depend on earlier runs. ``background``: consolidation's LLM questions
        off the engine thread. Only between runs, with nothing in flight."""
        self.background = background
        self.dispatch.start(concurrency)
        self.lookup.rng.seed(0)
        return self

    @property
    def concurrency(self) -> int:
        return self.dispatch.concurrency

    @property
    def adjudicating(self) -> bool:
        """Whether a consolidation's LLM questions are out (poll settles them when done)."""
        return self._adjudicating is not None

    @property
    def busy(self) -> int:
        """Leaders waiting, in flight or parked (their followers resolve with them)."""
        return self.dispatch.busy

    def close(self) -> None:
        """End a run: settle adjudication still out and release the worker threads."""
        if self._adjudicating is not None:
            self._settle_adjudication()  # waits for the questions still out
        if self._side is not None:
            self._side.shutdown(wait=True)
            self._side = None
        self.dispatch.close()

    # -- submit -----------------------------------------------------------------------------
    def submit(
        self,
        texts: Sequence,
        ids: Sequence,
        tokens: Sequence[Hashable],
        on_done: Callback,
        vectors: Sequence | None = None,
    ) -> None:
        """Take a batch: hits are committed and delivered before this returns; misses
        are queued for the LLM and delivered by :meth:`poll`. ``vectors``, if given, are
        the normalised texts' embeddings (None where not computed)."""
        hits: list[Hit] = []
        self.memory.sync()
        items = self.lookup.normalise(texts, ids, tokens, on_done, vectors)
        pending = self.lookup.lookup(items, hits)
        if pending:
            self.lookup.embed(pending)
            self.lookup.search(pending, hits)
        self.delivery.commit_hits(hits)
        self.dispatch.dispatch()

    def poll(self, timeout: float | None = None) -> None:
        """Finish completed LLM calls (waiting up to ``timeout``; None blocks for one)."""
        dispatch = self.dispatch
        self.memory.sync()
        dispatch.unpark()
        dispatch.dispatch()
        if not dispatch.futures:
            self._consolidate_when_due()  # settles adjudication that finished meanwhile
            if dispatch.parked:  # another process is answering them: look again shortly
                time.sleep(PARK_POLL if timeout is None else min(timeout, PARK_POLL))
            return
        for answer in dispatch.answers(timeout):
            self.commit.finish(answer)
        self._consolidate_when_due()
        self._maybe_train()
        dispatch.dispatch()

    def _maybe_train(self) -> None:
        memory = self.memory
        router = memory.router
        if router is not None and router.due(len(memory.cache)):
            keys, vectors = memory.cache.snapshot()
            router.train(keys, vectors, memory.store)

    # -- consolidation --------------------------------------------------------------------
    def _consolidate_when_due(self) -> None:
        """Consolidate on the engine's thread (the single writer). In a job it happens at
        the item that makes it due, LLM questions included, so a rerun gives the same
        labels. In the service (``background``) the questions run on a side thread and
        requests keep flowing; the consolidation that applies their answers takes a
        fraction of a second."""
        job = self._adjudicating
        if job is not None:
            if job.done():
                self._settle_adjudication()
            return
        if not self.consolidation_due:
            return
        if not self.background:
            self.consolidate()
            return
        questions = self.memory.consolidation.job()
        if questions is None:
            self.consolidate(adjudication_budget=0)
            return
        if self._side is None:
            self._side = ThreadPoolExecutor(1, thread_name_prefix="canonlabel-adjudicate")
        self._adjudicating = self._side.submit(questions)

    def _settle_adjudication(self) -> None:
        job = self._adjudicating
        try:
            assert job is not None  # callers settle only a job that is out
            calls = job.result()
        except Exception:  # a bug there must not stop the stream: consolidate without it
            log.exception("adjudication failed")
            calls = 0
        try:
            self.memory.consolidation.record(calls)
            self.consolidate(adjudication_budget=0)
        finally:  # `adjudicating` stays true until the answers are counted and applied
            self._adjudicating = None

    @property
    def consolidation_due(self) -> bool:
        """After ``consolidate_every`` new raw labels, or ``consolidate_growth`` times the
        raw labels known at the last consolidation if that is more (so the total work
        grows like n log n, not n^2)."""
        s, last = self.memory.settings, self.memory.consolidated_at
        due = max(s.consolidate_every, int(s.consolidate_growth * last))
        return s.consolidate_every > 0 and len(self.memory.space.aliases) - last >= due
