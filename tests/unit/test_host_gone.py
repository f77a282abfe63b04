"""Gone hosts: the rule (`liveness.gone`) and how keelctl shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.liveness import gone
from keel.ctl import output
from keel.ctl.args import build_parser
from keel.model import HostState
from keel.v1 import types_pb2

NOW = datetime(2026, 1, 2, tzinfo=UTC)
DAY_S = 24 * 3600.0


@pytest.mark.parametrize(
    ("state", "down_s", "expected"),
    [
        (HostState.READY, 10 * DAY_S, False),  # READY is never gone, however old its state
        (HostState.NOT_READY, DAY_S - 1, False),
        (HostState.NOT_READY, DAY_S + 1, True),
        (HostState.UNKNOWN, DAY_S + 1, True),
    ],
)
def test_a_host_is_gone_once_not_ready_past_the_setting(
    state: HostState, down_s: float, expected: bool
) -> None:
    """Gone: not READY for longer than --gone-after."""
    since = NOW - timedelta(seconds=down_s)
    assert gone(state, since, now=NOW, gone_after_s=DAY_S) is expected


def test_keelctl_lists_a_gone_host_as_gone_and_says_how_to_remove_it() -> None:
    """get hosts shows GONE; describe host names the command (with --force: it has instances)."""
    h = types_pb2.Host(name="h1", state="UNKNOWN", gone=True, instances=2)
    assert "GONE" in output.hosts_table([h], now=NOW)
    text = output.describe_host(h, [], now=NOW)
    assert "keelctl delete host h1 --force" in text


def test_delete_host_parses_with_force() -> None:
    """`keelctl delete host NAME --force` is a command."""
    args = build_parser().parse_args(["delete", "host", "h1", "--force"])
    assert (args.resource, args.name, args.force) == ("host", "h1", True)
