"""keel.text: a long list named in a sentence."""

from __future__ import annotations

import pytest

from keel.text import first_of


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], ""),
        (["a"], "a"),
        (["a", "b", "c"], "a, b, c"),
        (["a", "b", "c", "d"], "a, b, c and 1 more"),
        ([str(i) for i in range(10)], "0, 1, 2 and 7 more"),
    ],
)
def test_first_of_names_at_most_the_limit_then_how_many_more(
    items: list[str], expected: str
) -> None:
    assert first_of(items, 3) == expected
