"""Consensus labels: an LLM answer that the evidence contradicts does not decide alone.

Every LLM-answered item has an *answer label* (where its raw label went). Its evidence
is what the other LLM-labelled items say about it, never its own answer (out of fold):

* **neighbours**: the answer labels of its ``K`` nearest LLM-labelled items, weighted by
  similarity;
* **centroids**: a nearest-centroid head over every answer label, leave-one-out (the
  item's own vector is taken out of its label's centroid), as a softmax.

Their mean ``p`` is an out-of-fold probability per label. Contested answers are found by
confident learning (Northcutt et al., 2021; what ``cleanlab``'s ``find_label_issues``
does with ``filter_by="both"``): per label ``c`` the threshold ``t_c`` is the mean
``p(c)`` of the items answered ``c``; an answer is contested when ``p`` does not reach
its own label's threshold but reaches that of another label ``c*``, with ``p(c*)`` at
least ``CONTESTED_SUPPORT`` and ``p(answer)`` at most ``CONTESTED_OWN``.

A contested item is asked about once more, as a closed choice between its answer's label
and ``c*`` (:func:`recheck_requests`), and moves to ``c*`` only if the LLM then chooses
it: the evidence and the second answer outvote the first. The answers of a *stray*
label (at most ``STRAY`` answers, sitting in a larger label's neighbourhood) are
contested at a lower support; for an LLM whose second answers have shown it often wrong
(``STRAY_MOVES_ABOVE``) they move without asking: such a label is not a label. Answers
the router's audits disputed (:func:`contests`, ``disputed``) are asked about the same way.
A moved item keeps its raw answer; the store records the correction (what the LLM said,
where the item went, the support) and the cache hits that followed the item follow it. A
label left without items is merged into the label its name is nearest to, so its raw
labels name that label from then on.

The pass is a function of the LLM-labelled items, their answers and the stored second
answers: run again on the same items it moves nothing and asks nothing (idempotent). A
second answer that chose the other label keeps its item moved while the evidence leans
that way; an item moved on the evidence alone goes back to its answer when the evidence
no longer contests it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canonlabel.store import Correction, Recheck

MIN_ITEMS = 50  # LLM-labelled items below which there is too little evidence to overrule
K = 10  # neighbours that vote
MIN_SIMILARITY = 0.5  # neighbours below this say nothing about the item
TEMPERATURE = 0.03  # of the centroid head's softmax over cosine similarities
CONTESTED_SUPPORT = 0.5  # p(c*) from which an answer is contested: the LLM is asked again
CONTESTED_OWN = 0.15  # ... when p(answer) is at most this
STRAY = 2  # a label of at most this many answers is stray when they sit near another
STRAY_SUPPORT = 0.3  # p(c*) from which a stray label's answer is contested
# A stray answer moves without a second question only for an LLM whose second answers
# overturned its first ones on at least this share of its answers: for an LLM that is
# rarely wrong, a tiny label is more often a rare kind of message than a wrong answer
# (NLU++, never-wrong LLM: moving strays unasked took ARI 0.971 -> 0.768).
STRAY_MOVES_ABOVE = 0.03
_CHUNK = 2048


@dataclass(frozen=True)
class Evidence:
    """Out-of-fold label probabilities of the LLM-labelled items."""

    item_ids: np.ndarray  # (N,)
    labels: np.ndarray  # (L,) label id of each column
    answer: np.ndarray  # (N,) column of each item's answer label
    p: np.ndarray  # (N, L)


def answer_columns(answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label id per column, column per item) for answer label ids."""
    labels, column = np.unique(answers, return_inverse=True)
    return labels, column.astype(np.int64)


def neighbour_votes(X: np.ndarray, column: np.ndarray, n_labels: int, k: int = K) -> np.ndarray:
    """(N, L): similarity-weighted share of each item's ``k`` nearest other items per
    answer label (zero rows for an item without a neighbour over ``MIN_SIMILARITY``)."""
    n = len(X)
    votes = np.zeros((n, n_labels), dtype=np.float32)
    k = min(k, n - 1)
    if k <= 0:
        return votes
    for start in range(0, n, _CHUNK):
        sims = X[start : start + _CHUNK] @ X.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # never its own voter
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        s = sims[rows[:, None], near]
        w = np.where(s >= MIN_SIMILARITY, s, 0.0) ** 2
        np.add.at(votes[start : start + len(sims)], (rows[:, None], column[near]), w)
    total = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def centroid_probabilities(X: np.ndarray, column: np.ndarray, n_labels: int) -> np.ndarray:
    """(N, L): softmax over cosine similarity to each answer label's centroid, with the
    item itself left out of its own label's centroid (a label it alone holds gets 0)."""
    n = len(X)
    sums = np.zeros((n_labels, X.shape[1]), dtype=np.float32)
    np.add.at(sums, column, X)
    counts = np.bincount(column, minlength=n_labels)
    norms = np.linalg.norm(sums, axis=1)
    out = np.empty((n, n_labels), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        x, col = X[start : start + _CHUNK], column[start : start + _CHUNK]
        dots = x @ sums.T
        cos = dots / np.maximum(norms, 1e-12)
        rows = np.arange(len(x))
        own = dots[rows, col] - 1.0  # x . (sum - x) for a unit x
        own_norm = np.sqrt(np.maximum(norms[col] ** 2 - 2 * dots[rows, col] + 1.0, 0.0))
        cos[rows, col] = np.where(counts[col] > 1, own / np.maximum(own_norm, 1e-12), -np.inf)
        z = (cos - cos.max(axis=1, keepdims=True)) / TEMPERATURE
        e = np.exp(z)
        out[start : start + len(x)] = e / e.sum(axis=1, keepdims=True)
    return out


def gather(item_ids: np.ndarray, vectors: np.ndarray, answers: np.ndarray) -> Evidence:
    """The evidence about each item from all the others (``answers``: answer label ids)."""
    labels, column = answer_columns(answers)
    X = np.ascontiguousarray(vectors, dtype=np.float32)
    p = 0.5 * neighbour_votes(X, column, len(labels))
    p += 0.5 * centroid_probabilities(X, column, len(labels))
    return Evidence(np.asarray(item_ids), labels, column, p)


def label_issues(ev: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """(issue mask, consensus column) by confident learning: an item is an issue when
    another label ``c*`` reaches its threshold while the answer does not reach its own
    (or holds only this item), and ``p`` gives ``c*`` at least ``CONTESTED_SUPPORT`` and
    the answer at most ``CONTESTED_OWN``. An answer whose label holds at most ``STRAY``
    answers is an issue as soon as a larger label has ``STRAY_SUPPORT``."""
    n, n_labels = ev.p.shape
    if n == 0 or n_labels < 2:
        return np.zeros(n, dtype=bool), ev.answer.copy()
    rows = np.arange(n)
    sums = np.zeros(n_labels)
    np.add.at(sums, ev.answer, ev.p[rows, ev.answer])
    counts = np.bincount(ev.answer, minlength=n_labels)
    thresholds = sums / np.maximum(counts, 1)
    confident = ev.p >= thresholds[None, :]
    confident[rows, ev.answer] = False
    confident &= (counts >= 2)[None, :]  # a label of one answer is nobody's evidence
    best = np.where(confident, ev.p, -1.0).argmax(axis=1)
    own = ev.p[rows, ev.answer]
    issue = (
        confident[rows, best]
        & ((own < thresholds[ev.answer]) | (counts[ev.answer] == 1))
        & (ev.p[rows, best] >= CONTESTED_SUPPORT)
        & (own <= CONTESTED_OWN)
    )
    # "no labels made of stray answers": the few answers of a tiny label are contested
    # by the most probable label that is not tiny, at a lower support
    big = np.where((counts > STRAY)[None, :], ev.p, -1.0)
    big[rows, ev.answer] = -1.0
    near = big.argmax(axis=1)
    stray = ~issue & (counts[ev.answer] <= STRAY) & (big[rows, near] >= STRAY_SUPPORT)
    return issue | stray, np.where(issue, best, np.where(stray, near, ev.answer))


@dataclass(frozen=True)
class Contest:
    """An LLM answer the evidence contradicts: the item, its answer label, the label the
    evidence gives it and that label's support. ``sure``: the evidence alone decides (a
    stray answer of an LLM often wrong, see ``STRAY_MOVES_ABOVE``); otherwise the LLM is
    asked again, as a choice between the two labels, and the item moves only if it then
    chooses the evidence's label: an
    answer is overruled by two votes (the evidence and the LLM's second answer) against
    one. Evidence alone would overrule right answers in regions where two kinds of
    message mix (on Banking77 with an LLM that is never wrong: ARI 0.976 -> 0.959)."""

    item_id: int
    answer_label: int
    label_id: int
    support: float
    sure: bool


def contests(
    item_ids: np.ndarray,
    vectors: np.ndarray,
    answers: np.ndarray,
    stray_moves: bool = False,
    disputed: dict[int, int] | None = None,
) -> tuple[list[Contest], float]:
    """The contested answers among the LLM-labelled items, and their share (none below
    ``MIN_ITEMS`` items). ``disputed`` (item id -> label id) contests answers on other
    grounds: an audit that the router's head and the nearest neighbour contradicted
    together, or a second answer that already chose another label (so its move stands)."""
    if len(item_ids) < MIN_ITEMS:
        return [], 0.0
    ev = gather(item_ids, vectors, answers)
    issue, consensus = label_issues(ev)
    counts = np.bincount(ev.answer, minlength=len(ev.labels))
    found = _disputed(ev, issue, disputed or {})
    for n in np.flatnonzero(issue).tolist():
        support = float(ev.p[n, consensus[n]])
        sure = stray_moves and bool(counts[ev.answer[n]] <= STRAY)
        found.append(
            Contest(
                int(ev.item_ids[n]),
                int(ev.labels[ev.answer[n]]),
                int(ev.labels[consensus[n]]),
                round(support, 4),
                sure,
            )
        )
    return found, float(issue.mean())


def _disputed(ev: Evidence, issue: np.ndarray, disputed: dict[int, int]) -> list[Contest]:
    """Contests for the disputed answers the evidence does not already contest, where it
    leans to the disputed label rather than to the answer. (A stricter filter, leaving out
    every answer whose evidence reaches its label's threshold, was measured and not
    adopted: Banking77 3,000 at 10% wrong, one order, 741 -> 352 head answers.)"""
    row = {int(i): n for n, i in enumerate(ev.item_ids.tolist())}
    column = {int(label): c for c, label in enumerate(ev.labels.tolist())}
    found = []
    for item, label in sorted(disputed.items()):
        n = row.get(item)
        if n is None or issue[n] or int(ev.labels[ev.answer[n]]) == label:
            continue
        c = column.get(label)
        support = 0.0 if c is None else float(ev.p[n, c])
        if support <= ev.p[n, ev.answer[n]]:
            continue  # the evidence leans to the answer: the dispute's maker is wrong
        support = round(support, 4)
        found.append(Contest(item, int(ev.labels[ev.answer[n]]), label, support, False))
    return found


def plan(
    found: list[Contest],
    current: dict[int, Correction],
    rechecks: dict[int, Recheck],
    answer_of: dict[int, int] | None = None,
) -> tuple[list[Correction], list[Correction]]:
    """(corrections to write, corrections to undo): a contested item moves when the
    evidence is sure or the LLM, asked again, chose the evidence's label; every other
    correction stored goes back to the answer (``answer_of``: the label each item's answer
    names now, else the one stored with its correction). An item a person kept never
    moves."""
    moved, restored, decided = [], [], set()
    for c in found:
        old = current.get(c.item_id)
        if old is not None and old.kept:
            decided.add(c.item_id)
            continue
        again = rechecks.get(c.item_id)
        if not (c.sure or (again is not None and again.label_id == c.label_id and again.chose)):
            continue
        decided.add(c.item_id)
        if old is not None and (old.label_id, old.answer_label) == (c.label_id, c.answer_label):
            continue
        if old is not None:  # back to the answer first, so its followers come along
            restored.append(Correction(c.item_id, c.answer_label, old.label_id, old.support))
        moved.append(Correction(c.item_id, c.answer_label, c.label_id, c.support))
    answers = (answer_of or {}) | {c.item_id: c.answer_label for c in found}
    for item, old in current.items():
        if item not in decided and not old.kept:
            answer = answers.get(item, old.answer_label)
            restored.append(Correction(item, answer, old.label_id, old.support))
    return moved, restored


def to_recheck(found: list[Contest], rechecks: dict[int, Recheck]) -> list[Contest]:
    """The contested items the LLM has not been asked about yet (for this label)."""
    return [
        c
        for c in found
        if not c.sure and (c.item_id not in rechecks or rechecks[c.item_id].label_id != c.label_id)
    ]


def recheck_requests(space, texts: dict[int, str], asked: list[Contest]) -> list:
    """One closed question per contested item: which of the two labels fits the text
    (in an order drawn from the item, so neither label is always first)."""
    from canonlabel.types import LabelRequest

    requests = []
    for c in asked:
        names = (space.name(c.answer_label), space.name(c.label_id))
        if c.item_id % 2:
            names = names[::-1]
        requests.append(LabelRequest(texts[c.item_id], names, closed=True))
    return requests


RECHECK = "For each numbered message, choose which of its two labels fits it better."
RECHECKS_PER_CALL = 16  # closed second questions asked in one call


def recheck_prompt(requests: list) -> str:
    """Several second questions in one prompt (the closed ``LabelRequest``s of
    :func:`recheck_requests`), answered as ``N: label`` lines."""
    parts = [
        RECHECK,
        "Answer one line per message with the chosen label exactly, like `1: a_label`.",
    ]
    for n, r in enumerate(requests, 1):
        parts += [f"Message {n}: {' '.join(r.text.split())}", f"Labels: {' | '.join(r.candidates)}"]
    parts.append("Answers:")
    return "\n".join(parts)


def recheck_grammar(requests: list) -> str:
    """GBNF for one ``N: label`` line per question, each bound to its two labels."""
    lines = " ".join(f'"{n}: " c{n} "\\n"' for n in range(1, len(requests) + 1))
    rules = [
        f"c{n} ::= " + " | ".join(f'"{c}"' for c in r.candidates) for n, r in enumerate(requests, 1)
    ]
    return "\n".join([f"root ::= {lines}", *rules]) + "\n"


def split_recheck_prompt(prompt: str) -> list[tuple[str, tuple[str, ...]]]:
    """(text, labels) of each question in a :func:`recheck_prompt` (for test labelers)."""
    import re

    found = re.findall(r"^Message \d+: (.*)\nLabels: (.*)$", prompt, flags=re.MULTILINE)
    return [(text, tuple(labels.split(" | "))) for text, labels in found]


def read_recheck_answers(output: str, requests: list) -> dict[int, str]:
    """The chosen label by question (0-based); an answer naming neither label is left
    out (that question is asked again on its own)."""
    import re

    found: dict[int, str] = {}
    for number, said in re.findall(r"(\d+)\s*[:.)]\s*`?([A-Za-z][\w]*)", output):
        k = int(number) - 1
        if 0 <= k < len(requests) and k not in found:
            names = {c.lower(): c for c in requests[k].candidates}
            if said.lower() in names:
                found[k] = names[said.lower()]
    return found


def read_rechecks(space, asked: list[Contest], outputs: list[str | None]) -> list[Recheck]:
    """What each closed answer chose: the evidence's label or not (an answer that names
    neither, or a failed call, counts as not)."""
    found = []
    for c, out in zip(asked, outputs, strict=True):
        said = (out or "").strip().strip("`'\".").split(",")[0].strip().lower()
        found.append(Recheck(c.item_id, c.label_id, said == space.name(c.label_id).lower()))
    return found


def apply(
    space, moved: list[Correction], restored: list[Correction], answers: int, join: float
) -> int:
    """Write the corrections in one label-space transaction (logged in ``merges`` as
    kind ``consensus``, so ``undo`` reverts them) and record the LLM's estimated error
    rate: the share of its ``answers`` that stand corrected. A label the corrections left
    without items is merged into the label its name is nearest to (at least ``join``
    similar), so the raw labels that founded it are read as naming that label from then
    on; returns how many were merged."""
    store = space.store
    if moved or restored:
        with space.rewrite() as c:
            store.corrections.write(c, moved, restored)
        space.reload()
    from canonlabel.thresholds import wilson_interval

    standing = sum(store.corrections.counts().values())  # corrections not kept
    low, _ = wilson_interval(standing, answers)
    store.set_meta(
        {
            "llm_error_estimate": round(standing / max(answers, 1), 4),
            "llm_error_low": round(low, 4),  # the low end of its 95% interval
        }
    )
    if not moved:
        return 0
    return _merge_emptied(space, {m.answer_label for m in moved}, join)


def _merge_emptied(space, touched: set[int], join: float) -> int:
    counts = space.store.members.label_counts()
    held = {space.resolve(i) for i, n in counts.items() if n}
    empty = sorted(
        r for r in {space.resolve(i) for i in touched} if r not in held and r not in space.pinned
    )
    # another process sharing the store may have made labels this space has not loaded
    targets = sorted(t for t in held if t in space.names)
    if not empty or not targets:
        return 0
    reps = np.stack([space.representative(t) for t in targets])
    merges = []
    for label in empty:
        sims = reps @ space.representative(label)
        best = int(sims.argmax())
        if sims[best] >= join:
            merges.append((label, targets[best], round(float(sims[best]), 4)))
    if merges:
        with space.rewrite() as c:
            space.store.labels.merge_emptied(c, merges)
        space.reload()
    return len(merges)


def revert(space, entry: int, detail: dict) -> dict:
    """Undo consensus entry ``entry``: the labels its moves emptied and merged away come
    back, the items it moved go back to the LLM's answer and keep it from now on (a
    person decided), and the items it moved back are moved again."""
    from dataclasses import replace

    store = space.store
    moved = [Correction(*row) for row in detail["moved"]]
    restored = [Correction(*row) for row in detail["restored"]]
    emptied = store.log.emptied_after(entry)  # the labels its moves left empty, merged away
    with space.rewrite() as c:
        for merge, label in emptied:
            store.labels.merge(c, label, None)
            store.log.mark_undone(c, merge)
        store.corrections.write(
            c, [replace(m, kept=True) for m in moved] + restored, moved, log=False
        )
        store.log.mark_undone(c, entry)
    space.reload()
    return {
        "kind": "undo",
        "consensus": entry,
        "kept": len(moved),
        "moved": len(restored),
        "unmerged": len(emptied),
    }
