"""What the agent reports about one instance: phase, readiness, reason, message and verdict.

`status_of` is pure (the clock passed in) and table-tested. `agent.reconciler` calls it for
every desired instance after each pass and sends the reports that changed; `agent.convert`
turns an `InstanceReport` into the wire's InstanceStatus. The stuck verdict on a report is
`agent.stuck`'s; whether the report means converged is `keel.model.converged`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from agent import stuck
from agent.planner import Actual, Transition
from agent.state import Assignment, InstanceRecord
from agent.stuck import StuckInfo
from keel.model import Desired, Phase


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


def status_of(
    a: Assignment,
    x: Actual | None,
    *,
    now: float,
    host: str = "",
    health_stuck_after_s: float = 30.0,
) -> InstanceReport:
    """The report for a desired instance, from what is observed now, with any stuck verdict.

    Phase: STARTING or STOPPING while that is under way, RUNNING while the process runs,
    STOPPED when it is not and should not, FAILED when it should run but is stuck or backing
    off after a crash, else PENDING. The reason and message say why it is not as desired.
    """
    if x is None:
        phase = Phase.PENDING if a.desired is Desired.RUNNING else Phase.STOPPED
        return InstanceReport(a.instance_id, phase)
    r = x.record
    report = InstanceReport(
        a.instance_id,
        Phase.PENDING,
        restart_count=r.restart_count,
        last_exit=r.last_exit,
        ports=dict(r.ports),
    )
    verdict = stuck.verdict(a, x, now=now, host=host, health_stuck_after_s=health_stuck_after_s)
    live = x.running and x.exited is None
    backing_off = r.next_start_at is not None and now < r.next_start_at
    if x.transition is Transition.STARTING:
        report = replace(report, phase=Phase.STARTING)
    elif x.transition is Transition.STOPPING:
        report = replace(report, phase=Phase.STOPPING, pid=r.pid or 0, started_at=r.started_at)
    elif live:
        ready = is_ready(x, min_ready_s=a.spec.min_ready_ms / 1000.0, now=now)
        report = replace(
            report, phase=Phase.RUNNING, pid=r.pid or 0, ready=ready, started_at=r.started_at
        )
    elif a.desired is not Desired.RUNNING:
        return replace(report, phase=Phase.STOPPED)
    elif verdict is not None or backing_off:
        report = replace(report, phase=Phase.FAILED)

    if verdict is not None:
        message = verdict.message
        if verdict.reason == stuck.START_FAILED:
            message += _retry_note(r)  # the verdict stays put; the report says when next
        return replace(report, reason=verdict.reason, message=message, stuck=verdict)
    if report.phase is Phase.RUNNING:
        if not x.health_known:
            # A process just started, not probed yet: not ready, and no failure to name.
            return replace(report, message="waiting for its first health check")
        if not x.healthy:
            return replace(
                report, reason=stuck.HEALTH_CHECK_FAILING, message=stuck.health_message(x)
            )
        if not report.ready:
            message = f"restarted; ready once up for min_ready ({a.spec.min_ready_ms} ms)"
            return replace(report, message=message)
    if report.phase is Phase.FAILED:
        # One crash so far: back-off, not yet a loop (no stuck verdict).
        return replace(report, reason=stuck.CRASH_LOOP, message=stuck.crash_message(r, x))
    return report


def removal_confirmed(instance_id: str, record: InstanceRecord | None) -> InstanceReport:
    """The report that confirms a tombstone: stopped and removed from this host."""
    return InstanceReport(
        instance_id,
        Phase.STOPPED,
        removed=True,
        restart_count=record.restart_count if record else 0,
        last_exit=record.last_exit if record else "",
    )


def _retry_note(r: InstanceRecord) -> str:
    return f"; next try at {stuck.clock(r.next_start_at)}" if r.next_start_at else ""
