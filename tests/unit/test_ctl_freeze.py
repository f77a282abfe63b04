"""keelctl's deploy-freeze verbs: --until as a time or a duration, usage errors, and the status
an operator reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keel.convert import set_ts
from keel.ctl.args import CtlError
from keel.ctl.freeze import status_text, unfreeze_text, until_of
from keel.ctl.main import main
from keel.v1 import fleet_pb2

NOW = datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("2030-01-02T15:04:05Z", datetime(2030, 1, 2, 15, 4, 5, tzinfo=UTC)),
        ("2030-01-02T16:04:05+01:00", datetime(2030, 1, 2, 15, 4, 5, tzinfo=UTC)),
    ],
)
def test_until_is_an_rfc3339_time_or_a_duration_from_now(
    text: str, expected: datetime | timedelta
) -> None:
    """A duration is sent as one (the control plane adds it to its clock, once)."""
    assert until_of(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tomorrow", r"^--until: expected an RFC 3339 time"),
        ("2", r"^--until: expected an RFC 3339 time"),
        ("2030-01-02T15:04:05", r"^--until: give the time's zone"),
    ],
)
def test_an_until_that_is_neither_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(CtlError, match=message):
        until_of(text)


def test_status_with_a_change_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--controlplane", "127.0.0.1:1", "freeze", "--status", "--reason", "x"]) == 2
    assert "--status shows the freeze" in capsys.readouterr().err


def test_the_status_names_each_freeze_and_the_ways_through() -> None:
    resp = fleet_pb2.FreezeStatus(frozen=True)
    item = resp.freezes.add(source="operator", actor="oncall", reason="incident 42")
    set_ts(item.since, NOW - timedelta(minutes=5))
    alert = resp.freezes.add(source="alert:KeelBurn", actor="webhook", reason="KeelBurn: burn")
    set_ts(alert.since, NOW - timedelta(minutes=1))
    set_ts(alert.until, NOW + timedelta(hours=1))
    text = status_text(resp, now=NOW)
    assert text.startswith(
        "deploys are frozen: spec changes, canary promotions and resuming a paused rollout"
    )
    rows = [line.split() for line in text.splitlines()[2:4]]
    assert rows[0] == [
        "operator", "oncall", "2026-12-02T00:55:00Z", "(5m", "ago)", "until", "lifted",
        "incident", "42",
    ]  # fmt: skip
    assert rows[1][0] == "alert:KeelBurn" and rows[1][5:] == [
        "2026-12-02T02:00:00Z", "KeelBurn:", "burn",
    ]  # fmt: skip
    assert "keelctl apply --override-freeze --reason TEXT" in text
    assert status_text(fleet_pb2.FreezeStatus(), now=NOW) == "deploys are not frozen"


def test_unfreeze_says_what_it_lifted_and_never_an_operators_freeze_that_was_not() -> None:
    """Only an alert's freeze holds: a plain unfreeze lifted nothing and says so; lifting the
    alert by hand warns that it freezes again while it fires."""
    alert = fleet_pb2.DeployFreeze(source="alert:KeelBurn", actor="webhook", reason="burn")
    set_ts(alert.since, NOW - timedelta(minutes=1))
    held = fleet_pb2.FreezeStatus(frozen=True, freezes=[alert])
    text = unfreeze_text(held, alert="", now=NOW)
    assert "lifted" not in text.splitlines()[0] and "operator's freeze is lifted" not in text
    assert text.startswith("there was no operator's freeze to lift\ndeploys are still frozen by:")
    assert "keelctl unfreeze --alert NAME" in text
    by_hand = unfreeze_text(fleet_pb2.FreezeStatus(lifted=[alert]), alert="KeelBurn", now=NOW)
    assert by_hand.startswith("lifted:\nSOURCE") and "freezes deploys again" in by_hand
    assert by_hand.endswith("deploys are not frozen")
    none = unfreeze_text(fleet_pb2.FreezeStatus(), alert="KeelSlow", now=NOW)
    assert none == "no freeze of alert KeelSlow holds\ndeploys are not frozen"
    assert unfreeze_text(fleet_pb2.FreezeStatus(), alert="", now=NOW) == "deploys are not frozen"


def test_a_reason_with_control_characters_is_shown_as_one_clean_line() -> None:
    resp = fleet_pb2.FreezeStatus(frozen=True)
    item = resp.freezes.add(source="alert:X", actor="webhook", reason="\x1b[2Jfake\n\u202eevil")
    set_ts(item.since, NOW)
    text = status_text(resp, now=NOW)
    assert "\x1b" not in text and "\u202e" not in text and "[2Jfake evil" in text
