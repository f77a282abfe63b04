"""Table tests for the agent's pure planner: desired vs actual -> actions, and status."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.backoff import next_crash_delay, reconnect_delay
from agent.planner import (
    CRASH_LOOP,
    HEALTH_CHECK_FAILING,
    START_FAILED,
    Action,
    Actual,
    ConfirmRemoved,
    Forget,
    RecordExit,
    Start,
    Stop,
    Transition,
    plan,
    status_of,
)
from agent.runtime.base import ExitInfo
from agent.settings import Settings
from agent.state import Assignment, InstanceRecord
from keel.model import Desired, Phase, WorkloadSpec

S = Settings(
    host="h1",
    state_dir=Path("/nonexistent"),
    backoff_base_s=10,
    backoff_max_s=300,
    backoff_reset_s=600,
)
SPEC = WorkloadSpec(command=("sleep", "1000"), stop_grace_ms=3000, min_ready_ms=10_000)
ID = "web-1-abc"


def want(desired: Desired = Desired.RUNNING) -> Assignment:
    return Assignment(ID, "web", 1, desired, SPEC)


def rec(**kw: object) -> InstanceRecord:
    base: dict[str, object] = {"instance_id": ID, "workload": "web"}
    base.update(kw)
    return InstanceRecord(**base)  # type: ignore[arg-type]


def running(**kw: object) -> Actual:
    return Actual(record=rec(pid=42, starts=1, started_at=100.0, **kw), running=True)


def exited(exit_at: float, **kw: object) -> Actual:
    r = rec(pid=42, starts=1, started_at=100.0, **kw)
    return Actual(record=r, running=False, exited=ExitInfo(code=1), exited_at=exit_at)


PLAN_CASES: list[tuple[str, Assignment | None, Actual | None, float, list[Action]]] = [
    ("new instance starts", want(), None, 100.0, [Start(ID, want(), restart=False)]),
    ("running instance left alone", want(), running(), 200.0, []),
    (
        "first crash waits the base back-off",
        want(),
        exited(105.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 10.0, 115.0, 1)],
    ),
    (
        "second quick crash doubles the back-off",
        want(),
        exited(105.0, backoff_s=10.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 20.0, 125.0, 1)],
    ),
    (
        "back-off doubling is capped",
        want(),
        exited(105.0, backoff_s=160.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 300.0, 405.0, 1)],
    ),
    (
        "back-off at the cap stays there",
        want(),
        exited(105.0, backoff_s=300.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 300.0, 405.0, 1)],
    ),
    (
        "back-off resets after running long enough",
        want(),
        exited(700.0, backoff_s=300.0),
        700.0,
        [RecordExit(ID, "exit code 1", 700.0, 10.0, 710.0, 1)],
    ),
    (
        "just short of the reset period still doubles",
        want(),
        exited(699.0, backoff_s=40.0),
        699.0,
        [RecordExit(ID, "exit code 1", 699.0, 80.0, 779.0, 1)],
    ),
    (
        "a second quick exit makes a crash loop, since that exit",
        want(),
        exited(105.0, backoff_s=10.0, crash_streak=1),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 20.0, 125.0, 2, 105.0)],
    ),
    (
        "a crash loop keeps the time it began",
        want(),
        exited(105.0, backoff_s=10.0, crash_streak=2, crash_loop_since=90.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 20.0, 125.0, 3, 90.0)],
    ),
    (
        "an exit after staying up min_ready starts a new streak",
        want(),
        exited(110.0, backoff_s=10.0, crash_streak=3, crash_loop_since=90.0),
        110.0,
        [RecordExit(ID, "exit code 1", 110.0, 20.0, 130.0, 1)],
    ),
    (
        "no restart while backing off",
        want(),
        Actual(record=rec(starts=1, backoff_s=10.0, next_start_at=115.0)),
        114.9,
        [],
    ),
    (
        "restart once the back-off has elapsed",
        want(),
        Actual(record=rec(starts=1, backoff_s=10.0, next_start_at=115.0)),
        115.0,
        [Start(ID, want(), restart=True)],
    ),
    (
        "an exit seen late is recorded and restarted in one pass",
        want(),
        exited(105.0),
        200.0,
        [RecordExit(ID, "exit code 1", 105.0, 10.0, 115.0, 1), Start(ID, want(), restart=True)],
    ),
    (
        "a start failure before any start is retried without counting a restart",
        want(),
        Actual(record=rec(start_error="exec x: not found", next_start_at=110.0)),
        110.0,
        [Start(ID, want(), restart=False)],
    ),
    (
        "a deliberately stopped instance starts again at once",
        want(),
        Actual(record=rec(starts=1, last_exit="signal 15 (SIGTERM)")),
        100.0,
        [Start(ID, want(), restart=False)],
    ),
    (
        "desired STOPPED stops a running instance with the spec's grace",
        want(Desired.STOPPED),
        running(),
        200.0,
        [Stop(ID, 3.0, "desired STOPPED")],
    ),
    ("desired STOPPED and stopped: nothing", want(Desired.STOPPED), Actual(record=rec()), 1.0, []),
    ("desired STOPPED, never started: nothing", want(Desired.STOPPED), None, 1.0, []),
    (
        "desired STOPPED and exited: exit recorded, no restart",
        want(Desired.STOPPED),
        exited(105.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 0.0, None)],
    ),
    (
        "tombstone of a running instance: stop first",
        want(Desired.REMOVED),
        running(),
        200.0,
        [Stop(ID, 3.0, "desired REMOVED")],
    ),
    (
        "tombstone of a stopped instance: confirm removal",
        want(Desired.REMOVED),
        Actual(record=rec()),
        200.0,
        [ConfirmRemoved(ID)],
    ),
    (
        "tombstone never started here: confirm",
        want(Desired.REMOVED),
        None,
        1.0,
        [ConfirmRemoved(ID)],
    ),
    (
        "tombstone whose process just exited: record and confirm",
        want(Desired.REMOVED),
        exited(105.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 0.0, None), ConfirmRemoved(ID)],
    ),
    (
        "running orphan is stopped with its recorded grace",
        None,
        running(stop_grace_s=7.0),
        200.0,
        [Stop(ID, 7.0, "not desired")],
    ),
    ("stopped orphan is forgotten", None, Actual(record=rec()), 200.0, [Forget(ID)]),
    (
        "orphan that exited: recorded and forgotten",
        None,
        exited(105.0),
        105.0,
        [RecordExit(ID, "exit code 1", 105.0, 0.0, None), Forget(ID)],
    ),
    (
        "starting instance is left alone",
        want(),
        Actual(record=rec(), transition=Transition.STARTING),
        1.0,
        [],
    ),
    (
        "stopping tombstone is left alone until stopped",
        want(Desired.REMOVED),
        Actual(record=rec(pid=4), running=True, transition=Transition.STOPPING),
        1.0,
        [],
    ),
]


@pytest.mark.parametrize(
    ("desired", "actual", "now", "expected"),
    [c[1:] for c in PLAN_CASES],
    ids=[c[0] for c in PLAN_CASES],
)
def test_plan(
    desired: Assignment | None, actual: Actual | None, now: float, expected: list[Action]
) -> None:
    """The planner emits exactly the expected actions for one instance."""
    d = {ID: desired} if desired is not None else {}
    a = {ID: actual} if actual is not None else {}
    assert plan(d, a, now=now, settings=S) == expected


def test_plan_orders_instances_and_keeps_each_independent() -> None:
    """Actions come in instance-id order and one instance's state does not affect another."""
    other = Assignment("a-other", "web", 1, Desired.RUNNING, SPEC)
    actions = plan({ID: want(), "a-other": other}, {ID: running()}, now=200.0, settings=S)
    assert actions == [Start("a-other", other, restart=False)]


R = Desired.RUNNING
STATUS_CASES: list[tuple[str, Assignment, Actual | None, float, dict[str, object]]] = [
    ("not started yet is PENDING", want(), None, 1.0, {"phase": Phase.PENDING}),
    (
        "stopped and not started is STOPPED",
        want(Desired.STOPPED),
        None,
        1.0,
        {"phase": Phase.STOPPED},
    ),
    (
        "starting",
        want(),
        Actual(record=rec(), transition=Transition.STARTING),
        1.0,
        {"phase": Phase.STARTING, "ready": False},
    ),
    (
        "stopping",
        want(Desired.STOPPED),
        Actual(record=rec(pid=42), running=True, transition=Transition.STOPPING),
        1.0,
        {"phase": Phase.STOPPING, "pid": 42},
    ),
    (
        "first start is ready at once",
        want(),
        running(),
        100.5,
        {"phase": Phase.RUNNING, "ready": True, "pid": 42, "started_at": 100.0},
    ),
    (
        "restarted and younger than min_ready is not ready",
        want(),
        Actual(record=rec(pid=42, starts=2, started_at=100.0, restart_count=1), running=True),
        109.9,
        {"phase": Phase.RUNNING, "ready": False, "restart_count": 1},
    ),
    (
        "restarted and up for min_ready is ready",
        want(),
        Actual(record=rec(pid=42, starts=2, started_at=100.0), running=True),
        110.0,
        {"phase": Phase.RUNNING, "ready": True},
    ),
    (
        "failing health check is not ready",
        want(),
        Actual(
            record=rec(pid=42, starts=1, started_at=100.0),
            running=True,
            healthy=False,
            health_message="tcp probe: refused",
        ),
        500.0,
        {
            "phase": Phase.RUNNING,
            "ready": False,
            "reason": HEALTH_CHECK_FAILING,
            "message": "tcp probe: refused",
        },
    ),
    ("an exit not yet recorded is not ready", want(), exited(105.0), 105.0, {"ready": False}),
    (
        "crash back-off is FAILED with the last exit",
        want(),
        Actual(
            record=rec(
                starts=1,
                last_exit="exit code 3",
                backoff_s=20.0,
                next_start_at=130.0,
                restart_count=2,
            )
        ),
        120.0,
        {
            "phase": Phase.FAILED,
            "reason": CRASH_LOOP,
            "restart_count": 2,
            "last_exit": "exit code 3",
        },
    ),
    (
        "start failure is FAILED with the exec error",
        want(),
        Actual(record=rec(start_error="exec nope: not found", next_start_at=130.0)),
        120.0,
        {"phase": Phase.FAILED, "reason": START_FAILED},
    ),
    (
        "desired STOPPED and stopped is STOPPED",
        want(Desired.STOPPED),
        Actual(record=rec(starts=1, last_exit="signal 15 (SIGTERM)")),
        1.0,
        {"phase": Phase.STOPPED, "last_exit": "signal 15 (SIGTERM)"},
    ),
]


@pytest.mark.parametrize(
    ("assignment", "actual", "now", "fields"),
    [c[1:] for c in STATUS_CASES],
    ids=[c[0] for c in STATUS_CASES],
)
def test_status_of(
    assignment: Assignment, actual: Actual | None, now: float, fields: dict[str, object]
) -> None:
    """The reported status has the expected phase, readiness, reason and counters."""
    report = status_of(assignment, actual, now=now)
    for name, value in fields.items():
        assert getattr(report, name) == value, name


def test_crash_backoff_message_names_last_exit_and_next_try() -> None:
    """A crash-looping instance says how it last exited and when it is tried next."""
    x = Actual(record=rec(starts=1, last_exit="exit code 3", backoff_s=20.0, next_start_at=130.0))
    report = status_of(want(), x, now=120.0)
    assert "exit code 3" in report.message
    assert "1970-01-01T00:02:10Z" in report.message


def test_start_failure_message_carries_exec_error() -> None:
    """A start failure reports the exec error as its message."""
    x = Actual(record=rec(start_error="exec nope: executable file not found in PATH"))
    assert status_of(want(), x, now=1.0).message.startswith("exec nope: executable file")


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
def test_next_crash_delay(previous: float, uptime: float, expected: float) -> None:
    """Crash back-off: base, doubling, capped, reset after a long enough run."""
    assert next_crash_delay(previous, uptime, base_s=10, max_s=300, reset_s=600) == expected


@pytest.mark.parametrize(
    ("attempt", "rng", "expected"),
    [
        (0, 0.0, 0.1),
        (0, 1.0, 0.2),
        (1, 0.0, 0.2),
        (3, 1.0, 1.6),
        (10, 0.0, 5.0),
        (10, 1.0, 10.0),
        (1000, 0.5, 7.5),
    ],
)
def test_reconnect_delay_is_jittered_exponential_and_capped(
    attempt: int, rng: float, expected: float
) -> None:
    """Reconnect waits grow from the base, stay under the cap, and carry jitter."""
    got = reconnect_delay(attempt, base_s=0.2, max_s=10.0, rng=lambda: rng)
    assert got == pytest.approx(expected)
