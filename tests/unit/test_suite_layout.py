"""The test tree itself: pytest imports test modules by their base name (the directories are
not packages), so two files of one name in different directories break collection of the
whole suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "__init__.py")
    shared = sorted(n for n, count in names.items() if count > 1 and n != "conftest.py")
    assert not shared, f"rename one of each: {shared}"
