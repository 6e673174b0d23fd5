import pytest
from hypothesis import given
from hypothesis import strategies as st

from canonlabel.errors import EmptyTextError
from canonlabel.normalize import normalize, text_key


def test_nfkc_controls_zero_width_and_whitespace():
    text, truncated = normalize("  Ｆｕｌｌ\u200bwidth\x00text\n\n\tand \u202espaces  ", 100)
    assert text == "Fullwidth text and spaces"
    assert not truncated


def test_truncation_is_recorded():
    text, truncated = normalize("word " * 100, 20)
    assert truncated and len(text) <= 20


@pytest.mark.parametrize("text", ["", "   ", "\u200b\u200d", "\x00\x01", "\ufeff"])
def test_empty_after_normalising_is_a_clear_error(text):
    with pytest.raises(EmptyTextError, match="empty after normalisation"):
        normalize(text, 100)


@given(st.text(min_size=1))
def test_normalise_is_idempotent(text):
    try:
        once, _ = normalize(text, 500)
    except EmptyTextError:
        return
    assert normalize(once, 500)[0] == once
    assert text_key(once) == text_key(normalize(once, 500)[0])
