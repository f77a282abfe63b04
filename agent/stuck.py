"""The agent's own stuck verdicts: is this instance stuck, why, since when, what to do next.

Pure (the clock passed in) and table-tested. `agent.status` puts the verdict on the instance's
report (InstanceStatus.stuck); the reasons are the closed set of `keel.stuck`, so the control
plane's stuck detector, keelctl and the runbooks key on the same names, and each verdict
carries that reason's runbook and the next command to run. Whether exits are a crash loop is
`agent.restart`'s rule; this module only names it.

- START_FAILED: the command cannot be started; stuck from the first failure, through the
  retries, until a start succeeds.
- CRASH_LOOP: `agent.restart.in_crash_loop`; stuck through the retries until the process stays
  up `min_up_s`.
- HEALTH_CHECK_FAILING: the health check has failed for `health_stuck_after_s`.
- STOP_TIMEOUT: the process outlived its stop grace and the SIGKILL after it.
The first two only concern an instance desired RUNNING; a stop under way only STOP_TIMEOUT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from agent import restart
from agent.planner import Actual, Transition
from agent.state import Assignment, InstanceRecord
from keel.model import Desired
from keel.stuck import GUIDES, Reason, next_command

# Machine-readable reasons in InstanceStatus.reason.
START_FAILED = Reason.START_FAILED.value
CRASH_LOOP = Reason.CRASH_LOOP.value
HEALTH_CHECK_FAILING = Reason.HEALTH_CHECK_FAILING.value
STOP_TIMEOUT = Reason.STOP_TIMEOUT.value
# The reasons an agent reports for itself.
AGENT_REASONS = (
    Reason.START_FAILED,
    Reason.CRASH_LOOP,
    Reason.HEALTH_CHECK_FAILING,
    Reason.STOP_TIMEOUT,
)

# SIGKILL goes out when the stop grace is over; a process still there this much later is stuck.
KILL_SLACK_S = 1.0


@dataclass(frozen=True)
class StuckInfo:
    """The agent's own verdict that an instance is stuck (InstanceStatus.stuck)."""

    reason: str
    since: float
    message: str
    runbook: str
    next_command: str


def verdict(
    a: Assignment,
    x: Actual,
    *,
    now: float,
    host: str = "",
    health_stuck_after_s: float = 30.0,
) -> StuckInfo | None:
    """The instance's stuck verdict now, or None. Its message stays the same across retries,
    so the verdict does not flicker."""
    r = x.record
    if x.transition is Transition.STOPPING:
        return _stop_timeout(a, x, now=now, host=host)
    if a.desired is Desired.RUNNING:
        live = x.running and x.exited is None
        if r.start_error:
            since = r.start_failed_since if r.start_failed_since is not None else now
            return _stuck(Reason.START_FAILED, since, r.start_error, a, host)
        if restart.in_crash_loop(r, a.spec, running=live, now=now):
            since = r.crash_loop_since if r.crash_loop_since is not None else now
            return _stuck(Reason.CRASH_LOOP, since, crash_message(r, x), a, host)
    live = x.running and x.exited is None and x.transition is None
    failing_since = x.unhealthy_since if live and not x.healthy else None
    if failing_since is not None and now - failing_since >= health_stuck_after_s:
        return _stuck(Reason.HEALTH_CHECK_FAILING, failing_since, health_message(x), a, host)
    return None


def health_message(x: Actual) -> str:
    return x.health_message or "health check failing"


def crash_message(r: InstanceRecord, x: Actual) -> str:
    """How it last exited, how often it restarted, when it is tried next, and stderr's end."""
    parts = [f"last exit: {r.last_exit or 'unknown'}", f"restarts: {r.restart_count}"]
    if r.next_start_at is not None:
        parts.append(f"back-off {r.backoff_s:g}s; next try at {clock(r.next_start_at)}")
    message = "; ".join(parts)
    if x.stderr_tail:
        message += "\nstderr (last lines):\n" + x.stderr_tail
    return message


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stop_timeout(a: Assignment, x: Actual, *, now: float, host: str) -> StuckInfo | None:
    r = x.record
    if x.stopping_since is None:
        return None
    deadline = x.stopping_since + r.stop_grace_s + KILL_SLACK_S
    if now < deadline:
        return None
    message = (
        f"pid {r.pid or 0} did not exit within its stop grace ({r.stop_grace_s:g}s) "
        f"and is still there {now - deadline + KILL_SLACK_S:.0f}s after SIGKILL"
    )
    return _stuck(Reason.STOP_TIMEOUT, deadline, message, a, host)


def _stuck(reason: Reason, since: float, message: str, a: Assignment, host: str) -> StuckInfo:
    guide = GUIDES[reason]
    return StuckInfo(
        reason.value,
        since,
        message,
        guide.runbook,
        next_command(reason, instance=a.instance_id, workload=a.workload, host=host),
    )
