"""Running a consolidation on a live classifier: the regrouping, the consensus pass and
its second questions, and the adjudication budget they share with the labelling calls.

The algorithms live beside this module (``consolidate``, ``regroup``, ``consensus``,
``adjudicate``); :class:`Consolidation` decides when they may ask the LLM and how much,
and counts what they cost. It works on a :class:`Host` (the classifier's memory): the
host's label space, router and labeler are read at each use, since a reload or a test
replaces them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from typing import Protocol

import numpy as np

from canonlabel.config import Settings
from canonlabel.errors import BackendError, StaleLabelSpaceError
from canonlabel.labelspace import consensus
from canonlabel.labelspace.adjudicate import CONFIRM_ABOVE
from canonlabel.labelspace.consolidate import borderline, consolidate
from canonlabel.labelspace.evidence import gather
from canonlabel.labelspace.regroup import consolidate_items
from canonlabel.labelspace.space import LabelSpace
from canonlabel.llm.base import Labeler
from canonlabel.store import Store
from canonlabel.thresholds import wilson_interval
from canonlabel.types import Grouping

_ALONE_PER_BATCH = 32  # second questions sent one a call, this many per label_batch
SETTLE_PASSES = 10  # regroup-and-consensus passes at most per consolidation (see _settle)
ANSWER_PASSES = 4  # passes that may ask the LLM, at most per consolidation (_consolidate)


class _Router(Protocol):
    def refresh(self) -> None: ...
    def take_disputes(self) -> dict[int, int]: ...


class Host(Protocol):
    """What a consolidation reads and updates on the classifier that owns it."""

    settings: Settings
    store: Store
    space: LabelSpace
    labeler: Labeler
    counters: dict[str, float]
    consolidated_at: int  # raw labels known at the last consolidation

    @property
    def router(self) -> _Router | None: ...
    def sync(self, *, force: bool = False) -> None: ...
    def ensure_labels(self, label_ids) -> None: ...
    def grouping(self) -> Grouping: ...


class Consolidation:
    """Consolidation orchestration for one classifier (see :meth:`run`)."""

    def __init__(self, host: Host, release_memory: Callable[[], None]) -> None:
        self.host = host
        self._release_memory = release_memory

    def run(self, *, dry_run: bool = False, adjudication_budget: int | None = None) -> dict:
        """Regroup every raw label, order-invariantly (see labelspace.consolidate); counts
        its adjudication calls as LLM calls. Without an explicit ``adjudication_budget``
        the calls stay within ``adjudication_share`` of the labelling calls so far."""
        host, store = self.host, self.host.store
        if not dry_run and not store.try_exclusive("consolidate"):
            host.consolidated_at = len(host.space.aliases)  # its result arrives by sync
            return {"skipped": "another process is consolidating", "adjudication_calls": 0}
        try:
            host.sync(force=True)  # plan over every raw label committed so far
            return self._consolidate(dry_run, adjudication_budget)
        except StaleLabelSpaceError as exc:  # a curation landed meanwhile: next time
            host.sync(force=True)
            return {"skipped": str(exc), "adjudication_calls": 0}
        finally:
            if not dry_run:
                store.end_exclusive("consolidate")

    def _consolidate(self, dry_run: bool, budget: int | None = None) -> dict:
        """Passes until one asks the LLM nothing or changes nothing (at most
        ``ANSWER_PASSES``): an answer can join two groups, and the joined group meets new
        borderline neighbours or a contest the pass before could not see. Stopping after
        one pass left questions due that the next consolidation asked, so a consolidation
        with no new text still changed labels (GoEmotions at 10% wrong, one order: 105,
        then 71, 62 and 51 labels)."""
        host = self.host
        known = len(host.space.aliases)
        first = host.store.log.last_id()
        report = last = self._pass(dry_run, budget)
        passes = 1
        while not dry_run and passes < ANSWER_PASSES and _asked_and_changed(last):
            left = None if budget is None else budget - report["adjudication_calls"]
            if left is not None and left <= 0:
                break
            last = self._pass(dry_run, left)
            report = _added(report, last)
            passes += 1
        report["passes"] = passes
        if not dry_run:
            with host.store.write() as c:  # one undo reverts every pass
                host.store.log.group(c, first)
            host.consolidated_at = known
            host.counters["consolidations"] += 1
            if host.router is not None:
                host.router.refresh()
        return report

    def _pass(self, dry_run: bool, budget: int | None) -> dict:
        """One regrouping and consensus pass; records its adjudication calls (the
        allowance of the next pass reads them)."""
        host = self.host
        grouping = host.grouping()
        if grouping.by == "items":
            report = consolidate_items(
                host.space,
                name_weight=grouping.name_weight,
                threshold=grouping.threshold,
                dry_run=dry_run,
            )
        else:
            report = self._consolidate_raw_labels(grouping, dry_run, budget)
        # Grouping by items already labels each item by its text's cluster, not by its
        # answer alone; consensus on top of it would move items the regrouping moves back.
        if host.settings.consensus and grouping.by != "items":
            # a budget of 0 (a finished job resumed) asks nothing
            report["consensus"] = self._consensus(dry_run, ask=budget != 0)
            report["settled_in"] = self._settle(grouping, report["consensus"], dry_run)
            if not dry_run:
                report["labels_after"] = len(host.space)
        report["grouping"] = asdict(grouping)  # which defaults applied (the LLM's or yours)
        self._release_memory()
        self.record(report["adjudication_calls"])
        return report

    def _settle(self, grouping: Grouping, consensus: dict, dry_run: bool) -> int:
        """Regroup and rerun the consensus, asking nothing, while the consensus folds
        labels away (empties and merges them; their raw labels then name the label they
        were merged into and leave the regrouping). Folding only grows, so this ends, and
        it ends where a pass changes nothing: the next consolidation with no new answers
        finds nothing to do. Returns the passes it took (1: none after the first)."""
        passes = 1
        while not dry_run and consensus["emptied_merged"] and passes < SETTLE_PASSES:
            self._consolidate_raw_labels(grouping, dry_run, 0)
            consensus = self._consensus(dry_run, ask=False)
            passes += 1
        return passes

    def _consolidate_raw_labels(self, grouping: Grouping, dry_run: bool, budget) -> dict:
        s = self.host.settings
        allowance, _ = self.allowance()
        return consolidate(
            self.host.space,
            name_weight=grouping.name_weight,
            threshold=grouping.threshold,
            labeler=self.host.labeler,
            adjudication_budget=allowance if budget is None else budget,
            adjudication_floor=s.adjudication_floor,
            adjudication_batch=self._pairs_per_call(),
            adjudication_parallel=s.concurrency,
            dry_run=dry_run,
        )

    # -- the consensus and its second questions -------------------------------------------
    def _consensus(self, dry_run: bool, ask: bool = True) -> dict:
        """Move the LLM answers that the evidence contradicts to the consensus label,
        asking the LLM again about the contested ones the evidence alone does not settle
        (see :mod:`canonlabel.labelspace.consensus`); returns what moved."""
        host, store = self.host, self.host.store
        ids, vectors, stored = store.items.cached(host.space.dim)
        # another process may have committed items under labels made since our sync
        host.ensure_labels(stored.tolist())
        current = store.corrections.all()
        answers = self._answer_labels(ids.tolist(), stored.tolist(), current)
        resolve = host.space.resolve
        rechecks = store.corrections.rechecks()
        overturned, _ = wilson_interval(sum(r.chose for r in rechecks.values()), len(ids))
        stray_moves = overturned >= consensus.STRAY_MOVES_ABOVE  # (low end of its interval)
        disputed = {i: resolve(r.label_id) for i, r in rechecks.items() if r.chose}
        if host.router is not None and not dry_run:
            taken = host.router.take_disputes()
            disputed = {i: resolve(lab) for i, lab in taken.items()} | disputed
        found, contested = consensus.contests(ids, vectors, answers, stray_moves, disputed)
        asked = consensus.to_recheck(found, rechecks) if ask and not dry_run else []
        if asked and host.labeler.id != "none":
            rechecks |= {r.item_id: r for r in self._recheck(asked)}
        answer_of = dict(zip(ids.tolist(), answers.tolist(), strict=True))
        moved, restored = consensus.plan(found, current, rechecks, answer_of)
        merged = 0
        if not dry_run:
            join = host.settings.label_similarity
            merged = consensus.apply(host.space, moved, restored, len(ids), join)
            host.counters["consensus_moved"] += len(moved)
        return {
            "emptied_merged": merged,
            "contested": len(found),
            "rechecked": len(asked),
            "moved": len(moved),
            "restored": len(restored),
            "contested_share": round(contested, 4),
        }

    def _answer_labels(self, ids: list[int], stored: list[int], current: dict) -> np.ndarray:
        """The label of each item's LLM answer: where it is stored, or, for an item the
        consensus moved, the label its raw label names now (the regrouping may have moved
        the raw label since the correction was written)."""
        space = self.host.space
        raw_of = self.host.store.items.raw_labels([i for i in ids if i in current])
        out = []
        for i, label in zip(ids, stored, strict=True):
            if i in current:
                alias = space.aliases.get(raw_of.get(i) or "")
                label = current[i].answer_label if alias is None else alias
            out.append(space.resolve(label))
        return np.array(out, dtype=np.int64)

    def _recheck(self, asked) -> list:
        """Ask the LLM about contested items (one closed question each, up to
        ``RECHECKS_PER_CALL`` in a call); the calls count as LLM calls, and the answers
        are stored so no item is asked twice."""
        host = self.host
        texts = host.store.items.texts([c.item_id for c in asked])
        requests = consensus.recheck_requests(host.space, texts, asked)
        outputs: list[str | None] = [None] * len(requests)
        calls, alone = 0, list[int]()
        for start in range(0, len(requests), consensus.RECHECKS_PER_CALL):
            chunk = requests[start : start + consensus.RECHECKS_PER_CALL]
            try:
                out = host.labeler.complete(
                    consensus.recheck_prompt(chunk),
                    grammar=consensus.recheck_grammar(chunk),
                    max_tokens=16 * len(chunk),
                ).output
                calls += 1
            except NotImplementedError:  # no free completions: one question a call
                alone += range(start, start + len(chunk))
                continue
            except BackendError:
                calls += 1
                continue  # asked again at the next consolidation
            answered = consensus.read_recheck_answers(out, chunk)
            for k in range(len(chunk)):
                if k in answered:
                    outputs[start + k] = answered[k]
                else:
                    alone.append(start + k)
        calls += self._ask_alone(requests, alone, outputs)
        host.counters["llm_calls"] += calls
        host.counters["recheck_calls"] += calls
        found = consensus.read_rechecks(host.space, asked, outputs)
        host.store.corrections.save_rechecks(
            [r for r, out in zip(found, outputs, strict=True) if out]
        )
        return found

    def _ask_alone(self, requests, positions: list[int], outputs: list) -> int:
        """Ask the questions at ``positions`` one a call; returns the calls made."""
        for start in range(0, len(positions), _ALONE_PER_BATCH):
            chunk = positions[start : start + _ALONE_PER_BATCH]
            try:
                answers = self.host.labeler.label_batch([requests[i] for i in chunk])
            except BackendError:
                continue  # asked again at the next consolidation
            for i, answer in zip(chunk, answers, strict=True):
                outputs[i] = answer.output
        return len(positions)

    # -- the adjudication budget -----------------------------------------------------------
    def allowance(self) -> tuple[int, int]:
        """(calls this consolidation may make, calls made so far): the per-consolidation
        cap, within ``adjudication_share`` of the LLM labelling calls paid so far."""
        host = self.host
        meta = host.store.meta()
        spent = int(float(meta.get("adjudication_calls", 0)))
        paid = host.store.items.count(source="llm")
        share, cap = host.grouping().adjudication_share, host.settings.adjudication_budget
        if float(meta.get("llm_error_low", 0.0)) >= CONFIRM_ABOVE:
            # a "same" then takes two answers: twice the calls settle as many pairs
            share, cap = 2 * share, 2 * cap
        return max(0, min(cap, int(share * paid) - spent)), spent

    def job(self) -> Callable[[], int] | None:
        """The LLM questions a consolidation due now would ask, as a function another
        thread may run while this one keeps serving (it touches only the store); returns
        its calls. None when there is nothing to ask."""
        host = self.host
        s = host.settings
        allowance, _ = self.allowance()
        if allowance == 0:
            return None
        host.sync(force=True)
        grouping = host.grouping()
        adj = borderline(
            host.space,
            gather(host.space),
            name_weight=grouping.name_weight,
            threshold=grouping.threshold,
            floor=s.adjudication_floor,
        )
        if not adj.pair_of:
            return None
        return functools.partial(
            adj.ask, host.labeler, allowance, self._pairs_per_call(), s.concurrency
        )

    def record(self, calls: int) -> None:
        """Count adjudication calls as LLM calls, here and in the store's running total
        (which the share-of-calls allowance reads)."""
        if calls:
            store = self.host.store
            spent = int(float(store.meta().get("adjudication_calls", 0)))
            store.set_meta({"adjudication_calls": spent + calls})
            self.host.counters["llm_calls"] += calls
            self.host.counters["adjudication_calls"] += calls

    def _pairs_per_call(self) -> int:
        labeler = self.host.labeler
        return min(self.host.settings.adjudication_batch, getattr(labeler, "max_pairs", 50))


def _asked_and_changed(report: dict) -> bool:
    """Whether a pass asked the LLM something and changed the labels or the items' places
    (so the next pass may find new questions)."""
    done = report.get("consensus", {})
    asked = report["adjudication_calls"] + done.get("rechecked", 0)
    changed = sum(report.get(k, 0) for k in ("moved_raw_labels", "merged_labels"))
    return bool(asked and (changed or done.get("moved") or done.get("restored")))


_SUMMED = (
    "moved_raw_labels",
    "merged_labels",
    "renamed_labels",
    "new_labels",
    "adjudication_calls",
    "seconds",
)


def _added(report: dict, later: dict) -> dict:
    """One summary of two passes: the later pass's state, the changes and calls of both."""
    out = later | {k: report.get(k, 0) + later[k] for k in _SUMMED if k in later}
    if "seconds" in out:
        out["seconds"] = round(out["seconds"], 3)
    out["labels_before"] = report.get("labels_before", later.get("labels_before"))
    if "entry" in report and "entry" not in later:
        out["entry"] = report["entry"]  # what the consolidation wrote, for undo
    if "consensus" in report and "consensus" in later:
        first, second = report["consensus"], later["consensus"]
        out["consensus"] = second | {
            k: first[k] + second[k] for k in ("rechecked", "moved", "restored", "emptied_merged")
        }
    return out
