"""Small value types shared across canonlabel."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Source = Literal["exact", "cache", "model", "llm"]
STAGES = ("normalise", "embed", "search", "llm", "canonicalise", "store")


@dataclass(frozen=True)
class Grouping:
    """How consolidation groups raw labels: the weight of name similarity against member
    similarity, the combined similarity grouped without asking, and the share of LLM
    labelling calls it may spend on adjudicating borderline pairs.

    The defaults suit an instruction-following LLM whose names say what a text is about.
    A labeler whose names mostly echo the text's words, and which cannot judge whether
    two labels mean the same, declares its own (see ``Labeler.grouping``)."""

    name_weight: float = 0.6
    threshold: float = 0.85
    adjudication_share: float = 0.08
    by: str = "raw_labels"  # or "items" (see canonlabel.labelspace.regroup)


@dataclass(frozen=True)
class Usage:
    """LLM token usage of one call (zero when no LLM was asked)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # of the prompt tokens, those served from a cache rather than evaluated again (the
    # bundled model's restored prompt prefix; a server's prompt cache where it says so)
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class Result:
    """The outcome of classifying one text.

    ``label`` is the canonical label (``None`` when the item failed, and then
    ``error`` says why). ``raw_label`` is what the LLM said for this item, or for the
    cached item it matched (a router answer matches its nearest cached neighbour when
    that holds the same label, else nothing). ``similarity`` is the cosine similarity to the
    matched item on a cache hit (1.0 on an exact hit, the head's confidence on a router
    answer, ``None`` on an LLM call).
    """

    text: str
    label: str | None
    label_id: int | None
    raw_label: str | None
    source: Source | None
    similarity: float | None = None
    truncated: bool = False
    id: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    usage: Usage = Usage()

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    def output_row(self) -> dict:
        """The JSON object written per line by ``canonlabel classify``."""
        row = {
            "id": self.id,
            "text": self.text,
            "label": self.label,
            "label_id": self.label_id,
            "raw_label": self.raw_label,
            "source": self.source,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
        }
        if self.truncated:
            row["truncated"] = True
        if self.error is not None:
            row["error"] = self.error
        return row


@dataclass(frozen=True)
class Label:
    """A canonical label with its stable id, member count and aliases (raw labels).
    ``moved``: members the consensus moved here against the LLM's answer."""

    id: int
    name: str
    count: int
    aliases: tuple[str, ...] = ()
    category: str | None = None
    moved: int = 0


@dataclass(frozen=True)
class LabelRequest:
    """What a labeler is asked: one text, optional candidate labels, and a hint on re-ask.

    ``closed`` restricts the answer to the candidates (fixed categories, taxonomies);
    ``max_labels`` > 1 asks for up to that many of them, comma-separated."""

    text: str
    candidates: tuple[str, ...] = ()
    feedback: str | None = None
    closed: bool = False
    max_labels: int = 1


@dataclass(frozen=True)
class LabelResponse:
    """What a labeler answered: its raw text output and token usage."""

    output: str
    usage: Usage = Usage()
