"""Sending leaders to the LLM: at most ``concurrency`` questions in flight, the call
budget, and on a shared store the claims that keep two processes from paying for one text.

A leader first *claims* its text key, so a text another process is already asking about
is *parked* until that answer is committed (then it is an exact hit), never paid twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, NamedTuple

from canonlabel.asking import Asked, Asker
from canonlabel.delivery import Delivery, Hit, Item, followers_of
from canonlabel.errors import BudgetError, LabelError, RejectedTextError
from canonlabel.lookup import Leaders

if TYPE_CHECKING:
    from canonlabel.memory import Memory

PARK_POLL = 0.05  # seconds between looks for another process's answer to a parked text


class Answer(NamedTuple):
    """A leader's finished LLM question."""

    item: Item
    asked: Asked


class Dispatch:
    """Leaders' LLM questions, from the waiting queue to their answers."""

    def __init__(self, memory: Memory, leaders: Leaders, delivery: Delivery) -> None:
        self.memory = memory
        self.leaders = leaders
        self.delivery = delivery
        self.asker = Asker(memory)
        self.concurrency = 1
        self.futures: dict[Future, Item] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.parked: list[Item] = []  # leaders whose text another process is asking about
        self._unparked = 0.0

    def start(self, concurrency: int) -> None:
        """A new run: up to ``concurrency`` questions at once (times the texts a labeler
        groups per call, since each of its calls needs that many questions open)."""
        self.concurrency = max(1, concurrency) * getattr(self.memory.labeler, "workers", 1)
        self._unparked = 0.0

    @property
    def busy(self) -> int:
        """Leaders waiting, in flight or parked (their followers resolve with them)."""
        return len(self.leaders.waiting) + len(self.futures) + len(self.parked)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def dispatch(self) -> None:
        """Send waiting leaders to the LLM while fewer than ``concurrency`` are out."""
        memory, waiting = self.memory, self.leaders.waiting
        cap = memory.settings.max_llm_calls
        while waiting and len(self.futures) < self.concurrency:
            it = waiting.popleft()
            if cap is not None and memory.counters["llm_calls"] + len(self.futures) >= cap:
                self._over_budget(it, cap)
                continue
            if memory.store.shared and not self._claim(it):
                continue
            assert it.vector is not None  # every leader was embedded before its search
            candidates = memory.candidates(it.text, it.vector)
            # The router's guess is the likeliest existing label, but only an LLM that is
            # shown labels sees it: one that copies whatever it is shown (the bundled 270M
            # model) would answer by the guess, so its audits would confirm the head and
            # the same text's raw label would depend on what came before it.
            if it.guess is not None and memory.shown_candidates() > 0:
                guess = memory.space.name(it.guess.label)
                if guess not in candidates:
                    candidates = (guess, *candidates)
            if self.pool is None:
                self.pool = ThreadPoolExecutor(
                    self.concurrency, thread_name_prefix="canonlabel-llm"
                )
            self.futures[self.pool.submit(self.asker.ask, it.text, candidates, it.vector)] = it

    def answers(self, timeout: float | None) -> Iterator[Answer]:
        """The questions that finished within ``timeout`` (None: wait for one), each
        taken out of flight as the caller reaches it."""
        done, _ = wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            yield Answer(self.futures.pop(future), future.result())

    def fail_with_followers(self, it: Item, error: Exception) -> None:
        self.leaders.unlead(it)
        self.delivery.fail(it, error)
        for follower in followers_of(it):
            self.delivery.fail(follower.item, error)

    def _over_budget(self, it: Item, cap: int) -> None:
        error = BudgetError(
            f"the LLM call budget ({cap}, --max-llm-calls) is spent; the item is not "
            "stored, so a later run with a larger budget labels it"
        )
        self.fail_with_followers(it, error)

    # -- claims (shared stores) ----------------------------------------------------------
    def _claim(self, it: Item) -> bool:
        """Claim ``it``'s text key before paying for it; park it if another process holds
        the claim, and settle it if that process already committed an answer."""
        store = self.memory.store
        if not store.claim(it.key):
            self.parked.append(it)
            return False
        if self._settle_elsewhere([it]):  # answered between our lookup and the claim
            store.release(it.key)
            return False
        return True

    def unpark(self) -> None:
        """Settle parked leaders another process answered; the rest claim again."""
        if not self.parked or time.monotonic() - self._unparked < PARK_POLL:
            return
        self._unparked = time.monotonic()
        parked, self.parked = self.parked, []
        settled = set(self._settle_elsewhere(parked))
        # the rest try their claim again: its holder may have failed or died
        self.leaders.waiting.extendleft(reversed([it for it in parked if it not in settled]))

    def _settle_elsewhere(self, items: list[Item]) -> list[Item]:
        """Resolve items another process answered (an exact hit) or failed for good."""
        memory, store, delivery = self.memory, self.memory.store, self.delivery
        rows = store.items.by_text_key([it.key for it in items])
        failed = (
            {}
            if memory.settings.retry_failed
            else store.failures.paid([it.key for it in items if it.key not in rows])
        )
        memory.ensure_labels([row.label_id for row in rows.values()])
        hits: list[Hit] = []
        settled = []
        for it in items:
            if (row := rows.get(it.key)) is not None:
                self.leaders.unlead(it)
                hits.append(delivery.hit(it, row.label_id, row.raw_label, "exact", 1.0, row.id))
                hits += [
                    delivery.hit(f, row.label_id, row.raw_label, how, sim, row.id)
                    for f, sim, how in followers_of(it)
                ]
                settled.append(it)
            elif it.key in failed:
                kind, message = failed[it.key]
                error = (RejectedTextError if kind == "rejected" else LabelError)(message, [])
                self.fail_with_followers(it, error)
                settled.append(it)
        delivery.commit_hits(hits)
        return settled
