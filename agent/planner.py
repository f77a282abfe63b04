"""The agent's pure planner: desired assignments vs actual instances -> actions, and status.

`plan` decides what to do for every instance on this host, `status_of` what to report about
one. Both are pure (no I/O, the clock passed in) and table-tested; `agent.reconciler` gathers
the inputs, performs the actions through a driver and sends the reports.

Rules (per instance):
- an exit not yet recorded is recorded first; if the instance should still run, its restart
  waits the crash back-off (`agent.backoff.next_crash_delay`);
- desired RUNNING: start when not running and the back-off has elapsed;
- desired STOPPED: stop when running;
- desired REMOVED (a tombstone): stop when running, then confirm the removal;
- not desired at all (an orphan, e.g. absent from a full set): stop, then forget;
- an instance that is starting or stopping is left alone until that finishes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from agent.backoff import next_crash_delay
from agent.runtime.base import ExitInfo
from agent.settings import Settings
from agent.state import Assignment, InstanceRecord
from keel.model import Desired, Phase

# Machine-readable reasons in InstanceStatus.reason (the control plane's stuck detector and
# runbooks key on these).
CRASH_BACKOFF = "CRASH_BACKOFF"
START_FAILED = "START_FAILED"
UNHEALTHY = "UNHEALTHY"


class Transition(enum.StrEnum):
    STARTING = "STARTING"
    STOPPING = "STOPPING"


@dataclass(frozen=True)
class Actual:
    """One instance as the agent observes it now: its record plus live facts."""

    record: InstanceRecord
    running: bool = False
    exited: ExitInfo | None = None  # an exit observed but not yet recorded
    exited_at: float | None = None
    healthy: bool = True  # the last probe passed (True when there is no health check)
    health_message: str = ""
    transition: Transition | None = None


@dataclass(frozen=True)
class Start:
    instance_id: str
    assignment: Assignment
    restart: bool  # a restart after a crash: counts in restart_count once it starts


@dataclass(frozen=True)
class Stop:
    instance_id: str
    grace_s: float
    why: str


@dataclass(frozen=True)
class RecordExit:
    instance_id: str
    last_exit: str
    at: float
    backoff_s: float
    next_start_at: float | None  # None: no restart is due (not desired RUNNING)


@dataclass(frozen=True)
class ConfirmRemoved:
    """Report removed=true for a stopped tombstone, then forget the instance."""

    instance_id: str


@dataclass(frozen=True)
class Forget:
    """An orphan is stopped: drop it from local state without a report."""

    instance_id: str


Action = Start | Stop | RecordExit | ConfirmRemoved | Forget


def plan(
    desired: Mapping[str, Assignment],
    actual: Mapping[str, Actual],
    *,
    now: float,
    settings: Settings,
) -> list[Action]:
    """Everything to do now, in instance-id order; each instance's actions in sequence."""
    actions: list[Action] = []
    for iid in sorted(desired.keys() | actual.keys()):
        actions.extend(_plan_one(iid, desired.get(iid), actual.get(iid), now, settings))
    return actions


def _plan_one(
    iid: str, a: Assignment | None, x: Actual | None, now: float, s: Settings
) -> list[Action]:
    if x is not None and x.transition is not None:
        return []  # a start or stop is under way; look again when it is done
    out: list[Action] = []
    running = x is not None and x.running
    next_start_at = x.record.next_start_at if x is not None else None
    if x is not None and x.exited is not None:
        running = False
        at = x.exited_at if x.exited_at is not None else now
        if a is not None and a.desired is Desired.RUNNING:
            started = x.record.started_at
            uptime = at - started if started is not None else 0.0
            delay = next_crash_delay(
                x.record.backoff_s,
                uptime,
                base_s=s.backoff_base_s,
                max_s=s.backoff_max_s,
                reset_s=s.backoff_reset_s,
            )
            next_start_at = at + delay
            out.append(RecordExit(iid, x.exited.describe(), at, delay, next_start_at))
        else:
            next_start_at = None
            out.append(RecordExit(iid, x.exited.describe(), at, x.record.backoff_s, None))

    if a is None:
        assert x is not None  # the id came from one of the two maps
        out.append(Stop(iid, x.record.stop_grace_s, "not desired") if running else Forget(iid))
        return out
    grace_s = a.spec.stop_grace_ms / 1000.0
    if a.desired is Desired.RUNNING:
        if not running and (next_start_at is None or now >= next_start_at):
            restart = x is not None and x.record.starts > 0 and next_start_at is not None
            out.append(Start(iid, a, restart=restart))
    elif a.desired is Desired.STOPPED:
        if running:
            out.append(Stop(iid, grace_s, "desired STOPPED"))
    elif running:
        out.append(Stop(iid, grace_s, "desired REMOVED"))
    else:
        out.append(ConfirmRemoved(iid))
    return out


@dataclass(frozen=True)
class InstanceReport:
    """What the agent reports about one instance (InstanceStatus, in domain terms)."""

    instance_id: str
    phase: Phase
    pid: int = 0
    restart_count: int = 0
    last_exit: str = ""
    reason: str = ""
    message: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    removed: bool = False
    started_at: float | None = None


def is_ready(x: Actual, *, min_ready_s: float, now: float) -> bool:
    """Running, healthy, and up `min_ready` since a restart (a first start counts at once)."""
    if not x.running or x.exited is not None or not x.healthy:
        return False
    if x.record.first_start:
        return True
    started = x.record.started_at
    return started is not None and now - started >= min_ready_s


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(a: Assignment, x: Actual | None, *, now: float) -> InstanceReport:
    """The report for a desired instance, from what is observed now."""
    if x is None:
        phase = Phase.PENDING if a.desired is Desired.RUNNING else Phase.STOPPED
        return InstanceReport(a.instance_id, phase)
    r = x.record
    base = InstanceReport(
        a.instance_id,
        Phase.PENDING,
        restart_count=r.restart_count,
        last_exit=r.last_exit,
        ports=dict(r.ports),
    )
    if x.transition is Transition.STARTING:
        return replace(base, phase=Phase.STARTING)
    if x.transition is Transition.STOPPING:
        return replace(base, phase=Phase.STOPPING, pid=r.pid or 0, started_at=r.started_at)
    if x.running and x.exited is None:
        ready = is_ready(x, min_ready_s=a.spec.min_ready_ms / 1000.0, now=now)
        reason, message = "", ""
        if not x.healthy:
            reason, message = UNHEALTHY, x.health_message or "health check failing"
        elif not ready:
            message = f"restarted; ready once up for min_ready ({a.spec.min_ready_ms} ms)"
        return replace(
            base,
            phase=Phase.RUNNING,
            pid=r.pid or 0,
            reason=reason,
            message=message,
            ready=ready,
            started_at=r.started_at,
        )
    if a.desired is not Desired.RUNNING:
        return replace(base, phase=Phase.STOPPED)
    retry = f"; next try at {_clock(r.next_start_at)}" if r.next_start_at is not None else ""
    if r.start_error:
        return replace(base, phase=Phase.FAILED, reason=START_FAILED, message=r.start_error + retry)
    if r.next_start_at is not None and now < r.next_start_at:
        return replace(
            base,
            phase=Phase.FAILED,
            reason=CRASH_BACKOFF,
            message=f"last exit: {r.last_exit or 'unknown'}; back-off {r.backoff_s:g}s{retry}",
        )
    return base
