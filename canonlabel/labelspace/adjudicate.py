"""LLM adjudication of borderline groups during consolidation.

Names and member centroids settle most groupings; a pair of groups whose combined
similarity falls just short of the threshold is the case they cannot settle (synonyms
such as ``refund`` / ``reimbursement``). For such pairs, the closest first, the LLM is
shown each group's most used raw label with that raw label's most typical member texts
and answers ``same`` or ``different``; the answer is kept under those two raw labels.
A ``same`` joins the two groups' components only when it is about the components' heads
(their most used groups) or the heads were judged the same as well (asked next), so that
one generic raw label like both sides cannot chain two intents together.
Up to :data:`PAIRS_PER_CALL` pairs share one call, as numbered lines (a GBNF grammar
binds local models to exactly that shape; remote answers are parsed leniently and an
unreadable line leaves its pair undecided), so a budget of a few calls
per consolidation settles dozens of pairs (``CANONLABEL_ADJUDICATION_BATCH`` pairs per
call; local models are held to what fits their context). Labelers that cannot do free
completions are asked one closed question per pair. Answers are kept in the store, so a
pair is never paid for twice.

A judge errs too, and its answer depends on the examples shown. The pair's similarity is
evidence as well: from ``lean`` (two thirds of the way from the adjudication floor to the
grouping cut, 0.7 by default) it leans "same", below it "different". For an LLM the
consensus finds often wrong, an answer that contradicts that evidence (a "same" below
``lean``, a "different" from it on) decides nothing alone: the pair is asked again, in
the reverse order with other example texts, and a third time (other examples again) when
the two disagree; two agreeing answers decide (:func:`verdict`). An answer the evidence
agrees with decides alone, so the budget goes where answers are in doubt; a "same"
between two big groups is always confirmed. A third question exists only where a side
has texts the first two did not show: repeating the first question would repeat its
answer (a deterministic judge's, as a real one at temperature 0), and two disagreeing
answers then leave the pair apart. A stored "same" joins two groups only while the
answers about the raw labels of their components (the groups joined to each so far), all
taken together, do not say "different" more often: an early "same" is revisited by the
later answers about the same two sides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from canonlabel.errors import BackendError
from canonlabel.labelspace.evidence import base_similarity, neighbourhood, pooled
from canonlabel.llm.base import Labeler
from canonlabel.types import LabelRequest

QUESTION = "Do these two labels name the same kind of message?"
BATCH = "For each numbered pair below, do its two labels name the same kind of message?"
ANSWERS = ("same", "different")
PAIRS_PER_CALL = 16  # with the controls; CANONLABEL_ADJUDICATION_BATCH
PARTNERS = 3  # nearest groups each group is compared with
CONTROL_GROUPS = 4  # largest groups whose control pairs take turns (see Adjudication.controls)
EXAMPLES = 2
_LINE = re.compile(r"(\d+)\s*[:.)\-]\s*\W*(same|different)\b", re.IGNORECASE)

Shown = tuple[str, list[str]]  # a label's name and a few member texts
Control = tuple[tuple[Shown, Shown], bool]  # a pair and its known answer
PLACEHOLDER: Shown = (
    "lorem_ipsum",
    ["Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "Ut enim ad minim veniam."],
)


def _clip(text: str, chars: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[:chars].rstrip() + " …"


def question(a: Shown, b: Shown) -> str:
    """One pair as a closed question: both labels, each followed by ``- text`` lines."""
    parts = [f"{QUESTION} Answer same or different."]
    for tag, (name, texts) in zip("AB", (a, b)):
        parts.append(f"Label {tag}: {name}")
        parts += [f"- {_clip(t)}" for t in texts]
    return "\n".join(parts)


def batch_question(pairs: Sequence[tuple[Shown, Shown]]) -> str:
    """Several pairs in one prompt, answered as ``N: same`` / ``N: different`` lines."""
    parts = [BATCH, "Answer one line per pair, like `1: same` or `1: different`."]
    for n, (a, b) in enumerate(pairs, 1):
        parts.append(f"Pair {n}")
        for tag, (name, texts) in zip("AB", (a, b)):
            parts.append(f"{tag}: {name}")
            parts += [f"- {_clip(t)}" for t in texts]
    parts.append("Answers:")
    return "\n".join(parts)


def numbered_grammar(n: int, rules: str, answer: str = "answer") -> str:
    """GBNF for exactly ``n`` lines ``K: <answer>``, the ``answer`` rule given in ``rules``."""
    lines = " ".join(f'"{k}: " {answer} "\\n"' for k in range(1, n + 1))
    return f"root ::= {lines}\n{rules}\n"


def batch_grammar(n: int) -> str:
    """GBNF for exactly ``n`` numbered answer lines."""
    return numbered_grammar(n, 'answer ::= "same" | "different"')


def parse(output: str, n: int) -> dict[int, bool]:
    """Answers by pair number (0-based); numbers out of range or repeated are ignored."""
    found: dict[int, bool] = {}
    for number, word in _LINE.findall(output):
        k = int(number) - 1
        if 0 <= k < n and k not in found:
            found[k] = word.lower() == "same"
    return found


def split_batch(prompt: str) -> list[tuple[str, str]]:
    """The two label blocks (name line and ``- text`` lines) of each pair of a
    :func:`batch_question` prompt, for test labelers that answer it."""
    blocks = re.split(r"\nPair \d+\n", prompt.removesuffix("\nAnswers:"))[1:]
    return [
        (a.removeprefix("A: "), b) for a, _, b in (block.partition("\nB: ") for block in blocks)
    ]


VARIANTS = 3  # questions a pair may get: two, and a third when they disagree


def variant_key(key: str, variant: int) -> str:
    """The stored key of a pair's ``variant``-th question (0: the pair's own key)."""
    return key if variant == 0 else f"{key}#{variant + 1}"


def confirm_key(key: str) -> str:
    """Where it is stored that pair ``key``'s first answer needs a second one (decided
    when the first answer came, so the pair's verdict stays a function of the store)."""
    return f"{key}#confirm"


CONFIRM_ABOVE = 0.03  # the LLM's estimated error rate from which answers are confirmed
# ... and the items each side of a pair holds from which its "same" is confirmed whatever
# that estimate: the consensus estimates the LLM's error only where the embeddings can
# contest its answers (GoEmotions at 10% wrong: 2.5%), and one wrong "same" between two
# big groups (love / disapproval, 167 and 154 texts) mislabels all of one of them
CONFIRM_ITEMS = 20


def verdict(
    stored: dict[str, bool], key: str, second: bool = True, variants: int = VARIANTS
) -> tuple[bool | None, int]:
    """(decision, next question to ask) for pair ``key`` from its stored answers.

    Without ``second`` the first answer decides. With it (an answer the evidence
    contradicts, from an LLM the consensus found wrong at least ``CONFIRM_ABOVE`` of the
    time; a "same" between two big groups; see :meth:`Adjudication._needs_second`), the
    pair is asked again and two agreeing answers decide; with two that disagree, a third
    decides. The decision is None while a question is still due (the variant to ask
    next), or after ``VARIANTS`` questions without a majority. ``variants``: the
    distinct questions the pair can get (two when neither side has texts left for a
    third: a third question that repeats the first would repeat its answer too, so two
    answers that disagree leave the pair apart).

    Asking again only the answers the evidence contradicts, rather than every "same",
    spends the budget where answers are in doubt: Banking77, NLU++ and hotels at 10% wrong
    answers (uniform and confusable, 6 orders), 8 fewer labels on average, ARI +0.02,
    order ARI +0.015. Confirming every "same" whatever the LLM's error halves what the
    budget settles: NLU++ with an LLM that is never wrong went from 55 to 118 labels."""
    answers = [stored.get(variant_key(key, v)) for v in range(variants)]
    given = [a for a in answers if a is not None]
    if len(given) == 1 and not second:
        return given[0], VARIANTS
    for value in (True, False):
        if given.count(value) >= 2:
            return value, VARIANTS
    missing = [v for v, a in enumerate(answers) if a is None]
    return None, missing[0] if missing else VARIANTS


def borderline_pairs(
    names: np.ndarray, content: np.ndarray, name_weight: float, low: float, high: float
) -> list[tuple[int, int, float]]:
    """Group pairs with combined similarity in ``[low, high)``, closest first, each group
    paired with at most its :data:`PARTNERS` nearest partners."""
    nearest, values, _ = neighbourhood(names, content, name_weight, PARTNERS)
    pairs: dict[tuple[int, int], float] = {}
    for g, (partners, sims) in enumerate(zip(nearest.tolist(), values.tolist(), strict=True)):
        for h, sim in zip(partners, sims, strict=True):
            if low <= sim < high:
                pairs[(min(g, h), max(g, h))] = sim
    return sorted(((g, h, s) for (g, h), s in pairs.items()), key=lambda x: (-x[2], x[0], x[1]))


def ask(
    store,
    labeler: Labeler,
    pairs: Sequence[tuple[str, Callable[[], tuple[Shown, Shown]]]],
    budget: int,
    per_call: int = PAIRS_PER_CALL,
    settled: Callable[[str], bool] = lambda key: False,
    answered: Callable[[str, bool], Sequence] = lambda key, same: (),
    controls: Sequence[Sequence[Control]] = (),
    parallel: int = 1,
) -> int:
    """Put ``pairs`` (key, what to show), closest first, to the LLM in calls of
    ``per_call``, at most ``budget`` calls, ``parallel`` at a time; a pair that is
    ``settled`` by the time its call is filled (already joined through earlier answers)
    is skipped. Each answer is stored and passed to ``answered``, which may return
    follow-up pairs, asked before the rest. Returns the calls made; a failed call leaves
    its pairs undecided.

    ``controls`` are sets of pairs whose answer is known (a label against itself, against
    placeholder text); each batched call gets one set, drawn by its pairs, at positions
    that vary: a call that gets one wrong is not trusted, so a model that answers at
    random or always the same way costs its calls but never joins a label. The sets take
    turns because a judge answers a question the same way each time it is asked: one
    control it gets wrong, asked in every call, would discard every call."""
    calls, queue = 0, list(pairs)
    per_set = max((len(c) for c in controls), default=0)
    while queue and calls < budget:
        # a round of up to `parallel` calls at once; the next round skips what it joined
        chunks: list[tuple[list[str], list[tuple[Shown, Shown]]]] = []
        while queue and len(chunks) < min(parallel, budget - calls):
            chunk: list[tuple[str, Callable]] = []
            while queue and len(chunk) < max(1, per_call - per_set):
                key, show = queue.pop(0)
                if not settled(key):
                    chunk.append((key, show))
            if chunk:
                chunks.append(([k for k, _ in chunk], [show() for _, show in chunk]))
        if not chunks:
            break
        for keys, (got, paid) in zip(
            [k for k, _ in chunks], _run_round(labeler, chunks, budget - calls, controls)
        ):
            calls += paid
            new = {keys[i]: same for i, same in got.items()}
            _store(store, new)
            for key, same in new.items():
                queue[:0] = answered(key, same)
    return calls


def _run_round(
    labeler: Labeler,
    chunks: list[tuple[list[str], list[tuple[Shown, Shown]]]],
    budget: int,
    controls,
) -> list:
    """Answers per chunk, in chunk order (calls run in threads when there are several)."""
    if len(chunks) == 1:
        return [_ask_chunk(labeler, *chunks[0], budget, controls)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(chunks), thread_name_prefix="canonlabel-adjudicate") as pool:
        futures = [pool.submit(_ask_chunk, labeler, k, shown, 1, controls) for k, shown in chunks]
        return [f.result() for f in futures]


def _ask_chunk(
    labeler: Labeler, keys: list[str], shown: list, budget: int, controls=()
) -> tuple[dict[int, bool], int]:
    """One batched call, or one closed question per pair where free completion is not
    available; returns answers by position and the calls made."""
    mixed, where = _mix(keys, shown, controls)
    try:
        out = labeler.complete(
            batch_question(mixed), grammar=batch_grammar(len(mixed)), max_tokens=8 * len(mixed)
        ).output
    except NotImplementedError:
        return _ask_one_by_one(labeler, shown, budget)
    except BackendError:
        return {}, 1  # it may have been paid for
    found = parse(out, len(mixed))
    if any(found.get(pos) is not expected for pos, expected in where["controls"]):
        return {}, 1  # a control came back wrong: nothing in this answer is trusted
    return {i: found[pos] for i, pos in enumerate(where["pairs"]) if pos in found}, 1


def _mix(keys: list[str], shown: list, controls) -> tuple[list, dict]:
    """The pairs with one set of ``controls`` slotted in; the set and the positions are
    drawn from the pairs' keys (deterministic, but never the same in every call)."""
    import hashlib

    mixed = list(shown)
    seed = int.from_bytes(hashlib.blake2b("\x1f".join(keys).encode(), digest_size=8).digest())
    places: list[tuple[int, bool]] = []
    chosen: Sequence[Control] = ()
    if controls:
        chosen = controls[seed % len(controls)]
        seed //= len(controls)
    for pair, expected in chosen:
        pos = seed % (len(mixed) + 1)
        seed //= len(mixed) + 1
        mixed.insert(pos, pair)
        places = [(p + (p >= pos), e) for p, e in places] + [(pos, expected)]
    taken = {p for p, _ in places}
    return mixed, {"controls": places, "pairs": [p for p in range(len(mixed)) if p not in taken]}


def _ask_one_by_one(labeler: Labeler, shown: list, budget: int) -> tuple[dict[int, bool], int]:
    got: dict[int, bool] = {}
    for i, (a, b) in enumerate(shown[:budget]):
        try:
            out = labeler.label(LabelRequest(question(a, b), ANSWERS, closed=True)).output
        except BackendError:
            continue
        word = out.strip().strip("`'\".").lower().split()[:1]
        if word and word[0] in ANSWERS:
            got[i] = word[0] == "same"
    return got, min(len(shown), budget)


def _store(store, answers: dict[str, bool]) -> None:
    store.adjudications.save(answers)


class Adjudication:
    """The borderline pairs of one grouping and what the LLM said about them.

    Built from a snapshot (evidence and groups), it touches only the store afterwards, so
    :meth:`ask` can run on another thread while the label space keeps serving. Stored
    answers apply at once: a "same" pair joins whatever groups its raw labels are in now.
    """

    def __init__(
        self,
        space,
        ev,
        assigned: np.ndarray,
        name_weight: float,
        floor: float,
        confirm: bool = True,
        lean: float = 2.0,
    ):
        rows = [np.flatnonzero(assigned == g) for g in range(int(assigned.max(initial=-1)) + 1)]
        self.assigned, self.rows = assigned, [r for r in rows if len(r)]
        self.store, self.pair_of = space.store, {}
        tops = [max(r, key=lambda i: (ev.uses[i], -i)) for r in self.rows]
        self.top = [ev.raw_labels[i] for i in tops]
        # A group is shown as its most used raw label with that raw label's own texts: the
        # answer is stored under the two raw labels and joins whatever groups hold them
        # later, so it must be about them, not about group-mates that may move away (a
        # "same" judged on a mixed group's texts would otherwise chain intents together).
        self._top_centroids = pooled(ev.member_sums, [[i] for i in tops]) if tops else None
        self.links = _Links(
            [any(ev.current[i] in space.pinned for i in r) for r in self.rows],
            [int(sum(ev.uses[i] for i in r)) for r in self.rows],
        )
        self.raws = [[ev.raw_labels[i] for i in r] for r in self.rows]
        self.group_of = {raw: g for g, raws in enumerate(self.raws) for raw in raws}
        self._examples: dict[int, list[str]] = {}
        self._texts = ev.answers  # LLM texts per raw label
        self.contested: set[str] = set()  # heads' pairs whose "different" is contradicted
        self.stored: dict[str, bool] = {}
        # (same, different) answers per group, per other group
        self._votes_of: dict[int, dict[int, tuple[int, int]]] = {}
        self.confirm = confirm  # answers the evidence contradicts need a second one
        self.lean = lean  # similarity from which the evidence leans "same" (see _against)
        if len(self.rows) < 2:
            return
        self.stored = stored = self.store.adjudications.get()
        for asked, same in stored.items():
            if asked != confirm_key(asked.partition("#")[0]):  # a mark, not an answer
                self._vote(asked, same)
        checks: dict[str, tuple[int, int]] = {}  # joins waiting for an answer about now
        for key in sorted({k.partition("#")[0] for k in stored}):
            check = self._stored_same(key)
            if check is not None:
                checks.setdefault(self._key(*check), check)
        names, self.content = pooled(ev.core, self.rows), pooled(ev.member_sums, self.rows)
        self._names, self.name_weight = names, name_weight
        self.pair_of.update(checks)
        for g, h, _ in borderline_pairs(names, self.content, name_weight, floor, 2.0):
            key = self._key(g, h)
            if self._verdict(key)[1] < VARIANTS and not (
                self.links.pinned[g] and self.links.pinned[h]
            ):
                self.pair_of.setdefault(key, (g, h))

    def _stored_same(self, key: str) -> tuple[int, int] | None:
        """Apply a stored "same" about raw labels ``key`` (see :meth:`_claim`); returns the
        heads' pair still to be asked about."""
        same, _ = self._verdict(key)
        a, _, b = key.partition("|")
        if not same or a not in self.group_of or b not in self.group_of:
            return None
        return self._claim(self.group_of[a], self.group_of[b])

    def _outvoted(self, g: int, h: int) -> bool:
        """Whether the answers about the raw labels of the components of groups ``g`` and
        ``h`` (the groups joined so far), all taken together, say "different" more often
        than "same". A "same" given early, when a group was small and its texts few, is
        outvoted by the "different" that later questions about the two sides' other raw
        labels gave. Banking77 stream at 10% wrong answers: two such answers
        (``activation_my_card`` / ``get_physical``) stood against six later "different"
        and merged three intents. Counted over components, not the two groups alone: an
        intent split over eight groups is judged "different" from its neighbour pair by
        pair, and one "same" between a ninth pair would join all of them."""
        links = self.links
        a, b = links.find(g), links.find(h)
        if len(links.members[a]) > len(links.members[b]):
            a, b = b, a
        same = different = 0
        for x in links.members[a]:
            for y, (s, d) in self._votes_of.get(x, {}).items():
                if links.find(y) == b:
                    same, different = same + s, different + d
        return different > same

    def _vote(self, asked: str, same: bool) -> None:
        a, _, b = asked.partition("#")[0].partition("|")
        g, h = self.group_of.get(a), self.group_of.get(b)
        if g is not None and h is not None and g != h:
            for x, y in ((g, h), (h, g)):
                s, d = self._votes_of.setdefault(x, {}).get(y, (0, 0))
                self._votes_of[x][y] = (s + same, d + (not same))

    def _verdict(self, key: str) -> tuple[bool | None, int]:
        second = self.stored.get(confirm_key(key), False)
        second = second or (self.confirm and key in self.contested)
        return verdict(self.stored, key, second, self._variants(key))

    def _needs_second(self, key: str, same: bool) -> bool:
        """Whether the first answer about pair ``key`` must be confirmed by a second: a
        "same" between two big groups (``CONFIRM_ITEMS``), and, for an LLM the consensus
        finds often wrong, an answer the evidence contradicts (:meth:`_against`)."""
        return (same and self._weighty(key)) or (self.confirm and self._against(key, same))

    def _against(self, key: str, same: bool) -> bool:
        """An answer about pair ``key`` that the evidence contradicts: a "same" where the
        two groups' similarity (names and members) is under ``lean``, a "different" from
        it on (about nine in ten pairs that similar are judged the same on Banking77)."""
        g, h = self.pair_of[key]
        sim = float(base_similarity(self._names, self.content, self.name_weight, [g], [h])[0, 0])
        return same != (sim >= self.lean)

    def _weighty(self, key: str) -> bool:
        """Both sides of pair ``key`` hold at least ``CONFIRM_ITEMS`` items: a wrong
        "same" would mislabel many texts, so it must be confirmed. Decided when the pair
        is first asked and stored with it, so the pair's verdict stays a function of what
        is stored (a "same" that joined two groups while they were small stands: asking
        again about every pair that grew would spend the budget on settled pairs)."""
        a, _, b = key.partition("|")
        g, h = self.group_of.get(a), self.group_of.get(b)
        if g is None or h is None:
            return False
        return min(self.links.weight[g], self.links.weight[h]) >= CONFIRM_ITEMS

    def _variants(self, key: str) -> int:
        """Distinct questions pair ``key`` can get: a third shows other texts, so it
        exists only where a side has more than the first two questions showed."""
        a, _, b = key.partition("|")
        most = max(self._texts.get(a, 0), self._texts.get(b, 0))
        return VARIANTS if most > EXAMPLES * (VARIANTS - 1) else VARIANTS - 1

    def _key(self, g: int, h: int) -> str:
        return "|".join(sorted((self.top[g], self.top[h])))

    def _claim(self, g: int, h: int) -> tuple[int, int] | None:
        """Apply a ``same`` answer about groups ``g`` and ``h``: their components join when
        it was about the two components' heads (most used groups), or when the heads were
        also judged the same, and the answers between the two components do not outvote
        it (:meth:`_outvoted`). Returns the heads' pair when that is still to be asked.

        Without this, "same" is transitive through any small group: one generic raw label
        (``waiting_transaction``, used once for a card payment and once for a transfer)
        that is like both sides joins two intents that nobody judged alike."""
        links = self.links
        a, b = links.find(g), links.find(h)
        if a == b or self._outvoted(g, h):
            return None
        ha, hb = links.head[a], links.head[b]
        if {ha, hb} == {g, h}:
            links.join(g, h)
            return None
        key = self._key(ha, hb)
        self.contested.add(key)  # a "same" between their members contradicts a "different"
        known, due = self._verdict(key)
        if known is None:
            return (ha, hb) if due < VARIANTS else None
        if known:
            links.join(g, h)
        return None

    def _shown(self, g: int, variant: int = 0) -> Shown:
        """Group ``g`` as shown in a pair's ``variant``-th question: its top raw label and
        the next most typical member texts (the first ones when there are too few)."""
        if g not in self._examples:
            assert self._top_centroids is not None  # set whenever there are groups
            texts = self.store.members.typical_texts(
                [self.top[g]], self._top_centroids[g], EXAMPLES * VARIANTS
            )
            self._examples[g] = texts
        texts = self._examples[g]
        part = texts[EXAMPLES * variant : EXAMPLES * (variant + 1)]
        return self.top[g], part or texts[:EXAMPLES]

    def controls(self) -> list[list[Control]]:
        """Control sets, one per large group (the ``CONTROL_GROUPS`` largest), each two
        pairs with a known answer: the group's top raw label against itself (its own most
        typical texts, split in two), and against placeholder text no data set is about (a
        least similar group would do in Banking77, but with four emotions it is often the
        same one). Texts of the raw label alone, as every pair shows: a group's texts mix
        in its other raw labels' and wrong answers', and a group whose two halves are about
        different things fails its control every time (GoEmotions at 10% wrong: 13 calls in
        a row wasted, the budget spent, 33 labels became 82). Several sets take turns, so
        one control question the judge gets wrong costs only the calls that draw it."""
        if len(self.rows) < 2:
            return []
        largest = sorted(range(len(self.rows)), key=lambda i: (-len(self.rows[i]), i))
        return [
            [
                ((self._shown(g, 0), self._shown(g, 1)), True),
                ((self._shown(g), PLACEHOLDER), False),
            ]
            for g in largest[:CONTROL_GROUPS]
        ]

    def ask(
        self, labeler: Labeler, budget: int, per_call: int = PAIRS_PER_CALL, parallel: int = 1
    ) -> int:
        """New questions, closest pairs first, skipping pairs already joined; returns the
        LLM calls made (at most ``budget``, ``parallel`` at a time)."""
        links, pair_of = self.links, self.pair_of

        def question(g: int, h: int) -> tuple[str, Callable]:
            key = self._key(g, h)
            v = self._verdict(key)[1]
            if v % 2:  # every other question shows the pair the other way round
                return variant_key(key, v), lambda: (self._shown(h, v), self._shown(g, v))
            return variant_key(key, v), lambda: (self._shown(g, v), self._shown(h, v))

        def answered(asked: str, same: bool) -> list:
            self.stored[asked] = same
            self._vote(asked, same)
            key = asked.partition("#")[0]
            if asked == key and self._needs_second(key, same):
                self.stored[confirm_key(key)] = True
                _store(self.store, {confirm_key(key): True})
            decided, following = self._verdict(key)
            if decided is None:
                return [question(*pair_of[key])] if following < VARIANTS else []
            check = self._claim(*pair_of[key]) if decided else None
            if check is None:
                return []
            pair_of.setdefault(self._key(*check), check)
            return [question(*check)]

        return ask(
            self.store,
            labeler,
            [question(g, h) for g, h in pair_of.values()],
            budget,
            per_call,
            settled=lambda k: links.joined(*pair_of[k.partition("#")[0]]),
            answered=answered,
            controls=self.controls() if per_call > 2 else (),
            parallel=parallel,
        )

    def assignment(self) -> np.ndarray:
        """Group per raw label after the joins."""
        out = self.assigned.copy()
        for g, r in enumerate(self.rows):
            out[r] = self.links.find(g)
        return out


class _Links:
    """Union-find over groups in which two groups curated by hand never meet."""

    def __init__(self, pinned: list[bool], weight: list[int]) -> None:
        self.parent = list(range(len(pinned)))
        self.pinned = pinned
        self.weight = weight  # items per group; a component's head is its heaviest group
        self.head = list(range(len(pinned)))
        self.members = [[g] for g in range(len(pinned))]  # per component root

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def joined(self, g: int, h: int) -> bool:
        a, b = self.find(g), self.find(h)
        return a == b or (self.pinned[a] and self.pinned[b])

    def join(self, g: int, h: int) -> None:
        a, b = self.find(g), self.find(h)
        if a != b and not (self.pinned[a] and self.pinned[b]):
            heads = (self.head[a], self.head[b])
            root = min(a, b)
            self.parent[max(a, b)] = root
            self.members[root] += self.members[max(a, b)]
            self.pinned[root] = self.pinned[a] or self.pinned[b]
            self.head[root] = max(heads, key=lambda x: (self.weight[x], -x))
