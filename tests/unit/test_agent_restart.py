"""Table tests for `agent.restart`: every decision about when the agent restarts a process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent import restart
from agent.restart import AfterExit, AfterStartFailure, Policy
from agent.state import InstanceRecord
from keel.model import WorkloadSpec

# The kubelet's timings: 10 s doubling to 5 min, reset after 10 min up.
P = Policy(base_s=10, max_s=300, reset_s=600)
SPEC = WorkloadSpec(command=("sleep", "1000"), min_ready_ms=10_000)


def rec(**kw: object) -> InstanceRecord:
    base: dict[str, object] = {"instance_id": "web-1", "workload": "web"}
    base.update(kw)
    return InstanceRecord(**base)  # type: ignore[arg-type]


def ran(started_at: float, **kw: object) -> InstanceRecord:
    """A record of a process started at `started_at` (it has run once)."""
    return rec(starts=1, pid=42, started_at=started_at, **kw)


def exit_at(at: float, *, running: bool = True) -> Callable[[InstanceRecord], object]:
    spec = SPEC if running else None
    return lambda r: restart.after_exit(r, spec, at=at, policy=P)


def start_fails_at(at: float) -> Callable[[InstanceRecord], object]:
    return lambda r: restart.after_start_failure(r, at=at, policy=P)


def loops_at(now: float, *, running: bool) -> Callable[[InstanceRecord], object]:
    return lambda r: restart.in_crash_loop(r, SPEC, running=running, now=now)


def start_due_at(now: float) -> Callable[[InstanceRecord], object]:
    return lambda r: restart.start_due(r.next_start_at, now=now)


def counts_as_restart() -> Callable[[InstanceRecord], object]:
    return lambda r: restart.is_restart(r, r.next_start_at)


RESTART_CASES: list[tuple[str, InstanceRecord, Callable[[InstanceRecord], object], object]] = [
    # Crash back-off.
    ("first crash waits the base", ran(100.0), exit_at(105.0), AfterExit(10.0, 115.0, 1)),
    (
        "a second quick crash doubles the wait and is a crash loop",
        ran(100.0, backoff_s=10.0, crash_streak=1),
        exit_at(105.0),
        AfterExit(20.0, 125.0, 2, 105.0),
    ),
    (
        "doubling is capped at max",
        ran(100.0, backoff_s=160.0),
        exit_at(105.0),
        AfterExit(300.0, 405.0, 1),
    ),
    (
        "at the cap it stays there",
        ran(100.0, backoff_s=300.0),
        exit_at(105.0),
        AfterExit(300.0, 405.0, 1),
    ),
    (
        "up for the reset period: back to the base",
        ran(100.0, backoff_s=300.0),
        exit_at(700.0),
        AfterExit(10.0, 710.0, 1),
    ),
    (
        "just short of the reset period still doubles",
        ran(100.0, backoff_s=40.0),
        exit_at(699.0),
        AfterExit(80.0, 779.0, 1),
    ),
    (
        "a crash loop keeps the time it began",
        ran(100.0, backoff_s=10.0, crash_streak=2, crash_loop_since=90.0),
        exit_at(105.0),
        AfterExit(20.0, 125.0, 3, 90.0),
    ),
    (
        "an exit after staying up min_ready starts a new streak",
        ran(100.0, backoff_s=10.0, crash_streak=3, crash_loop_since=90.0),
        exit_at(110.0),
        AfterExit(20.0, 130.0, 1),
    ),
    (
        "an exit with no known start counts as no uptime",
        rec(backoff_s=10.0, crash_streak=1),
        exit_at(105.0),
        AfterExit(20.0, 125.0, 2, 105.0),
    ),
    (
        "an instance not desired RUNNING is not restarted and its streak ends",
        ran(100.0, backoff_s=20.0, crash_streak=2, crash_loop_since=90.0),
        exit_at(105.0, running=False),
        AfterExit(20.0, None),
    ),
    # Start-failure back-off.
    (
        "a first failed start waits the base",
        rec(),
        start_fails_at(50.0),
        AfterStartFailure(10.0, 60.0, 50.0),
    ),
    (
        "failed starts double the wait and keep when failing began",
        rec(backoff_s=10.0, start_error="exec x: not found", start_failed_since=50.0),
        start_fails_at(60.0),
        AfterStartFailure(20.0, 80.0, 50.0),
    ),
    (
        "failed starts are capped at max",
        rec(backoff_s=200.0, start_error="exec x: not found", start_failed_since=50.0),
        start_fails_at(900.0),
        AfterStartFailure(300.0, 1200.0, 50.0),
    ),
    (
        "a failed start after crashes continues their back-off",
        rec(starts=1, backoff_s=40.0),
        start_fails_at(150.0),
        AfterStartFailure(80.0, 230.0, 150.0),
    ),
    # When a start is due, and whether it is a restart.
    ("nothing pending: start now", rec(), start_due_at(0.0), True),
    ("no start while backing off", rec(next_start_at=115.0), start_due_at(114.9), False),
    ("start once the back-off has elapsed", rec(next_start_at=115.0), start_due_at(115.0), True),
    ("a first start is no restart", rec(), counts_as_restart(), False),
    (
        "a start failure before any start is retried without counting a restart",
        rec(start_error="exec x: not found", next_start_at=110.0),
        counts_as_restart(),
        False,
    ),
    (
        "the start that ends a crash back-off is a restart",
        rec(starts=1, next_start_at=115.0),
        counts_as_restart(),
        True,
    ),
    (
        "a deliberately stopped instance starting again is no restart",
        rec(starts=1, last_exit="signal 15 (SIGTERM)"),
        counts_as_restart(),
        False,
    ),
    # Crash loop.
    (
        "one quick exit is back-off, not yet a loop",
        rec(crash_streak=1),
        loops_at(0.0, running=False),
        False,
    ),
    ("two quick exits in a row are a loop", rec(crash_streak=2), loops_at(0, running=False), True),
    (
        "a loop holds while the restarted process is younger than min_ready",
        rec(crash_streak=2, started_at=130.0),
        loops_at(139.9, running=True),
        True,
    ),
    (
        "a loop ends once the process stayed up min_ready",
        rec(crash_streak=2, started_at=130.0),
        loops_at(140.0, running=True),
        False,
    ),
]


@pytest.mark.parametrize(
    ("record", "decide", "expected"),
    [c[1:] for c in RESTART_CASES],
    ids=[c[0] for c in RESTART_CASES],
)
def test_restart_decision(
    record: InstanceRecord, decide: Callable[[InstanceRecord], object], expected: object
) -> None:
    """Each restart decision comes out as the kubelet-like rules in `agent.restart` say."""
    assert decide(record) == expected


@pytest.mark.parametrize(
    ("previous", "uptime", "expected"),
    [
        (0.0, 0.0, 10.0),
        (10.0, 1.0, 20.0),
        (20.0, 1.0, 40.0),
        (160.0, 1.0, 300.0),
        (300.0, 599.9, 300.0),
        (300.0, 600.0, 10.0),
        (40.0, 10_000.0, 10.0),
    ],
)
def test_backoff_delay(previous: float, uptime: float, expected: float) -> None:
    """Back-off: base, doubling, capped, reset after a long enough run."""
    assert restart.backoff_delay(previous, uptime, policy=P) == expected


@pytest.mark.parametrize(("min_ready_ms", "expected"), [(10_000, 10.0), (0, 1.0), (500, 1.0)])
def test_min_up_has_a_floor(min_ready_ms: int, expected: float) -> None:
    """A process must stay up min_ready, and at least a second, to end a crash streak."""
    assert restart.min_up_s(WorkloadSpec(command=("x",), min_ready_ms=min_ready_ms)) == expected
