"""The deploy freeze in Postgres: who froze deploys, why, since and until when.

Deploys are frozen while any `deploy_freeze` row holds (no `until`, or `until` still ahead, by
database time). There is one row per reason to be frozen: the operator's (`keelctl freeze`,
source `operator`) and one per firing alert the Alertmanager webhook received with
`keel_action=freeze` (source `alert:<alertname>`, keyed by the alert's fingerprint, so its
resolve lifts exactly the row its firing set). Every change is an event on `fleet/freeze`.

The gate (`freeze_gate.gate`) runs inside `WorkloadStore._apply`, in the apply's transaction,
for an apply that changes the spec and is not a rollback: while frozen it refuses
(FailedPrecondition: nothing is changed) unless the apply overrides the freeze with a reason,
which is recorded (`FreezeOverridden`). Scale changes, deletes, rollbacks and drains never reach
it: they deploy nothing new. An apply reads the rows as they stand when it reaches the gate, so
a freeze committed while it runs takes effect from the next apply. Two more actions deploy a new
spec further and are refused the same way (no override: undo or unfreeze): promoting a canary
(`revision_store.promote`) and resuming a paused rollout (an operator's pause, or Keel's hold of
a failed one) while old instances remain (`freeze_gate.gate_resume`); resuming a rollout with
nothing left to roll goes through.

A freeze with an `until` stops holding then (every read says so at once); `expire` deletes its
row with a DeployUnfrozen event, once, whichever replica comes first (every write of the
freezes, and `freeze_watch` on every replica at the end it knows of).

Neighbours: `freeze_gate` (the gates, which `workload_store` and `rollout_pause` call),
`freeze_api` (Freeze, Unfreeze, GetFreeze), `alert_hook` (the webhook), `freeze_watch` (ends,
and `keel_deploy_frozen` in `freeze_metrics`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from controlplane.errors import InvalidArgument
from controlplane.idempotency import Once, once_in
from controlplane.sql import Conn, Database, record_event
from keel import fields

log = structlog.get_logger("keel.freeze")

OPERATOR = "operator"
ALERT_PREFIX = "alert:"
# Prometheus's rule for an alert name, bounded (the webhook's and `keelctl unfreeze --alert`).
ALERTNAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}")
# Where the freeze's events go (`keelctl events --for fleet/freeze`).
OBJECT = "fleet/freeze"
RUNBOOK = "runbooks/deploy-freeze.md"
OVERRIDE = "keelctl apply --override-freeze --reason TEXT"
# The actor of a freeze's end at its `until` (no person lifted it).
ENDER = "keel/freeze"

# How many freezes a message names before "+N more": each may carry a 1 KiB reason, and a
# refusal travels in gRPC metadata (16 KiB at most).
SHOWN = 3

_HOLDING = "(until IS NULL OR until > now())"
_COLUMNS = "source, fingerprint, reason, actor, since, until"


@dataclass(frozen=True)
class Freeze:
    """One reason deploys are frozen."""

    source: str  # "operator" or "alert:<alertname>"
    fingerprint: str  # the alert's; "" for the operator's
    reason: str
    actor: str
    since: datetime
    until: datetime | None

    def describe(self) -> str:
        """One line a person reads: what froze deploys, who, since when, until when, why."""
        text = f"{self.source} freeze by {self.actor or 'unknown'} since {_when(self.since)}"
        if self.until is not None:
            text += f" until {_when(self.until)}"
        return text + f': "{self.reason}"' if self.reason else text + " (no reason given)"


@dataclass(frozen=True)
class AlertFreeze:
    """A firing alert with `keel_action=freeze`, as the webhook read it."""

    alertname: str
    fingerprint: str
    reason: str


@dataclass(frozen=True)
class HookOutcome:
    """What one webhook delivery changed: how many alert freezes it set and lifted."""

    set: int
    lifted: int
    freezes: list[Freeze]


def summary(freezes: Sequence[Freeze]) -> str:
    """The freezes for a message or an event: the first `SHOWN` described, then how many more
    (however many alerts fire, an error stays within gRPC's metadata limit)."""
    text = "; ".join(f.describe() for f in freezes[:SHOWN])
    more = len(freezes) - SHOWN
    return text + (f"; +{more} more (keelctl freeze --status)" if more > 0 else "")


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _freeze(r: asyncpg.Record) -> Freeze:
    return Freeze(
        source=r["source"],
        fingerprint=r["fingerprint"],
        reason=r["reason"],
        actor=r["actor"],
        since=r["since"],
        until=r["until"],
    )


async def holding(conn: Conn) -> list[Freeze]:
    """The freezes that hold now, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deploy_freeze WHERE {_HOLDING} ORDER BY since, source, fingerprint"
    )
    return [_freeze(r) for r in rows]


async def status(db: Database) -> list[Freeze]:
    """GetFreeze: the freezes that hold now (none: deploys are not frozen)."""
    async with db.acquire() as conn:
        return await holding(conn)


async def freeze(
    db: Database,
    *,
    reason: str,
    until: datetime | timedelta | None,
    actor: str,
    once: Once[list[Freeze]] | None = None,
) -> list[Freeze]:
    """The operator's freeze, set or changed (a second freeze is the same freeze with its new
    reason and end: still frozen since the first). `until`: a time, or how long from now by
    database time (computed once, in the write: a retried request answers the same end).
    Returns the freezes that hold."""
    async with db.acquire() as conn, conn.transaction():
        return await once_in(
            conn, once, lambda: _freeze_operator(conn, reason=reason, until=until, actor=actor)
        )


async def _freeze_operator(
    conn: Conn, *, reason: str, until: datetime | timedelta | None, actor: str
) -> list[Freeze]:
    await _expire(conn)
    end: datetime | None = (
        await conn.fetchval("SELECT now() + $1::interval", until)
        if isinstance(until, timedelta)
        else until
    )
    if end is not None and await conn.fetchval("SELECT $1::timestamptz <= now()", end):
        raise InvalidArgument(
            f"until: must be in the future, got {_when(end)} (a time like 2030-01-02T15:04:05Z "
            "or a duration like 2h from now); leave it out to freeze until `keelctl unfreeze`"
        )
    row = await conn.fetchrow(
        f"""INSERT INTO deploy_freeze (source, fingerprint, reason, actor, since, until)
            VALUES ($1, '', $2, $3, now(), $4)
            ON CONFLICT (source, fingerprint) DO UPDATE
                SET reason = EXCLUDED.reason, actor = EXCLUDED.actor, until = EXCLUDED.until,
                    -- Still frozen since the first freeze, unless that one had run out.
                    since = CASE WHEN deploy_freeze.until IS NULL OR deploy_freeze.until > now()
                                 THEN deploy_freeze.since ELSE now() END
            RETURNING {_COLUMNS}""",
        OPERATOR,
        reason,
        actor,
        end,
    )
    assert row is not None
    current = _freeze(row)
    await record_event(conn, OBJECT, "DeployFrozen", current.describe(), actor=actor)
    log.warning("deploys frozen", source=OPERATOR, actor=actor, reason=reason,
                until=_when(end) if end else "")  # fmt: skip
    return await holding(conn)


@dataclass(frozen=True)
class Unfrozen:
    """What an unfreeze lifted, and the freezes that still hold after it."""

    lifted: list[Freeze]
    holding: list[Freeze]


async def unfreeze(
    db: Database,
    *,
    actor: str,
    alert: str = "",
    every: bool = False,
    once: Once[Unfrozen] | None = None,
) -> Unfrozen:
    """Lifts the operator's freeze; or, with `alert`, that alert's (every fingerprint: its
    resolved notification may never come); or, with `every`, all of them. Nothing to lift:
    nothing changes. An alert lifted by hand freezes again if Alertmanager sends it firing."""
    if alert and every:
        raise InvalidArgument("alert: give an alert's name or all, not both")
    if alert and not ALERTNAME.fullmatch(alert):
        raise InvalidArgument(
            f"alert: must be an alert name ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 200 characters; "
            f"see `keelctl freeze --status`), got {fields.shown(alert)}"
        )
    async with db.acquire() as conn, conn.transaction():
        return await once_in(
            conn, once, lambda: _unfreeze(conn, actor=actor, alert=alert, every=every)
        )


async def _unfreeze(conn: Conn, *, actor: str, alert: str, every: bool) -> Unfrozen:
    await _expire(conn)
    if every:
        where, args = "true", []
    elif alert:
        where, args = "source = $1", [ALERT_PREFIX + alert]
    else:
        where, args = "source = $1 AND fingerprint = ''", [OPERATOR]
    rows = await conn.fetch(
        f"""DELETE FROM deploy_freeze WHERE {where}
            RETURNING {_COLUMNS}, {_HOLDING} AS held""",
        *args,
    )
    lifted = sorted(
        (_freeze(r) for r in rows if r["held"]), key=lambda f: (f.since, f.source, f.fingerprint)
    )
    remaining = await holding(conn)
    if lifted:
        message = f"lifted the {summary(lifted)}"
        if any(f.source != OPERATOR for f in lifted):
            message += " (by hand: an alert still firing freezes again when Alertmanager sends it)"
        if remaining:
            message += "; still frozen by " + summary(remaining)
        await record_event(conn, OBJECT, "DeployUnfrozen", message, actor=actor)
        sources = sorted({f.source for f in lifted})
        log.warning("deploy freeze lifted", actor=actor, sources=sources,
                    still_frozen=len(remaining))  # fmt: skip
    return Unfrozen(lifted=lifted, holding=remaining)


@dataclass(frozen=True)
class Expired:
    """What `expire` found: the freezes that hold, and when the next of them ends, in seconds
    from now by database time (None: none has an end)."""

    holding: list[Freeze]
    next_end_s: float | None


async def expire(db: Database) -> Expired:
    """Ends the freezes whose `until` has passed, each with a DeployUnfrozen event by `ENDER`.
    Once however many replicas run it: the DELETE is the claim (a second one waits for the
    first's row lock, then finds the row gone)."""
    async with db.acquire() as conn, conn.transaction():
        await _expire(conn)
        freezes = await holding(conn)
        ends = [f.until for f in freezes if f.until is not None]
        next_end_s = (
            await conn.fetchval(
                "SELECT extract(epoch FROM $1::timestamptz - now())::float8", min(ends)
            )
            if ends
            else None
        )
    return Expired(freezes, next_end_s)


async def _expire(conn: Conn) -> None:
    """Every write of the freezes runs this first, so a freeze that ran out is recorded as ended
    (once) before a write replaces or deletes its row."""
    rows = await conn.fetch(f"DELETE FROM deploy_freeze WHERE until <= now() RETURNING {_COLUMNS}")
    for r in rows:
        ended = _freeze(r)
        await record_event(
            conn, OBJECT, "DeployUnfrozen", f"the {ended.describe()} ended at its until",
            actor=ENDER,
        )  # fmt: skip
        log.warning("deploy freeze ended at its until", source=ended.source, actor=ENDER)


async def alerts_changed(
    db: Database,
    *,
    firing: Sequence[AlertFreeze],
    resolved: Sequence[tuple[str, str]],
    actor: str,
) -> HookOutcome:
    """One webhook delivery, in one transaction: a freeze for each firing alert, and the freeze
    of each resolved one (alertname, fingerprint) lifted. Alertmanager sends the same
    notification again (its repeat interval, a retry): a firing alert that already froze
    deploys and a resolved one already lifted change nothing, and record no event again."""
    async with db.acquire() as conn, conn.transaction():
        added = 0
        for alert in firing:
            source = ALERT_PREFIX + alert.alertname
            row = await conn.fetchrow(
                f"""INSERT INTO deploy_freeze (source, fingerprint, reason, actor)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (source, fingerprint) DO NOTHING
                    RETURNING {_COLUMNS}""",
                source,
                alert.fingerprint,
                alert.reason,
                actor,
            )
            if row is not None:
                added += 1
                await record_event(
                    conn, OBJECT, "DeployFrozen", f"{_freeze(row).describe()} (the alert fires)",
                    actor=actor,
                )  # fmt: skip
        lifted = 0
        for alertname, fingerprint in resolved:
            row = await conn.fetchrow(
                f"""DELETE FROM deploy_freeze WHERE source = $1 AND fingerprint = $2
                    RETURNING {_COLUMNS}""",
                ALERT_PREFIX + alertname,
                fingerprint,
            )
            if row is not None:
                lifted += 1
                await record_event(
                    conn, OBJECT, "DeployUnfrozen",
                    f"lifted the {_freeze(row).describe()} (the alert resolved)", actor=actor,
                )  # fmt: skip
        freezes = await holding(conn)
    if added or lifted:
        log.warning("deploy freeze changed by alerts", set=added, lifted=lifted,
                    still_frozen=len(freezes))  # fmt: skip
    return HookOutcome(set=added, lifted=lifted, freezes=freezes)
