"""Table tests for the agent's own stuck verdicts (`agent.stuck`), alone and on the report."""

from __future__ import annotations

import pytest

from agent.planner import Actual, Transition
from agent.runtime.base import ExitInfo
from agent.state import Assignment, InstanceRecord
from agent.status import status_of
from agent.stuck import verdict
from keel.model import Desired, WorkloadSpec
from keel.stuck import GUIDES, Reason

SPEC = WorkloadSpec(command=("sleep", "1000"), stop_grace_ms=3000, min_ready_ms=10_000)
ID = "web-1-abc"


def want(desired: Desired = Desired.RUNNING, spec: WorkloadSpec = SPEC) -> Assignment:
    return Assignment(ID, "web", 1, desired, spec)


def rec(**kw: object) -> InstanceRecord:
    base: dict[str, object] = {"instance_id": ID, "workload": "web"}
    base.update(kw)
    return InstanceRecord(**base)  # type: ignore[arg-type]


def looping(**kw: object) -> InstanceRecord:
    """A record two quick exits into a crash loop, backing off until 130."""
    fields: dict[str, object] = {
        "starts": 2,
        "restart_count": 1,
        "last_exit": "exit code 1",
        "backoff_s": 20.0,
        "next_start_at": 130.0,
        "crash_streak": 2,
        "crash_loop_since": 110.0,
        "started_at": 109.0,
    }
    fields.update(kw)
    return rec(**fields)


STUCK_CASES: list[tuple[str, Assignment, Actual, float, str | None, str]] = [
    # (case, assignment, actual, now, stuck reason or None, reported reason)
    (
        "one crash is back-off, not yet a loop",
        want(),
        Actual(record=looping(crash_streak=1, crash_loop_since=None)),
        120.0,
        None,
        "CRASH_LOOP",
    ),
    (
        "two quick exits in a row are a crash loop",
        want(),
        Actual(record=looping()),
        120.0,
        "CRASH_LOOP",
        "CRASH_LOOP",
    ),
    (
        "a crash loop stays stuck while the restarted process is younger than min_ready",
        want(),
        Actual(record=looping(pid=7, started_at=130.0, next_start_at=None), running=True),
        139.9,
        "CRASH_LOOP",
        "CRASH_LOOP",
    ),
    (
        "a crash loop clears once the process stayed up min_ready",
        want(),
        Actual(record=looping(pid=7, started_at=130.0, next_start_at=None), running=True),
        140.0,
        None,
        "",
    ),
    (
        "a crash loop stays stuck through the restart under way",
        want(),
        Actual(record=looping(), transition=Transition.STARTING),
        130.0,
        "CRASH_LOOP",
        "CRASH_LOOP",
    ),
    (
        "a crash loop of an instance now desired STOPPED is not stuck",
        want(Desired.STOPPED),
        Actual(record=looping()),
        120.0,
        None,
        "",
    ),
    (
        "a crash loop being stopped is not stuck (only a stop past its grace is)",
        want(Desired.STOPPED),
        Actual(
            record=looping(pid=7, stop_grace_s=3.0),
            running=True,
            transition=Transition.STOPPING,
            stopping_since=120.0,
        ),
        121.0,
        None,
        "",
    ),
    (
        "a start failure of an instance now desired STOPPED is not stuck",
        want(Desired.STOPPED),
        Actual(record=rec(start_error="exec nope: not found", start_failed_since=100.0)),
        100.0,
        None,
        "",
    ),
    (
        "a start failure is stuck at once",
        want(),
        Actual(record=rec(start_error="exec nope: not found", start_failed_since=100.0)),
        100.0,
        "START_FAILED",
        "START_FAILED",
    ),
    (
        "a failing health check is reported but not stuck before health-stuck-after",
        want(),
        Actual(
            record=rec(pid=7, starts=1, started_at=50.0),
            running=True,
            healthy=False,
            health_message="tcp probe: refused",
            unhealthy_since=100.0,
        ),
        129.9,
        None,
        "HEALTH_CHECK_FAILING",
    ),
    (
        "a health check failing for health-stuck-after is stuck",
        want(),
        Actual(
            record=rec(pid=7, starts=1, started_at=50.0),
            running=True,
            healthy=False,
            health_message="tcp probe: refused",
            unhealthy_since=100.0,
        ),
        130.0,
        "HEALTH_CHECK_FAILING",
        "HEALTH_CHECK_FAILING",
    ),
    (
        "a stop within its grace is not stuck",
        want(Desired.STOPPED),
        Actual(
            record=rec(pid=7, stop_grace_s=3.0),
            running=True,
            transition=Transition.STOPPING,
            stopping_since=100.0,
        ),
        103.9,
        None,
        "",
    ),
    (
        "a process still there after its grace and SIGKILL is STOP_TIMEOUT",
        want(Desired.STOPPED),
        Actual(
            record=rec(pid=7, stop_grace_s=3.0),
            running=True,
            transition=Transition.STOPPING,
            stopping_since=100.0,
        ),
        104.0,
        "STOP_TIMEOUT",
        "STOP_TIMEOUT",
    ),
]


@pytest.mark.parametrize(
    ("assignment", "actual", "now", "stuck", "reason"),
    [c[1:] for c in STUCK_CASES],
    ids=[c[0] for c in STUCK_CASES],
)
def test_stuck_verdict(
    assignment: Assignment, actual: Actual, now: float, stuck: str | None, reason: str
) -> None:
    """The verdict names the stuck reason (or none); the report carries it and its reason."""
    found = verdict(assignment, actual, now=now, host="h1", health_stuck_after_s=30.0)
    report = status_of(assignment, actual, now=now, host="h1", health_stuck_after_s=30.0)
    assert report.stuck == found
    assert (report.stuck.reason if report.stuck else None) == stuck
    assert report.reason == reason
    if report.stuck is not None:
        guide = GUIDES[Reason(report.stuck.reason)]
        assert report.stuck.runbook == guide.runbook
        assert ID in report.stuck.next_command or "web" in report.stuck.next_command
        assert report.message.startswith(report.stuck.message)


def test_crash_loop_message_has_exit_restarts_next_try_and_stderr() -> None:
    """The CRASH_LOOP message says how it exited, how often, when next, and stderr's end."""
    x = Actual(record=looping(restart_count=4), stderr_tail="boom: config missing\n")
    report = status_of(want(), x, now=120.0, host="h1")
    assert report.stuck is not None
    message = report.stuck.message
    assert "exit code 1" in message and "restarts: 4" in message
    assert "1970-01-01T00:02:10Z" in message
    assert message.endswith("boom: config missing\n")
    assert report.stuck.since == 110.0
    assert report.stuck.next_command == f"keelctl logs {ID} --tail 50"


def test_start_failure_since_is_the_first_failure() -> None:
    """START_FAILED is stuck since the first failure of the run, with the exec error."""
    x = Actual(record=rec(start_error="exec nope: not found", start_failed_since=90.0))
    report = status_of(want(), x, now=120.0, host="h1")
    assert report.stuck is not None
    assert report.stuck.since == 90.0
    assert report.stuck.message.startswith("exec nope: not found")


def test_exit_record_is_still_an_exit() -> None:
    """An unrecorded exit of a crash-looping instance is reported with the loop verdict."""
    x = Actual(record=looping(), exited=ExitInfo(code=1), exited_at=120.0)
    report = status_of(want(), x, now=120.0)
    assert report.stuck is not None and report.stuck.reason == "CRASH_LOOP"
