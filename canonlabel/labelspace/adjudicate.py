"""LLM adjudication of borderline groups during consolidation.

Names and member centroids settle most groupings; a pair of groups whose combined
similarity falls just short of the threshold is the case they cannot settle. For such
pairs (the closest first, at most ``budget`` new questions per consolidation) the LLM is
shown both names with a few member texts and answers ``same`` or ``different`` — a closed
question (grammar locally, JSON-schema enum remotely), so nothing else is accepted.
Answers are kept in the store, so a pair is never paid for twice.
"""

from __future__ import annotations

import time

import numpy as np

from canonlabel.llm.base import Labeler
from canonlabel.types import LabelRequest

QUESTION = "Do these two labels name the same kind of message?"
ANSWERS = ("same", "different")
_EXAMPLES = 3


def question(a: tuple[str, list[str]], b: tuple[str, list[str]]) -> str:
    """The prompt: both labels, each followed by ``- text`` lines."""
    parts = [f"{QUESTION} Answer same or different."]
    for tag, (name, texts) in zip("AB", (a, b)):
        parts.append(f"Label {tag}: {name}")
        parts += [f"- {' '.join(t.split())[:300]}" for t in texts]
    return "\n".join(parts)


def borderline_pairs(
    names: np.ndarray, content: np.ndarray, name_weight: float, low: float, high: float
) -> list[tuple[int, int, float]]:
    """Group pairs with combined similarity in ``[low, high)``, closest first, each group
    paired with at most its two nearest partners."""
    sim = name_weight * (names @ names.T) + (1 - name_weight) * (content @ content.T)
    np.fill_diagonal(sim, -1.0)
    pairs: dict[tuple[int, int], float] = {}
    for g in range(len(sim)):
        for h in np.argsort(-sim[g], kind="stable")[:2]:
            if low <= sim[g, h] < high:
                pairs[(min(g, int(h)), max(g, int(h)))] = float(sim[g, h])
    return sorted(((g, h, s) for (g, h), s in pairs.items()), key=lambda x: (-x[2], x[0], x[1]))


def ask(
    store, labeler: Labeler, questions: dict[str, str], budget: int
) -> tuple[dict[str, bool], int]:
    """Answers by pair key: stored ones first, then at most ``budget`` new LLM questions.
    Returns ``(answers, questions_asked)``; a failed call just leaves the pair undecided."""
    from canonlabel.errors import BackendError

    answers = store.adjudications(list(questions))
    todo = [k for k in questions if k not in answers][:budget]
    asked = 0
    for key in todo:
        try:
            out = labeler.label(LabelRequest(questions[key], ANSWERS, closed=True)).output
        except BackendError:
            continue
        asked += 1
        word = out.strip().strip("`'\".").lower().split()[:1]
        if word and word[0] in ANSWERS:
            answers[key] = word[0] == "same"
            with store.write() as c:
                c.execute(
                    "INSERT INTO adjudications VALUES (?, ?, ?) ON CONFLICT (pair) DO UPDATE SET "
                    "same = excluded.same, created_at = excluded.created_at",
                    (key, int(answers[key]), time.time()),
                )
    return answers, asked
