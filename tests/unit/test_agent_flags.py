"""The agent's command-line rules that have no process behind them: the workload port range."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.main import parse_port_range


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20000-32000", (20000, 32000)), ("1024-1039", (1024, 1039)), ("60000-65535", (60000, 65535))],
)
def test_port_range_accepts_a_range_of_at_least_16_ports(
    text: str, expected: tuple[int, int]
) -> None:
    """LOW-HIGH within 1024-65535, inclusive, at least 16 ports."""
    assert parse_port_range(text) == expected


@pytest.mark.parametrize(
    "text", ["", "20000", "20000-", "a-b", "1000-2000", "30000-20000", "20000-20010", "60000-70000"]
)
def test_port_range_refuses_what_is_not_one(text: str) -> None:
    """A bad range names the flag and the rule."""
    with pytest.raises(ConfigError, match=r"--port-range: must be LOW-HIGH within 1024-65535"):
        parse_port_range(text)
