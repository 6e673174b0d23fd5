"""Raw labels: cleaning an LLM answer into a snake_case raw label, and the decision type
the label space returns for it (see :mod:`canonlabel.labelspace`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,59}$")
_REFUSAL = re.compile(
    r"\b(sorry|apologi[sz]e|i can ?not|i can't|i cannot|as an ai|unable to|i won't|"
    r"not able to)\b"
)
_WRAP = "`'\"*[](){}<>.,;: "


class InvalidLabel(ValueError):
    """The LLM output is not a usable label; the message is fed back on re-ask."""


def clean_label(output: str) -> str:
    """Light cleanup of an LLM answer into a snake_case label, or :class:`InvalidLabel`.

    Accepts ``"Card Arrival"``, ```` `card-arrival` ````, ``Label: card_arrival``;
    rejects refusals, sentences and empty output.
    """
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("```")]
    if not lines:
        raise InvalidLabel("the answer was empty")
    text = lines[0]
    if _REFUSAL.search(text.lower()):
        raise InvalidLabel("the answer was a refusal, not a label")
    text = re.sub(r"^(label|answer|category)\s*[:=-]\s*", "", text.strip(_WRAP), flags=re.I)
    text = text.strip(_WRAP).lower()
    words = re.split(r"[\s\-./_]+", text)
    if len([w for w in words if w]) > 8:
        raise InvalidLabel("the answer was a sentence, not a short label")
    text = re.sub(r"[^a-z0-9_]", "", "_".join(words))
    text = re.sub(r"_+", "_", text).strip("_")
    if not LABEL_PATTERN.match(text):
        raise InvalidLabel(
            f"{output.strip()[:80]!r} is not a snake_case label "
            "(2-60 characters, a-z, 0-9 and _, starting with a letter)"
        )
    return text


def label_text(label: str) -> str:
    """What gets embedded for a label name: words, not underscores."""
    return label.replace("_", " ")


@dataclass(frozen=True)
class Decision:
    """Where a raw label goes: an existing label (``label_id``) or a new one (``None``)."""

    raw_label: str
    label_id: int | None
    similarity: float | None
    known: bool = False  # the raw label was already an alias
