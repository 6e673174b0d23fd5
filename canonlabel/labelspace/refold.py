"""Folded labels decided again by their later answers.

A label the consensus empties is *folded*: merged into the label its name is nearest to
(:func:`canonlabel.labelspace.consensus.apply`), and its raw labels name that label from
then on, outside the regrouping. That first decision rests on the few answers the label
had (at most ``STRAY`` when the stray rule emptied it) and on a name. Its raw labels keep
being used, though, and a name that an early wrong answer or a rare kind of message
founded is often the right name of many later texts: on Banking77 at 10% wrong answers,
``visa_or_mastercard`` was folded into ``card_arrival`` in one order and every later text
that the LLM called ``visa_or_mastercard`` followed it there, so the two intents joined in
that order and not in the others.

So once a folded label's answers (every LLM answer whose raw label names it, the moved
ones included) outnumber ``STRAY``, they decide, counted apart as one more label in the
consensus evidence (out of fold, as for every answer):

* when most of them are not label issues, they hold together: the label **stands again**
  (its raw labels rejoin the regrouping, which may still join it to another label);
* otherwise it folds into the label the evidence gives them most support, when that label
  has at least ``REFOLD_MARGIN`` times the support of the label it folds into now.

The evidence counts a folded label's answers apart whether it is folded or not, so the
decision made in one pass is the one the next pass makes (a consolidation with nothing new
changes nothing). Each change is logged (kind ``refold``) with the items it moved, so
``undo`` reverts it with the rest of its consolidation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canonlabel.labelspace import consensus

REFOLD_MARGIN = 2.0  # support over the current target's from which a folded label moves
STANDS_BELOW = 0.5  # share of its answers that are label issues below which a label stands


@dataclass(frozen=True)
class Refold:
    """A folded label and where its answers put it: ``into`` a label, or None (it stands
    again); ``answers``: how many decided."""

    label_id: int
    into: int | None
    answers: int


def fold_root(parent: dict[int, int], label: int | None, folded) -> int | None:
    """The first folded label on ``label``'s merge chain (None if there is none)."""
    seen = 0
    while label is not None and seen <= len(parent):
        if label in folded:
            return label
        label = parent.get(label)
        seen += 1
    return None


def refolds(
    item_ids: np.ndarray,
    vectors: np.ndarray,
    answers: np.ndarray,
    fold_of: dict[int, int],
    target: dict[int, int],
) -> list[Refold]:
    """The folded labels whose answers put them elsewhere. ``answers``: each item's answer
    label now; ``fold_of``: item id -> the folded label its answer names; ``target``:
    folded label -> the label it folds into now."""
    if len(item_ids) < consensus.MIN_ITEMS or not fold_of:
        return []
    split = answers.copy()
    for n, item in enumerate(item_ids.tolist()):
        if item in fold_of:
            split[n] = fold_of[item]
    ev = consensus.gather(item_ids, vectors, split)
    issue, _ = consensus.label_issues(ev)
    column = {int(label): c for c, label in enumerate(ev.labels.tolist())}
    apart = np.zeros(len(ev.labels), dtype=bool)
    apart[[column[x] for x in set(fold_of.values())]] = True
    found = []
    for x in sorted(set(fold_of.values())):
        rows = ev.answer == column[x]
        n = int(rows.sum())
        if n <= consensus.STRAY:
            continue  # the fold's first decision (the nearest name) stands
        if issue[rows].mean() < STANDS_BELOW:
            found.append(Refold(x, None, n))
            continue
        support = ev.p[rows].sum(axis=0)
        support[apart] = -1.0  # a folded label is nobody's target
        best = int(support.argmax())
        now = column.get(target[x])
        held = 0.0 if now is None else float(support[now])
        if best != now and support[best] > 0 and support[best] >= REFOLD_MARGIN * held:
            found.append(Refold(x, int(ev.labels[best]), n))
    return found


def apply(space, found: list[Refold], corrected: set[int]) -> int:
    """Merge each folded label where its answers put it (or let it stand), in one
    label-space transaction; the items of its raw labels stored with the label it folded
    into follow it, except items the consensus or a person moved (and the hits that
    followed those). Returns how many labels changed."""
    store = space.store
    emptied = store.log.emptied()
    folded = {label for label in emptied if label in space.parent}
    with space.rewrite() as c:
        for r in found:
            raws = [
                raw
                for raw, label in space.aliases.items()
                if fold_root(space.parent, label, folded) == r.label_id
            ]
            old = space.resolve(r.label_id)
            moved = [
                [u.id, u.label_id]
                for u in store.items.of_raw_labels(sorted(raws))
                if u.label_id != r.label_id
                and space.resolve(u.label_id) == old
                and u.id not in corrected
                and u.matched_item not in corrected
            ]
            store.items.relabel(c, [item for item, _ in moved], r.label_id)
            store.labels.merge(c, r.label_id, r.into)
            if r.into is None:
                store.log.mark_undone(c, emptied[r.label_id])
            detail = {
                "was": space.parent[r.label_id],
                "emptied": emptied[r.label_id] if r.into is None else None,
                "answers": r.answers,
                "items": moved,
            }
            into = r.label_id if r.into is None else r.into
            store.log.add(c, "refold", from_label=r.label_id, into_label=into, detail=detail)
    space.reload()
    return len(found)


def revert(space, entry: int, label_id: int, detail: dict) -> dict:
    """Undo refold entry ``entry``: the label folds where it folded before, and the items
    it moved go back."""
    store = space.store
    with space.rewrite() as c:
        for item, label in reversed(detail["items"]):
            store.items.relabel(c, [item], label, was=label_id)
        store.labels.merge(c, label_id, detail["was"])
        if detail.get("emptied") is not None:
            store.log.mark_undone(c, detail["emptied"], undone=False)
        store.log.mark_undone(c, entry)
    space.reload()
    return {"kind": "undo", "refold": entry, "label": label_id, "moved": len(detail["items"])}
