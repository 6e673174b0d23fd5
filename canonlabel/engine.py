"""The pipeline engine: items go in with :meth:`Engine.submit`, results come out through
a callback as soon as each is known and committed.

Stages per item: normalise -> resume/exact lookup -> embed (batched) -> cache search ->
either a hit, a *follower* of a near-duplicate miss already waiting for the LLM, or a
*leader*: one LLM call, canonicalisation, one committed transaction. Leaders wait in a
queue and run at most ``concurrency`` at a time; candidates are computed when a leader is
dispatched, so they include every label committed before it. The engine is used by one
thread at a time (``classify_many`` or the service's worker); only LLM calls run in threads.

On a shared store (PostgreSQL) several engines in several processes write one label space:
a leader first *claims* its text key, so a text another process is already asking about
is *parked* until that answer is committed (then it is an exact hit), never paid twice;
canonicalisation runs under the store's label-space lock after reading the labels other
processes committed; and each engine takes in their labels and hits every
``sync_seconds``.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import numpy as np

from canonlabel.canon import label_text
from canonlabel.delivery import Callback, Item, followers_of
from canonlabel.errors import BudgetError, LabelError, RejectedTextError
from canonlabel.lookup import Lookup
from canonlabel.types import Result

if TYPE_CHECKING:
    from canonlabel.memory import Asked, Memory

log = logging.getLogger(__name__)
_PARK_POLL = 0.05  # seconds between looks for another process's answer to a parked text


class Engine(Lookup):
    """Long-lived pipeline state: leaders waiting or in flight, and their followers."""

    def __init__(self, clf: Memory, concurrency: int = 1, background: bool = False) -> None:
        self.clf = clf
        self.background = background  # consolidation's LLM questions off the engine thread
        self.settings = clf.settings
        # a labeler that groups several texts per call needs that many questions open
        self.concurrency = max(1, concurrency) * getattr(clf.labeler, "workers", 1)
        self.waiting: deque[Item] = deque()
        self.futures: dict[Future, Item] = {}
        self.by_key: dict[str, Item] = {}  # leaders not yet answered, by text key
        self._leaders: list[Item] = []
        self._leader_vecs = np.zeros((0, clf.dim), dtype=np.float32)
        self._callback: dict[Item, Callback] = {}
        self.pool: ThreadPoolExecutor | None = None
        self._rng = random.Random(0)  # audit sampling: reproducible runs
        self.parked: list[Item] = []  # leaders whose text another process is asking about
        self._unparked = 0.0
        self._side: ThreadPoolExecutor | None = None  # adjudication questions
        self._adjudicating: Future | None = None

    @property
    def adjudicating(self) -> bool:
        """Whether a consolidation's LLM questions are out (poll settles them when done)."""
        return self._adjudicating is not None

    @property
    def busy(self) -> int:
        """Leaders waiting, in flight or parked (their followers resolve with them)."""
        return len(self.waiting) + len(self.futures) + len(self.parked)

    def close(self) -> None:
        if self._adjudicating is not None:
            self._settle_adjudication()  # waits for the questions still out
        if self._side is not None:
            self._side.shutdown(wait=True)
            self._side = None
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

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
        hits: list[tuple[Item, Result, dict]] = []
        self.clf.sync()
        items = self._normalise(texts, ids, tokens, on_done, vectors)
        pending = self._lookup(items, hits)
        if pending:
            self._embed(pending)
            self._search(pending, hits)
        self._commit_hits(hits)
        self._dispatch()

    def poll(self, timeout: float | None = None) -> None:
        """Finish completed LLM calls (waiting up to ``timeout``; None blocks for one)."""
        self.clf.sync()
        self._unpark()
        self._dispatch()
        if not self.futures:
            self._consolidate_when_due()  # settles adjudication that finished meanwhile
            if self.parked:  # another process is answering them: look again shortly
                time.sleep(_PARK_POLL if timeout is None else min(timeout, _PARK_POLL))
            return
        done, _ = wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            self._finish(self.futures.pop(future), future.result())
        self._consolidate_when_due()
        self._maybe_train()
        self._dispatch()

    def _maybe_train(self) -> None:
        router = self.clf.router
        if router is not None and router.due(len(self.clf.cache)):
            keys, vectors = self.clf.cache.snapshot()
            router.train(keys, vectors, self.clf.store)

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
            self.clf.consolidate()
            return
        questions = self.clf.adjudication_job()
        if questions is None:
            self.clf.consolidate(adjudication_budget=0)
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
            self.clf.record_adjudication(calls)
            self.clf.consolidate(adjudication_budget=0)
        finally:  # `adjudicating` stays true until the answers are counted and applied
            self._adjudicating = None

    @property
    def consolidation_due(self) -> bool:
        """After ``consolidate_every`` new raw labels, or ``consolidate_growth`` times the
        raw labels known at the last consolidation if that is more (so the total work
        grows like n log n, not n^2)."""
        s, last = self.settings, self.clf.consolidated_at
        due = max(s.consolidate_every, int(s.consolidate_growth * last))
        return s.consolidate_every > 0 and len(self.clf.space.aliases) - last >= due

    # -- leaders ------------------------------------------------------------------------
    def _lead(self, it: Item) -> None:
        self.by_key[it.key] = it
        n = len(self._leaders)
        if n == len(self._leader_vecs):
            grown = np.zeros((max(64, 2 * n), self.clf.dim), dtype=np.float32)
            grown[:n] = self._leader_vecs[:n]
            self._leader_vecs = grown
        self._leader_vecs[n] = it.vector
        self._leaders.append(it)
        self.waiting.append(it)

    def _unlead(self, it: Item) -> None:
        self.by_key.pop(it.key, None)
        n = len(self._leaders)
        i = self._leaders.index(it)
        self._leaders.pop(i)
        self._leader_vecs[i : n - 1] = self._leader_vecs[i + 1 : n]

    def _dispatch(self) -> None:
        cap = self.settings.max_llm_calls
        while self.waiting and len(self.futures) < self.concurrency:
            it = self.waiting.popleft()
            if cap is not None and self.clf.counters["llm_calls"] + len(self.futures) >= cap:
                self._over_budget(it, cap)
                continue
            if self.clf.store.shared and not self._claim(it):
                continue
            assert it.vector is not None  # every leader was embedded before its search
            candidates = self.clf.candidates(it.text, it.vector)
            # The router's guess is the likeliest existing label, but only an LLM that is
            # shown labels sees it: one that copies whatever it is shown (the bundled 270M
            # model) would answer by the guess, so its audits would confirm the head and
            # the same text's raw label would depend on what came before it.
            if it.guess is not None and self.clf.shown_candidates() > 0:
                guess = self.clf.space.name(it.guess[0])
                if guess not in candidates:
                    candidates = (guess, *candidates)
            if self.pool is None:
                self.pool = ThreadPoolExecutor(
                    self.concurrency, thread_name_prefix="canonlabel-llm"
                )
            self.futures[self.pool.submit(self.clf.ask, it.text, candidates, it.vector)] = it

    # -- claims (shared stores) ----------------------------------------------------------
    def _claim(self, it: Item) -> bool:
        """Claim ``it``'s text key before paying for it; park it if another process holds
        the claim, and settle it if that process already committed an answer."""
        if not self.clf.store.claim(it.key):
            self.parked.append(it)
            return False
        if self._settle_elsewhere([it]):  # answered between our lookup and the claim
            self.clf.store.release(it.key)
            return False
        return True

    def _unpark(self) -> None:
        if not self.parked or time.monotonic() - self._unparked < _PARK_POLL:
            return
        self._unparked = time.monotonic()
        parked, self.parked = self.parked, []
        settled = set(self._settle_elsewhere(parked))
        # the rest try their claim again: its holder may have failed or died
        self.waiting.extendleft(reversed([it for it in parked if it not in settled]))

    def _settle_elsewhere(self, items: list[Item]) -> list[Item]:
        """Resolve items another process answered (an exact hit) or failed for good."""
        store, clf = self.clf.store, self.clf
        rows = store.items.by_text_key([it.key for it in items])
        failed = (
            {}
            if self.settings.retry_failed
            else store.failures.paid([it.key for it in items if it.key not in rows])
        )
        clf.know([row.label_id for row in rows.values()])
        hits, settled = [], []
        for it in items:
            if (row := rows.get(it.key)) is not None:
                self._unlead(it)
                hits.append(self._hit(it, row.label_id, row.raw_label, "exact", 1.0, row.id))
                hits += [
                    self._hit(f, row.label_id, row.raw_label, how, sim, row.id)
                    for f, sim, how in followers_of(it)
                ]
                settled.append(it)
            elif it.key in failed:
                kind, message = failed[it.key]
                error = (RejectedTextError if kind == "rejected" else LabelError)(message, [])
                self._fail_withfollowers_of(it, error)
                settled.append(it)
        self._commit_hits(hits)
        return settled

    def _over_budget(self, it: Item, cap: int) -> None:
        error = BudgetError(
            f"the LLM call budget ({cap}, --max-llm-calls) is spent; the item is not "
            "stored, so a later run with a larger budget labels it"
        )
        self._fail_withfollowers_of(it, error)

    def _fail_withfollowers_of(self, it: Item, error: Exception) -> None:
        self._unlead(it)
        self._fail(it, error)
        for follower, _, _ in followers_of(it):
            self._fail(follower, error)

    def _finish(self, it: Item, asked: Asked) -> None:
        clf, store = self.clf, self.clf.store
        c = clf.counters
        c["llm_calls"] += asked.calls
        c["llm_seconds"] += asked.seconds
        c["prompt_tokens"] += asked.usage.prompt_tokens
        c["completion_tokens"] += asked.usage.completion_tokens
        c["cached_tokens"] += asked.usage.cached_tokens
        for event in asked.events:
            c[f"guard_{event}"] += 1
        it.timings["llm"] = asked.seconds
        self._unlead(it)
        if asked.error is not None:
            kind = "invalid_output" if isinstance(asked.error, LabelError) else "backend"
            kind = "rejected" if isinstance(asked.error, RejectedTextError) else kind
            with store.write() as conn:
                store.failures.record(
                    conn,
                    ext_id=it.ext_id,
                    text_key=it.key,
                    text=it.text,
                    kind=kind,
                    error=str(asked.error),
                    outputs=asked.outputs,
                )
            store.release(it.key)
            self._fail(it, asked.error)
            for follower, _, how in it.followers:
                if how == "exact":
                    self._fail(follower, asked.error)
                else:  # a near-duplicate may still get a valid label of its own
                    self._lead(follower)
            return
        raw = asked.raw_label
        assert raw is not None  # an answer without an error has its raw label
        start = time.perf_counter()
        vector = self._raw_vector(raw, asked)
        it.timings["canonicalise"] = time.perf_counter() - start
        start = time.perf_counter()
        label_id, decision, vector, item_id, followers = store.transaction(
            lambda conn: self._canonicalise(conn, it, asked, vector), label_space=True
        )
        it.timings["store"] = time.perf_counter() - start
        store.release(it.key)
        clf.space.commit_raw_label(label_id, decision, vector)
        self._add_to_cache([item_id], [label_id], [it.vector])
        self._cache_hit_rows(followers)
        self._learn(followers)
        self._audited(it, label_id, item_id)
        result = Result(
            text=it.text,
            label=clf.space.names[label_id],
            label_id=label_id,
            raw_label=raw,
            source="llm",
            truncated=it.truncated,
            id=it.ext_id,
            timings=it.timings,
            usage=asked.usage,
        )
        self._resolve(it, result, "llm_items")
        for f, result, _ in followers:
            self._resolve(f, result, f"{result.source}_hits")

    def _canonicalise(self, conn, it: Item, asked: Asked, vector):
        """Inside the label-space transaction: read what other processes committed,
        decide where the raw label goes, insert the answer and its followers' hits."""
        clf, raw = self.clf, asked.raw_label
        assert raw is not None  # only answers without an error get here (see _finish)
        if clf.space.refresh():  # another process rewrote the label space
            clf.sync(force=True)
        if vector is None and raw not in clf.space.aliases:
            vector = self._raw_vector(raw, asked, force=True)
        label_id, decision = clf.space.write_raw_label(
            conn, raw, vector, self.settings.label_similarity
        )
        name = raw if decision.label_id is None else clf.space.names[label_id]
        item_id, followers = self._insert_answer(conn, it, asked, label_id, name)
        return label_id, decision, vector, item_id, followers

    def _raw_vector(self, raw: str, asked: Asked, force: bool = False) -> np.ndarray | None:
        """The embedding of a raw label this process does not know (None for a known one)."""
        if raw in self.clf.space.aliases and not force:
            return None
        start = time.perf_counter()
        vector = asked.label_vector
        if vector is None:
            vector = self.clf.embedder.embed([label_text(raw)])[0]
        self.clf.counters["embed_seconds"] += time.perf_counter() - start + asked.embed_seconds
        return vector

    def _insert_answer(self, conn, it: Item, asked: Asked, label_id: int, name: str):
        """The leader's row and its followers' hits, in one statement batch."""
        row = self._row(it, label_id, asked.raw_label, "llm", None, None)
        row.update(
            vector=it.vector,
            cached=True,
            prompt_tokens=asked.usage.prompt_tokens,
            completion_tokens=asked.usage.completion_tokens,
        )
        # followers point at the leader's item id, known only after its insert
        item_id = self.clf.store.items.insert(conn, [row])[0]
        followers = [
            self._hit(f, label_id, asked.raw_label, how, sim, item_id, name)
            for f, sim, how in followers_of(it)
        ]
        if followers:
            ids = self.clf.store.items.insert(conn, [r for _, _, r in followers])
            followers = [(f, res, {**r, "id": i}) for (f, res, r), i in zip(followers, ids)]
        return item_id, followers
