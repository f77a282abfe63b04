"""Table tests for the agent's pure planner: desired vs actual -> actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.planner import (
    Action,
    Actual,
    ConfirmRemoved,
    Forget,
    RecordExit,
    Start,
    Stop,
    Transition,
    plan,
)
from agent.runtime.base import ExitInfo
from agent.settings import Settings
from agent.state import Assignment, InstanceRecord
from keel.model import Desired, WorkloadSpec

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
        [Start(ID, want(), restart=False, retry=True)],
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


SINGLETON = Assignment(
    ID,
    "web",
    1,
    Desired.RUNNING,
    WorkloadSpec(command=("sleep", "1000"), stop_after_disconnect_ms=30_000),
)
WHY = "no contact with the control plane for {:.0f}s (on_disconnect)"

# (id, assignment, actual, seconds the control plane has not recorded the host, actions)
SELF_FENCE_CASES: list[tuple[str, Assignment, Actual | None, float | None, list[Action]]] = [
    ("in contact: keeps running", SINGLETON, running(), 5.0, []),
    ("never in contact yet: keeps running", SINGLETON, running(), None, []),
    ("just under stop_after: keeps running", SINGLETON, running(), 29.9, []),
    ("cut off stop_after: stops", SINGLETON, running(), 30.0, [Stop(ID, 10.0, WHY.format(30))]),
    ("cut off and stopped: does not start", SINGLETON, Actual(record=rec()), 60.0, []),
    ("not running, in contact again: starts", SINGLETON, None, 1.0, [Start(ID, SINGLETON, False)]),
    ("without on_disconnect: keeps running", want(), running(), 3600.0, []),
]


@pytest.mark.parametrize(
    ("desired", "actual", "cut_off_s", "expected"),
    [c[1:] for c in SELF_FENCE_CASES],
    ids=[c[0] for c in SELF_FENCE_CASES],
)
def test_self_fencing(
    desired: Assignment, actual: Actual | None, cut_off_s: float | None, expected: list[Action]
) -> None:
    """An instance with on_disconnect.stop_after stops on a host cut off that long, and starts
    again only once the control plane is heard."""
    a = {ID: actual} if actual is not None else {}
    assert plan({ID: desired}, a, now=200.0, settings=S, cut_off_s=cut_off_s) == expected
