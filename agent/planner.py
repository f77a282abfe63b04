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
from keel.model import Desired, Phase, WorkloadSpec
from keel.stuck import GUIDES, Reason, next_command

# Machine-readable reasons in InstanceStatus.reason: the closed set of `keel.stuck`, so the
# control plane's stuck detector, keelctl and the runbooks key on the same names.
START_FAILED = Reason.START_FAILED.value
CRASH_LOOP = Reason.CRASH_LOOP.value
HEALTH_CHECK_FAILING = Reason.HEALTH_CHECK_FAILING.value
STOP_TIMEOUT = Reason.STOP_TIMEOUT.value

# A run shorter than this never counts as "stayed up", even with min_ready 0: otherwise a
# command that exits at once would never be called a crash loop.
MIN_UP_FLOOR_S = 1.0
# SIGKILL goes out when the stop grace is over; a process still there this much later is stuck.
KILL_SLACK_S = 1.0


def min_up_s(spec: WorkloadSpec) -> float:
    """How long a process must stay up for its exits to stop counting as a crash loop."""
    return max(spec.min_ready_ms / 1000.0, MIN_UP_FLOOR_S)


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
    unhealthy_since: float | None = None  # when the probes started failing
    transition: Transition | None = None
    stopping_since: float | None = None  # the first stop of the current process began
    stderr_tail: str = ""  # the end of the stderr log, read at the last exit


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
    crash_streak: int = 0
    crash_loop_since: float | None = None


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
            # An exit after staying up starts a new streak; a quick one extends it.
            streak = 1 if uptime >= min_up_s(a.spec) else x.record.crash_streak + 1
            since = (x.record.crash_loop_since or at) if streak >= 2 else None
            out.append(
                RecordExit(iid, x.exited.describe(), at, delay, next_start_at, streak, since)
            )
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
class StuckInfo:
    """The agent's own verdict that an instance is stuck (InstanceStatus.stuck)."""

    reason: str
    since: float
    message: str
    runbook: str
    next_command: str


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
    stuck: StuckInfo | None = None


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


def _verdict(reason: Reason, since: float, message: str, a: Assignment, host: str) -> StuckInfo:
    guide = GUIDES[reason]
    return StuckInfo(
        reason.value,
        since,
        message,
        guide.runbook,
        next_command(reason, instance=a.instance_id, workload=a.workload, host=host),
    )


def _crash_message(r: InstanceRecord, x: Actual) -> str:
    parts = [f"last exit: {r.last_exit or 'unknown'}", f"restarts: {r.restart_count}"]
    if r.next_start_at is not None:
        parts.append(f"back-off {r.backoff_s:g}s; next try at {_clock(r.next_start_at)}")
    message = "; ".join(parts)
    if x.stderr_tail:
        message += "\nstderr (last lines):\n" + x.stderr_tail
    return message


def status_of(
    a: Assignment,
    x: Actual | None,
    *,
    now: float,
    host: str = "",
    health_stuck_after_s: float = 30.0,
) -> InstanceReport:
    """The report for a desired instance, from what is observed now, with any stuck verdict.

    START_FAILED and CRASH_LOOP (2+ quick exits in a row) are stuck at once and stay so
    through the retries, until a start succeeds or the process stays up `min_up_s`;
    HEALTH_CHECK_FAILING is stuck once failing `health_stuck_after_s`; STOP_TIMEOUT while a
    process outlives its stop grace and the SIGKILL after it.
    """
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
    live = x.running and x.exited is None
    sticky: StuckInfo | None = None  # held through retries, so the verdict does not flicker
    note = ""
    if a.desired is Desired.RUNNING:
        if r.start_error:
            retry = f"; next try at {_clock(r.next_start_at)}" if r.next_start_at else ""
            since = r.start_failed_since if r.start_failed_since is not None else now
            # The verdict's message stays the same across retries; the report adds the retry.
            sticky = _verdict(Reason.START_FAILED, since, r.start_error, a, host)
            note = retry
        elif r.crash_streak >= 2 and not (
            live and r.started_at is not None and now - r.started_at >= min_up_s(a.spec)
        ):
            since = r.crash_loop_since if r.crash_loop_since is not None else now
            sticky = _verdict(Reason.CRASH_LOOP, since, _crash_message(r, x), a, host)
    if x.transition is Transition.STARTING:
        return _with_stuck(replace(base, phase=Phase.STARTING), sticky, note)
    if x.transition is Transition.STOPPING:
        report = replace(base, phase=Phase.STOPPING, pid=r.pid or 0, started_at=r.started_at)
        deadline = (
            x.stopping_since + r.stop_grace_s + KILL_SLACK_S
            if x.stopping_since is not None
            else None
        )
        if deadline is not None and now >= deadline:
            message = (
                f"pid {r.pid or 0} did not exit within its stop grace ({r.stop_grace_s:g}s) "
                f"and is still there {now - deadline + KILL_SLACK_S:.0f}s after SIGKILL"
            )
            stuck = _verdict(Reason.STOP_TIMEOUT, deadline, message, a, host)
            return _with_stuck(report, stuck)
        return report
    if live:
        ready = is_ready(x, min_ready_s=a.spec.min_ready_ms / 1000.0, now=now)
        report = replace(
            base, phase=Phase.RUNNING, pid=r.pid or 0, ready=ready, started_at=r.started_at
        )
        if sticky is not None:
            return _with_stuck(report, sticky, note)
        if not x.healthy:
            message = x.health_message or "health check failing"
            report = replace(report, reason=HEALTH_CHECK_FAILING, message=message)
            failing_since = x.unhealthy_since
            if failing_since is not None and now - failing_since >= health_stuck_after_s:
                stuck = _verdict(Reason.HEALTH_CHECK_FAILING, failing_since, message, a, host)
                report = replace(report, stuck=stuck)
            return report
        if not ready:
            message = f"restarted; ready once up for min_ready ({a.spec.min_ready_ms} ms)"
            return replace(report, message=message)
        return report
    if a.desired is not Desired.RUNNING:
        return replace(base, phase=Phase.STOPPED)
    if sticky is not None:
        return _with_stuck(replace(base, phase=Phase.FAILED), sticky, note)
    if r.next_start_at is not None and now < r.next_start_at:
        # One crash so far: back-off, not yet a loop (no stuck verdict).
        return replace(base, phase=Phase.FAILED, reason=CRASH_LOOP, message=_crash_message(r, x))
    return base


def _with_stuck(report: InstanceReport, stuck: StuckInfo | None, note: str = "") -> InstanceReport:
    if stuck is None:
        return report
    return replace(report, reason=stuck.reason, message=stuck.message + note, stuck=stuck)
