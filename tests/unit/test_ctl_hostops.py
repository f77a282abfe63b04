"""keelctl cordon and uncordon: their command lines and what they print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keel.convert import ts
from keel.ctl import output
from keel.ctl.main import build_parser, main
from keel.v1 import types_pb2 as pb

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cordon", "h1", "h2"], {"hosts": ["h1", "h2"], "selector": None, "reason": None}),
        (["cordon", "--selector", "rack=a", "--reason", "power"], {"reason": "power"}),
        (["cordon", "-l", "rack=a,zone=b"], {"selector": [{"rack": "a", "zone": "b"}]}),
        (["uncordon", "h1", "-o", "json"], {"hosts": ["h1"], "output": "json"}),
        (
            ["uncordon", "-l", "rack=a", "-l", "zone=b"],
            {"selector": [{"rack": "a"}, {"zone": "b"}]},
        ),
    ],
)
def test_cordon_command_lines_parse(argv: list[str], expected: dict[str, Any]) -> None:
    """Hosts by name, by selector, or both; a reason for cordon."""
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["cordon", "--selector", "rack"],
        ["cordon", "--selector", "=a"],
        ["cordon", "-l", "a=1,a=2"],
        ["uncordon", "h1", "--reason", "x"],
    ],
)
def test_malformed_cordon_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A selector that is not k=v, or an option uncordon does not take, is a usage error."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["cordon", "uncordon"])
def test_cordon_without_hosts_or_selector_is_a_usage_error(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Naming nothing is refused before any call (the address is never dialled)."""
    assert main(["--controlplane", "127.0.0.1:1", verb]) == 2
    assert "name at least one HOST, or give --selector k=v" in capsys.readouterr().err


def test_cordon_lines_say_which_hosts_changed() -> None:
    """One line per host: changed by this call, or already so (cordon is safe to repeat)."""
    hosts = [pb.Host(name="h1"), pb.Host(name="h2")]
    assert output.cordon_lines(hosts, ["h2"], verb="cordoned") == (
        "host/h1 already cordoned\nhost/h2 cordoned"
    )


def test_describe_host_says_who_cordoned_it_and_when() -> None:
    """A cordoned host shows its reason, its actor and since when."""
    host = pb.Host(
        name="h1",
        state="READY",
        schedulable=False,
        cordon_reason="kernel upgrade",
        cordon_actor="keelctl@ipv4:127.0.0.1:5000",
        cordoned_at=ts(NOW - timedelta(minutes=5)),
    )
    lines = output.describe_host(host, [], now=NOW).splitlines()
    assert "Schedulable:     no (cordoned: kernel upgrade)" in lines
    assert "Cordoned by:     keelctl@ipv4:127.0.0.1:5000" in lines
    assert "Cordoned:        2026-01-02T02:59:05Z (5m ago)" in lines


def test_describe_host_schedulable_has_no_cordon_lines() -> None:
    """A schedulable host shows no cordon actor or time."""
    text = output.describe_host(pb.Host(name="h1", schedulable=True), [], now=NOW)
    assert "Cordoned" not in text
