"""keelctl's deploy-freeze verbs: `freeze [--reason TEXT] [--until TIME]`, `freeze --status` and
`unfreeze`.

While deploys are frozen the control plane refuses applies that change a workload's spec,
canary promotions and resuming a paused rollout of a new spec (scale changes, deletes,
rollbacks and drains go through); `keelctl apply --override-freeze
--reason TEXT` deploys anyway, recorded. A freeze comes from an operator (these verbs) or from
a firing alert (the Alertmanager webhook); `unfreeze` lifts the operator's (`--alert NAME`: an
alert's whose resolve was lost, `--all`: every one), says what it lifted and which freezes still
hold deploys. Argument parsing lives in `keel.ctl.args`, tables in
`keel.ctl.output`; the runbook is runbooks/deploy-freeze.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from keel.convert import from_ts, set_ts
from keel.ctl import output
from keel.ctl.args import CtlError
from keel.fields import SpecError, one_line
from keel.quantities import parse_duration
from keel.v1 import fleet_pb2

RUNBOOK = "runbooks/deploy-freeze.md"
# What a freeze refuses and what it lets through (the README's list).
BLOCKS = (
    "spec changes, canary promotions and resuming a paused rollout that still has old "
    "instances are refused (scale, delete, rollback, undo and drain still work)"
)


def until_of(text: str) -> datetime | timedelta:
    """--until: an RFC 3339 time with its zone (2030-01-02T15:04:05Z) or a duration from now
    (2h, 90m, 1h30m), sent as it is: the control plane adds a duration to its clock once, so
    `--request-id ID` run again sends the same request."""
    try:
        return timedelta(milliseconds=parse_duration(text, "--until"))
    except SpecError:
        pass
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CtlError(
            f"--until: expected an RFC 3339 time (2030-01-02T15:04:05Z) or a duration from now "
            f"(2h, 90m, 1h30m), got {text!r}"
        ) from None
    if at.tzinfo is None:
        raise CtlError(f"--until: give the time's zone (Z or +01:00), got {text!r}")
    return at.astimezone(UTC)


def cmd_freeze(ctx: Any) -> str:
    if ctx.args.status:
        if ctx.args.reason or ctx.args.until:
            raise CtlError("--status shows the freeze: it takes no --reason or --until")
        resp = ctx.stub.GetFreeze(fleet_pb2.GetFreezeRequest(), timeout=ctx.timeout)
        return output.to_json(resp) if ctx.json else status_text(resp, now=ctx.now)
    request = fleet_pb2.FreezeRequest(reason=ctx.args.reason or "")
    if ctx.args.until:
        until = until_of(ctx.args.until)
        if isinstance(until, timedelta):
            request.until_in.FromTimedelta(until)
        else:
            set_ts(request.until, until)
    resp = ctx.stub.Freeze(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(resp)
    return (
        f"deploys frozen: {BLOCKS}; `keelctl apply --override-freeze --reason TEXT` deploys "
        "anyway\n" + _table(resp.freezes, now=ctx.now) + "\nlift it: keelctl unfreeze"
    )


def cmd_unfreeze(ctx: Any) -> str:
    alert = ctx.args.alert.removeprefix("alert:")
    request = fleet_pb2.UnfreezeRequest(alert=alert, all=ctx.args.all)
    resp = ctx.stub.Unfreeze(request, timeout=ctx.timeout)
    return output.to_json(resp) if ctx.json else unfreeze_text(resp, alert=alert, now=ctx.now)


def unfreeze_text(resp: fleet_pb2.FreezeStatus, *, alert: str, now: datetime) -> str:
    """What an unfreeze lifted (or that there was nothing to lift), then what still holds."""
    if resp.lifted:
        lines = ["lifted:", _table(resp.lifted, now=now)]
        if any(f.source != "operator" for f in resp.lifted):
            lines.append(_AGAIN)
    elif alert:
        lines = [f"no freeze of alert {alert} holds"]
    else:
        lines = ["there was no operator's freeze to lift" if resp.frozen else ""]
    if resp.frozen:
        lines += [
            "deploys are still frozen by:",
            _table(resp.freezes, now=now),
            f"an alert's freeze lifts when it resolves; {_BY_HAND} ({RUNBOOK})",
        ]
    else:
        lines.append("deploys are not frozen")
    return "\n".join(line for line in lines if line)


def status_text(resp: fleet_pb2.FreezeStatus, *, now: datetime) -> str:
    if not resp.frozen:
        return "deploys are not frozen"
    return (
        f"deploys are frozen: {BLOCKS}\n"
        + _table(resp.freezes, now=now)
        + "\ndeploy anyway: keelctl apply --override-freeze --reason TEXT -f FILE; lift the "
        f"operator's freeze: keelctl unfreeze; an alert's lifts when it resolves, or "
        f"{_BY_HAND} ({RUNBOOK})"
    )


# An alert's freeze lifted by hand comes back while the alert fires (Alertmanager re-sends it).
_BY_HAND = "`keelctl unfreeze --alert NAME` lifts it by hand if its resolve was lost"
_AGAIN = (
    "an alert lifted by hand freezes deploys again if it still fires (Alertmanager sends it "
    "again at its repeat interval)"
)


def _table(freezes: Iterable[fleet_pb2.DeployFreeze], *, now: datetime) -> str:
    rows = []
    for f in freezes:
        until = from_ts(f.until)
        rows.append(
            [
                f.source,
                f.actor or "-",
                output.when(from_ts(f.since), now=now),
                until.strftime("%Y-%m-%dT%H:%M:%SZ") if until else "until lifted",
                # Stored clean (`fields.one_line`), and cleaned again: a row written before
                # that rule must not reach the terminal raw.
                one_line(f.reason, 1024) or "-",
            ]
        )
    return output.table(["SOURCE", "BY", "SINCE", "UNTIL", "REASON"], rows)
