"""Text normalisation applied before anything else touches a text."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from canonlabel.errors import EmptyTextError, InputError

# Zero-width and bidi-control characters survive NFKC and are invisible, so two texts
# that look identical would otherwise miss the exact cache (and can hide prompt payloads).
_INVISIBLE = dict.fromkeys(
    [
        0x00AD,
        0x034F,
        0x061C,
        0x180E,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        0xFEFF,
    ],
)
_WS = re.compile(r"\s+")


def normalize(text: str, max_chars: int) -> tuple[str, bool]:
    """Return ``(normalised_text, truncated)``.

    NFKC, drop control and zero-width characters, collapse whitespace, cap at
    ``max_chars`` characters. Raises :class:`EmptyTextError` if nothing is left.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    # Control characters (Cc) become spaces so "a\x00b" does not glue words together;
    # lone surrogates (Cs) from broken decoders are dropped.
    text = "".join(
        " " if cat == "Cc" else ch for ch in text if (cat := unicodedata.category(ch)) != "Cs"
    )
    text = _WS.sub(" ", text).strip()
    if not text:
        raise EmptyTextError()
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars].rstrip()
    return text, truncated


def text_key(text: str) -> str:
    """Stable key of a normalised text, used for exact-match lookups."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
