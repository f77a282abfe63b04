"""When the agent restarts a process: every restart decision, pure (the clock is passed in).

`agent.planner` asks it what an exit means (how long to wait, whether the exits so far are a
crash streak) and whether a start is due now and counts as a restart; `agent.reconciler` asks
it when to retry a start that failed; `agent.stuck` asks it whether an instance is in a crash
loop. Its neighbour `agent.backoff` is the other back-off: reconnects to the control plane.
The timings are settings (`--backoff-base`, `--backoff-max`, `--backoff-reset`).

The rules, the kubelet's:
- only an instance desired RUNNING is restarted; any other exit is only recorded;
- crash back-off: the first restart waits `base`, each further crash doubles the wait up to
  `max`, and a process that stayed up at least `reset` starts again from `base`;
- a start that fails (the command cannot be started) is retried on the same back-off, as a
  crash with no uptime: `base`, doubling, capped; a start that succeeds keeps the wait, so a
  crash right after it doubles it again;
- a start is due when no back-off is pending or its time has come; it counts as a restart
  (`restart_count`) when the instance ran before and the start ends a back-off;
- crash loop: exits in a row, each after less than `min_up_s` (the spec's `min_ready`, at
  least `MIN_UP_FLOOR_S`) up. Two or more are a loop, from the exit that made them two; an
  exit after staying up starts a new streak, and a process up `min_up_s` again ends the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.settings import Settings
from agent.state import InstanceRecord
from keel.model import WorkloadSpec

# A run shorter than this never counts as "stayed up", even with min_ready 0: otherwise a
# command that exits at once would never be called a crash loop.
MIN_UP_FLOOR_S = 1.0
# Exits in a row (each too soon) that make a crash loop.
CRASH_LOOP_STREAK = 2


@dataclass(frozen=True)
class Policy:
    """The back-off timings, in seconds (`Settings.backoff_*`)."""

    base_s: float = 10.0
    max_s: float = 300.0
    reset_s: float = 600.0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(settings.backoff_base_s, settings.backoff_max_s, settings.backoff_reset_s)


def backoff_delay(previous_s: float, uptime_s: float, *, policy: Policy) -> float:
    """The wait before the next start after a run of `uptime_s` (0 for a failed start).

    `previous_s` is the wait used before the last start (0 = none yet).
    """
    if previous_s <= 0 or uptime_s >= policy.reset_s:
        return min(policy.base_s, policy.max_s)
    return min(previous_s * 2, policy.max_s)


def min_up_s(spec: WorkloadSpec) -> float:
    """How long a process must stay up for its exits to stop counting as a crash loop."""
    return max(spec.min_ready_ms / 1000.0, MIN_UP_FLOOR_S)


@dataclass(frozen=True)
class AfterExit:
    """What an exit changes in the instance's record."""

    backoff_s: float
    next_start_at: float | None  # None: no restart (not desired RUNNING)
    crash_streak: int = 0
    crash_loop_since: float | None = None


def after_exit(
    record: InstanceRecord, spec: WorkloadSpec | None, *, at: float, policy: Policy
) -> AfterExit:
    """The decision for a process that exited at `at`; `spec` is None unless the instance
    is desired RUNNING (then it is restarted after its back-off)."""
    if spec is None:
        return AfterExit(record.backoff_s, None)
    uptime = at - record.started_at if record.started_at is not None else 0.0
    delay = backoff_delay(record.backoff_s, uptime, policy=policy)
    streak = 1 if uptime >= min_up_s(spec) else record.crash_streak + 1
    since = (record.crash_loop_since or at) if streak >= CRASH_LOOP_STREAK else None
    return AfterExit(delay, at + delay, streak, since)


@dataclass(frozen=True)
class AfterStartFailure:
    """What a failed start changes in the instance's record."""

    backoff_s: float
    next_start_at: float
    failing_since: float  # the first failure of the current run of failures


def after_start_failure(record: InstanceRecord, *, at: float, policy: Policy) -> AfterStartFailure:
    """The decision for a start that failed at `at`: retry after the back-off."""
    delay = backoff_delay(record.backoff_s, 0.0, policy=policy)
    since = record.start_failed_since if record.start_failed_since is not None else at
    return AfterStartFailure(delay, at + delay, since)


def start_due(next_start_at: float | None, *, now: float) -> bool:
    """Whether an instance that should run and does not may be started now."""
    return next_start_at is None or now >= next_start_at


def is_restart(record: InstanceRecord | None, next_start_at: float | None) -> bool:
    """Whether a start counts as a restart: the instance ran before and a back-off ends."""
    return record is not None and record.starts > 0 and next_start_at is not None


def in_crash_loop(record: InstanceRecord, spec: WorkloadSpec, *, running: bool, now: float) -> bool:
    """Whether the instance's exits so far are a crash loop that has not ended yet."""
    if record.crash_streak < CRASH_LOOP_STREAK:
        return False
    stayed_up = (
        running and record.started_at is not None and now - record.started_at >= min_up_s(spec)
    )
    return not stayed_up
