"""Table tests for what the agent reports about an instance (status_of): phase, readiness,
reason, message."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.health import ProbeResult
from agent.live import Live, actual_of
from agent.planner import Actual, Transition
from agent.runtime.base import ExitInfo
from agent.state import Assignment, InstanceRecord
from agent.status import removal_confirmed, status_of
from agent.stuck import CRASH_LOOP, HEALTH_CHECK_FAILING, START_FAILED
from keel.model import Desired, HealthCheck, Phase, WorkloadSpec

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
    (
        "just started and not probed yet is not ready, and not failing",
        want(),
        Actual(
            record=rec(pid=42, starts=1, started_at=100.0),
            running=True,
            healthy=False,
            health_known=False,
            health_message="no health result yet",
        ),
        100.0,
        {
            "phase": Phase.RUNNING,
            "ready": False,
            "reason": "",
            "message": "waiting for its first health check",
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


def test_removal_confirmation_is_stopped_and_removed() -> None:
    """A confirmed tombstone is reported STOPPED and removed, with its last exit."""
    report = removal_confirmed(ID, rec(restart_count=2, last_exit="signal 15 (SIGTERM)"))
    assert (report.phase, report.removed, report.restart_count, report.last_exit) == (
        Phase.STOPPED,
        True,
        2,
        "signal 15 (SIGTERM)",
    )


def test_a_process_not_probed_yet_has_no_health_result_and_one_probed_has() -> None:
    """actual_of: with a health check and no probe of the current process yet, its health is
    unknown (not ready, not failing); once a probe answers it is that probe's; with no health
    check it is known and healthy."""
    checked = Assignment(ID, "web", 1, Desired.RUNNING,
                         replace(SPEC, health=HealthCheck(exec=("true",))))  # fmt: skip
    record, live = rec(pid=42, starts=1, started_at=100.0), Live(handle=None)
    unknown = actual_of(record, live, checked, probed=None, failing_since=None)
    assert (unknown.healthy, unknown.health_known) == (False, False)
    failing = actual_of(record, live, checked, probed=ProbeResult(False, "x"), failing_since=1.0)
    assert (failing.healthy, failing.health_known) == (False, True)
    plain = actual_of(record, live, want(), probed=None, failing_since=None)
    assert (plain.healthy, plain.health_known) == (True, True)
