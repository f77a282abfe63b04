"""Property: one-line text (a reason, a label, a version string) refuses every character that
breaks a line or the way it reads on a terminal, naming the field and the character, and
accepts any other text, whatever its script."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.convert import reason
from keel.fields import SpecError, check_text

EXAMPLES = settings(max_examples=300, derandomize=True, deadline=None, database=None)

# C0 (but NUL, refused by a rule of its own) and DEL, the C1 controls, the line and paragraph
# separators, the bidirectional marks, embeddings, overrides and isolates.
BREAKING = [
    *(chr(c) for c in range(0x01, 0x20)),
    *(chr(c) for c in range(0x7F, 0xA0)),
    "\u061c",
    "\u200e",
    "\u200f",
    "\u2028",
    "\u2029",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
]
_BREAKING = set(BREAKING)
# Any text without them (nor NUL, nor a lone surrogate, which no UTF-8 can carry).
fine = st.text(
    st.characters(blacklist_categories=("Cs",)).filter(lambda c: c not in _BREAKING | {"\x00"}),
    max_size=80,
)


@EXAMPLES
@given(before=fine, bad=st.sampled_from(BREAKING), after=fine)
def test_one_line_text_refuses_what_breaks_a_line_naming_field_and_character(
    before: str, bad: str, after: str
) -> None:
    """Wherever it sits, such a character is refused, and the message names the field, the
    rule and the character's code point (never the character itself)."""
    with pytest.raises(SpecError) as caught:
        check_text(before + bad + after, "reason", single_line=True)
    message = str(caught.value)
    assert message.startswith("reason: must not contain control characters")
    first = next(c for c in before + bad + after if c in _BREAKING)
    assert message.endswith(f"found U+{ord(first):04X}")
    assert not any(c in _BREAKING for c in message)


@EXAMPLES
@given(value=fine)
def test_one_line_text_accepts_any_other_text(value: str) -> None:
    """Accents, CJK, emoji, right-to-left scripts (without overrides) pass as they are."""
    assert check_text(value, "reason", single_line=True) == value


@pytest.mark.parametrize(
    "text",
    [
        "a\u2028b",
        "a\u2029b",
        "a\u0085b",
        "evil\u202etxt.exe",
        "x\u2066y\u2069",
        "\x1b[2J",
        "\x9b2J",
    ],
)
def test_a_reason_with_a_separator_override_or_escape_is_refused(text: str) -> None:
    """The rollout, freeze, cordon and drain reasons go through this rule."""
    with pytest.raises(SpecError, match=r"^reason: must not contain control characters"):
        reason(text)
    # Multi-line text is fine where lines are meant (an env value, a command argument).
    assert check_text(text, "spec.env.X") == text
