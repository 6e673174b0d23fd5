"""A simulated LLM that is accurate but names things inconsistently.

It is the instrument for judging label-space algorithms without paying for (or waiting
on) a real model: it knows each text's gold intent, the way a good LLM understands a text,
and names it the way LLMs do in practice — synonyms, extra words (``_issue``,
``_request``), dropped or reordered words — reusing a shown candidate whose words fit.
A share of answers (``error_rate``) names a wrong intent. Everything is deterministic per
text, so runs are reproducible and only the arrival order differs between them.

It sees only what a real LLM sees: the request's text and candidates (and, for
adjudication, the example texts in the question); the gold table plays the role of the
model's understanding of a text, never of the label space.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from canonlabel.hierarchy import PROPOSE as HIERARCHY_PROPOSE
from canonlabel.hierarchy import QUESTION as HIERARCHY_QUESTION
from canonlabel.labelspace.adjudicate import BATCH as ADJUDICATE_BATCH
from canonlabel.labelspace.adjudicate import QUESTION as ADJUDICATE
from canonlabel.labelspace.adjudicate import split_batch
from canonlabel.labelspace.consensus import RECHECK, split_recheck_prompt
from canonlabel.llm.base import Labeler
from canonlabel.normalize import normalize
from canonlabel.types import LabelRequest, LabelResponse, Usage

# Interchangeable words a model picks between; a word maps to its alternatives.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "arrival": ("delivery", "arriving"),
    "delivery": ("shipping", "arrival"),
    "estimate": ("eta", "timeline"),
    "payment": ("purchase", "transaction"),
    "transfer": ("transaction", "remittance"),
    "transaction": ("payment", "transfer"),
    "cancel": ("stop", "cancellation"),
    "lost": ("missing", "misplaced"),
    "stolen": ("theft", "stolen"),
    "wrong": ("incorrect", "bad"),
    "fee": ("charge", "cost"),
    "charge": ("fee", "charged"),
    "charged": ("billed", "charge"),
    "limit": ("limits", "cap"),
    "limits": ("limit", "maximum"),
    "pending": ("waiting", "processing"),
    "declined": ("rejected", "refused"),
    "reverted": ("reversed", "returned"),
    "verify": ("confirm", "validate"),
    "identity": ("id", "identification"),
    "change": ("update", "modify"),
    "refund": ("reimbursement", "money_back"),
    "balance": ("funds", "amount"),
    "account": ("profile", "account"),
    "activate": ("enable", "activation"),
    "terminate": ("close", "delete"),
    "not_working": ("broken", "failing"),
    "working": ("functioning", "usable"),
    "top_up": ("topup", "reload"),
    "cash": ("money", "cash"),
    "withdrawal": ("withdraw", "atm"),
    "support": ("supported", "availability"),
    "received": ("got", "given"),
    "request": ("ask", "inquiry"),
    "how": ("how_to", "way_to"),
    "long": ("duration", "time"),
    "much": ("cost", "amount"),
    "thank": ("thanks", "gratitude"),
    "affirm": ("confirm", "yes"),
    "deny": ("no", "decline"),
    "anger": ("angry", "rage"),
    "joy": ("happy", "happiness"),
    "sadness": ("sad", "sorrow"),
    "optimism": ("hopeful", "positive_outlook"),
    "negative": ("complaint", "unhappy"),
    "positive": ("praise", "happy"),
    "neutral": ("informational", "general"),
}
FILLERS = ("issue", "request", "question", "inquiry", "problem", "help", "query")
PREFIXES = ("customer", "help_with", "question_about")
_WORD = re.compile(r"[a-z0-9]+")


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def _stem(word: str) -> str:
    for alias, alts in SYNONYMS.items():
        if word == alias or word in alts:
            return min([alias, *alts])
    return word


# Multi-word phrases (``top_up``, ``money_back``) are one unit of meaning: a model swaps,
# drops or moves them whole, never half of one.
PHRASES = sorted(
    {p for k, alts in SYNONYMS.items() for p in (k, *alts) if "_" in p} | {"showing_up"},
    key=len,
    reverse=True,
)
_STOP = {"customer", "with", "about", "of", "the", "to", "my", "a", "by"}


def units(label: str) -> list[str]:
    """A label's units of meaning: its words, with known phrases and ``not_X`` kept whole."""
    words = [w for w in label.lower().split("_") if w]
    out: list[str] = []
    i = 0
    while i < len(words):
        phrase = next((p for p in PHRASES if "_".join(words[i : i + p.count("_") + 1]) == p), None)
        if phrase is None and words[i] == "not" and i + 1 < len(words):
            rest = units("_".join(words[i + 1 :]))[0]  # "not" binds to the unit after it
            phrase = f"not_{rest}"
        out.append(phrase or words[i])
        i += phrase.count("_") + 1 if phrase else 1
    return out


def content_words(label: str) -> set[str]:
    """A label's meaning-bearing units with synonyms folded together (for candidate fit)."""
    return {_stem(u) for u in units(label) if u not in FILLERS} - _STOP


class SimulatedLLM(Labeler):
    """An accurate-but-inconsistent LLM over a gold table ``text -> intent``.

    ``inconsistency``: chance that each naming move (synonym, filler word, dropped or
    reordered word) is applied to an answer. ``error_rate``: share of questions answered
    with a wrong intent: uniformly among all others, or, with ``confusions`` (intent ->
    the intents it is mistaken for, e.g. its 5 nearest), among those, as real models
    mostly confuse near intents. An error depends on the question: the same open
    question about a text always gets the same answer (temperature 0), a differently
    worded one (a closed choice among candidates) errs independently, except for the
    ``persistence`` share of wrong open answers: misreadings of the text, which every
    question about it repeats (the wrong intent, where a closed choice offers it). The judge
    (adjudication) errs at ``judge_error_rate`` (default: ``error_rate``), depending on
    the whole question, example texts and their order included. ``reuse``: chance of
    answering a shown candidate whose content words fit. Unknown texts get a stable
    generic label. Thread-safe (it holds no mutable state but counters).
    """

    def __init__(
        self,
        gold: Mapping[str, str],
        *,
        inconsistency: float = 0.5,
        error_rate: float = 0.0,
        reuse: float = 0.9,
        seed: int = 0,
        max_chars: int = 2000,
        confusions: Mapping[str, Sequence[str]] | None = None,
        judge_error_rate: float | None = None,
        coarse: Mapping[str, str] | None = None,
        persistence: float = 0.0,
    ) -> None:
        kind = "confusable" if confusions else "uniform"
        self.id = f"simulated:{inconsistency}:{error_rate}:{kind}:{seed}"
        self.id += f":misread{persistence}" if persistence else ""
        self.persistence = persistence
        self.confusions = {k: list(v) for k, v in (confusions or {}).items()}
        self.judge_error_rate = error_rate if judge_error_rate is None else judge_error_rate
        self.coarse = dict(coarse or {})  # intent -> coarse category (hierarchy naming)
        self.max_chars = max_chars
        self.gold = {self._key(t): g for t, g in gold.items()}
        self.intents = sorted(set(self.gold.values()))
        self.inconsistency, self.error_rate, self.reuse, self.seed = (
            inconsistency,
            error_rate,
            reuse,
            seed,
        )
        self.calls = 0
        self._contents: dict[str, set[str]] | None = None
        self._flat: list[tuple[str, str]] | None = None

    def _key(self, text: str) -> str:
        try:
            return normalize(text, self.max_chars)[0]
        except Exception:
            return text

    def intent(self, text: str, question: str = "open") -> str | None:
        """The intent this model *understands* ``text`` to have when asked ``question``
        (wrong ``error_rate`` of the time), or None for a text it cannot place."""
        key: str | None = self._key(text)
        if key not in self.gold:  # shown clipped (adjudication): read it as the whole text
            key = self._whole(text)
            if key is None:
                return None
            text = key
        truth = self.gold[key]
        if question != "open" and self.persistence:
            first = self._wrong(truth, _rng(self.seed, "error", text))
            if first is not None and _rng(self.seed, "misread", text).random() < self.persistence:
                return first  # a misreading: every wording of the question repeats it
        rng = (
            _rng(self.seed, "error", text)
            if question == "open"
            else _rng(self.seed, "error", question, text)
        )
        return self._wrong(truth, rng) or truth

    def _wrong(self, truth: str, rng) -> str | None:
        """A wrong intent, ``error_rate`` of the time (drawn from ``rng``), else None."""
        if len(self.intents) > 1 and rng.random() < self.error_rate:
            near = [i for i in self.confusions.get(truth, []) if i != truth]
            return rng.choice(near or [i for i in self.intents if i != truth])
        return None

    def _whole(self, text: str) -> str | None:
        """The known text that ``text`` (clipped, perhaps with a trailing ``…``) begins."""
        head = " ".join(text.removesuffix("…").split())
        if len(head) < 40:  # too short to stand for one text
            return None
        if self._flat is None:
            self._flat = sorted((" ".join(k.split()), k) for k in self.gold)
        i = bisect.bisect_left(self._flat, (head, ""))
        if i < len(self._flat) and self._flat[i][0].startswith(head):
            return self._flat[i][1]
        return None

    def name(self, intent: str, salt: str) -> str:
        """One way of naming ``intent``; which one depends on ``salt`` (the text).

        Moves act on units of meaning (``top_up``, ``not_received`` stay whole). The unit
        dropped is the most common one among intents, and only when the rest still tells
        ``intent`` apart from every other intent: an accurate model words a name loosely,
        not ambiguously (``top_up`` for ``top_up_limits`` would name four intents)."""
        rng = _rng(self.seed, "name", intent, salt)
        p = self.inconsistency
        words = [
            rng.choice(SYNONYMS[u]) if u in SYNONYMS and rng.random() < p else u
            for u in units(intent)
        ]
        if len(words) >= 3 and rng.random() < p / 2:
            k = self._droppable(intent, words)
            if k is not None:
                words.pop(k)
        if len(words) >= 2 and rng.random() < p / 2:
            words = (
                [*words[1:], "of", words[0]]
                if rng.random() < 0.5
                else [words[1], words[0], *words[2:]]
            )
        if rng.random() < p:
            words.append(rng.choice(FILLERS))
        elif rng.random() < p / 3:
            words.insert(0, rng.choice(PREFIXES))
        return "_".join(words[:6])[:60].strip("_")

    def _droppable(self, intent: str, words: list[str]) -> int | None:
        """The unit a model would leave out: the most common one among intents, if the
        rest still names ``intent`` and no other known intent."""
        if self._contents is None:
            self._contents = {i: content_words(i) for i in self.intents}
        df = Counter(u for c in self._contents.values() for u in c)
        k = max(range(len(words)), key=lambda j: (df[_stem(words[j])], -j))
        have = content_words("_".join(words[:k] + words[k + 1 :]))
        others = (c for i, c in self._contents.items() if i != intent)
        return k if have and not any(have <= c for c in others) else None

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        return [self._answer(r) for r in requests]

    def _answer(self, request: LabelRequest) -> LabelResponse:
        self.calls += 1
        usage = Usage(len(request.text.split()) + 40 + 4 * len(request.candidates), 6)
        if request.text.startswith(ADJUDICATE):
            return LabelResponse(self._adjudicate(request.text), usage)
        if request.closed and request.candidates:
            return LabelResponse(self._closed(request.text, request.candidates, request), usage)
        intent = self._intent_of(request.text)
        if intent is None:
            words = [w for w in _WORD.findall(request.text.lower()) if len(w) > 3][:2]
            return LabelResponse("_".join([*words, "message"]) or "general_message", usage)
        wanted = content_words(intent)
        rng = _rng(self.seed, "reuse", request.text)
        fits = [c for c in request.candidates if _fit(content_words(c), wanted) >= 0.75]
        if fits and rng.random() < self.reuse:
            best = max(fits, key=lambda c: (_fit(content_words(c), wanted), c))
            return LabelResponse(best, usage)
        return LabelResponse(self.name(intent, request.text), usage)

    def _closed(self, text: str, labels: tuple[str, ...], request=None) -> str:
        """A closed choice among ``labels``; its error is drawn for this wording."""
        question = "closed:" + "|".join(sorted(labels))
        intent = self.intent(text, question) or self._intent_of(text)
        return self._choose(intent, request or LabelRequest(text, labels, closed=True))

    def _intent_of(self, text: str) -> str | None:
        """A single text, or several joined by `` | `` / newlines (cluster naming): the
        most common intent among them."""
        found = self.intent(text)
        if found is not None:
            return found
        parts = [p.strip(" -•") for p in re.split(r" \| |\n", text) if p.strip(" -•")]
        intents = Counter(i for p in parts if (i := self.intent(p)) is not None)
        return intents.most_common(1)[0][0] if intents else None

    def _choose(self, intent: str | None, request: LabelRequest) -> str:
        wanted = content_words(intent) if intent else set()
        ranked = sorted(request.candidates, key=lambda c: (-_fit(content_words(c), wanted), c))
        return ", ".join(ranked[: max(1, request.max_labels)])

    def _adjudicate(self, prompt: str) -> str:
        """Answer ``same`` / ``different`` for two labels shown with example texts."""
        blocks = prompt.split("\nLabel ")
        if len(blocks) != 3:
            return "different"
        return "same" if self._judged(blocks[1], blocks[2]) else "different"

    def _judged(self, a: str, b: str) -> bool:
        """The judge's answer: :meth:`_same`, wrong ``judge_error_rate`` of the time
        depending on the whole question (its wording, examples and their order)."""
        same = self._same(a, b)
        if _rng(self.seed, "judge", a, b).random() < self.judge_error_rate:
            return not same
        return same

    def _same(self, a: str, b: str) -> bool:
        """Whether two labels' example texts (``- text`` lines) are about one intent, as
        the model understands them (names are not consulted: they are what is in doubt)."""
        groups = []
        for block in (a, b):
            lines = [ln.strip()[2:] for ln in block.splitlines() if ln.strip().startswith("- ")]
            intents = Counter(i for ln in lines if (i := self.intent(ln)) is not None)
            groups.append(intents.most_common(1)[0][0] if intents else None)
        return groups[0] is not None and groups[0] == groups[1]

    def _adjudicate_batch(self, prompt: str) -> str:
        """One ``N: same|different`` line per ``Pair N`` block."""
        lines = [
            f"{n}: {'same' if self._judged(a, b) else 'different'}"
            for n, (a, b) in enumerate(split_batch(prompt), 1)
        ]
        return "\n".join(lines) + "\n"

    def _themes(self, prompt: str) -> str:
        """``N: theme`` per numbered label of a proposal prompt (see :meth:`_theme`)."""
        blocks = re.split(r"\n(\d+): [^\n]*", prompt)
        out = []
        for number, body in zip(blocks[1::2], blocks[2::2], strict=False):
            out.append(f"{number}: {self._theme(QUESTION_HEAD + body)}")
        return "\n".join(out) + "\n"

    def _theme(self, prompt: str) -> str:
        """A parent's name: the coarse category (``coarse``, else the intent) most of the
        example texts have, as this model understands them (wrong ``error_rate`` of the
        time, depending on the whole question)."""
        lines = [ln.strip()[2:] for ln in prompt.splitlines() if ln.strip().startswith("- ")]
        intents = [i for ln in lines if (i := self.intent(ln)) is not None]
        votes = Counter(self.coarse.get(i, i) for i in intents)
        if not votes:
            return "general_theme"
        theme = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        rng = _rng(self.seed, "theme", prompt)
        if rng.random() < self.error_rate:
            pool = sorted(set(self.coarse.values()) or set(self.intents))
            theme = rng.choice([t for t in pool if t != theme] or [theme])
        return theme

    def complete(
        self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256
    ) -> LabelResponse:
        """Batched adjudication (see :mod:`canonlabel.labelspace.adjudicate`), else
        taxonomy proposals: one ``name: description`` line per intent among the prompt's
        texts, most frequent first."""
        self.calls += 1
        if prompt.startswith(HIERARCHY_PROPOSE):
            out = self._themes(prompt)
            return LabelResponse(out, Usage(len(prompt.split()), len(out.split())))
        if prompt.startswith(HIERARCHY_QUESTION):
            out = self._theme(prompt)
            return LabelResponse(out, Usage(len(prompt.split()), 4))
        if prompt.startswith(ADJUDICATE_BATCH):
            out = self._adjudicate_batch(prompt)
            return LabelResponse(out, Usage(len(prompt.split()), len(out.split())))
        if prompt.startswith(RECHECK):  # second questions, each as if asked alone
            out = "".join(
                f"{n}: {self._closed(text, labels)}\n"
                for n, (text, labels) in enumerate(split_recheck_prompt(prompt), 1)
            )
            return LabelResponse(out, Usage(len(prompt.split()), len(out.split())))
        lines = [ln.strip(" -•") for ln in prompt.splitlines()]
        intents = Counter(i for ln in lines if (i := self.intent(ln)) is not None)
        out = "".join(
            f"{self.name(i, 'taxonomy')}: messages about {i.replace('_', ' ')}\n"
            for i, _ in intents.most_common(12)
        )
        return LabelResponse(out, Usage(len(prompt.split()), len(out.split())))


QUESTION_HEAD = "theme\n"


def _fit(have: set[str], wanted: set[str]) -> float:
    if not have or not wanted:
        return 0.0
    return len(have & wanted) / len(have | wanted)
