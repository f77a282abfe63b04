"""The stuck detector's verdicts: which reason, when, and when not (pure, table-driven)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.reconcile import ReconcileFailure
from controlplane.rollout import WorkloadPlan
from controlplane.scheduler import Unschedulable, UnschedulableCode
from controlplane.store import HostRow, InstanceRow, WorkloadRow
from controlplane.verdicts import judge_instance, judge_workload, may_be_stuck, workload_converged
from keel.model import Desired, HostState, Phase, Resources, Workload, WorkloadSpec
from keel.stuck import GUIDES, Reason

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DEADLINE_S = 120.0


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


HOST = HostRow(
    name="host-1",
    labels={},
    capacity=Resources(2000, 4096),
    allocated=Resources(0, 0),
    schedulable=True,
    cordon_reason="",
    state=HostState.READY,
    state_since=ago(3600),
    last_heartbeat=ago(1),
    connected=True,
    agent_version="test",
    revision=1,
    instances=1,
)

INSTANCE = InstanceRow(
    id="web-1-abc123",
    workload="web",
    generation=1,
    host="host-1",
    spec=WorkloadSpec(command=("sleep", "1000")),
    desired=Desired.RUNNING,
    desired_changed_at=ago(10),
    revision=1,
    created_at=ago(10),
    phase=Phase.RUNNING,
    pid=42,
    restart_count=0,
    last_exit="",
    reason="",
    message="",
    ports={},
    ready=True,
    started_at=ago(9),
    observed_at=ago(1),
    unconverged_since=None,
)


# Placed, and never reported by its agent: no phase but PENDING, no pid, no observed time.
NEVER_REPORTED = replace(
    INSTANCE,
    phase=Phase.PENDING,
    pid=0,
    ready=False,
    started_at=None,
    observed_at=None,
    unconverged_since=ago(300),
)


@pytest.mark.parametrize(
    ("instance", "host", "expected"),
    [
        pytest.param(INSTANCE, HOST, None, id="converged"),
        pytest.param(
            replace(INSTANCE, phase=Phase.STARTING, ready=False, unconverged_since=ago(30)),
            HOST,
            None,
            id="starting-within-deadline",
        ),
        pytest.param(
            replace(
                INSTANCE,
                phase=Phase.FAILED,
                ready=False,
                reason="START_FAILED",
                message="exec /x: No such file or directory",
                agent_stuck=True,
                unconverged_since=ago(1),
            ),
            HOST,
            Reason.START_FAILED,
            id="start-failed-at-once",
        ),
        pytest.param(
            replace(
                INSTANCE,
                phase=Phase.FAILED,
                ready=False,
                reason="CRASH_LOOP",
                message="last exit: exit code 1",
                agent_stuck=True,
                unconverged_since=ago(1),
            ),
            HOST,
            Reason.CRASH_LOOP,
            id="crash-loop-at-once",
        ),
        pytest.param(
            replace(
                INSTANCE,
                ready=False,
                reason="HEALTH_CHECK_FAILING",
                message="tcp http: connection refused",
                unconverged_since=ago(30),
            ),
            HOST,
            None,
            id="health-failing-waits-for-the-deadline",
        ),
        pytest.param(
            replace(
                INSTANCE,
                ready=False,
                reason="HEALTH_CHECK_FAILING",
                message="tcp http: connection refused",
                unconverged_since=ago(300),
            ),
            HOST,
            Reason.HEALTH_CHECK_FAILING,
            id="health-failing-past-deadline",
        ),
        pytest.param(
            replace(INSTANCE, ready=False, unconverged_since=ago(300)),
            HOST,
            Reason.HEALTH_CHECK_FAILING,
            id="running-not-ready-past-deadline",
        ),
        pytest.param(
            replace(INSTANCE, phase=Phase.PENDING, ready=False, unconverged_since=ago(300)),
            HOST,
            Reason.START_FAILED,
            id="never-started-past-deadline",
        ),
        pytest.param(
            replace(
                INSTANCE,
                desired=Desired.REMOVED,
                phase=Phase.STOPPING,
                ready=False,
                unconverged_since=ago(300),
            ),
            HOST,
            Reason.STOP_TIMEOUT,
            id="stop-past-deadline",
        ),
        pytest.param(
            replace(INSTANCE, phase=Phase.STARTING, ready=False, unconverged_since=ago(300)),
            replace(HOST, connected=False),
            Reason.AGENT_DISCONNECTED,
            id="agent-disconnected-past-deadline",
        ),
        pytest.param(
            INSTANCE,
            replace(HOST, state=HostState.NOT_READY, state_since=ago(300), connected=False),
            Reason.HOST_UNREACHABLE,
            id="host-not-ready-past-deadline",
        ),
        pytest.param(
            INSTANCE,
            replace(HOST, state=HostState.NOT_READY, state_since=ago(30), connected=False),
            None,
            id="host-not-ready-within-deadline",
        ),
        pytest.param(
            NEVER_REPORTED,
            HOST,
            Reason.NOT_STARTED,
            id="never-reported-by-a-heartbeating-agent",
        ),
        pytest.param(
            NEVER_REPORTED,
            # A frozen agent: its stream stays open (connected) but heartbeats stopped.
            replace(HOST, state=HostState.NOT_READY, state_since=ago(30), last_heartbeat=ago(33)),
            Reason.HOST_UNREACHABLE,
            id="never-reported-on-a-frozen-agent-is-not-start-failed",
        ),
        pytest.param(
            replace(NEVER_REPORTED, unconverged_since=ago(30)),
            HOST,
            None,
            id="never-reported-within-deadline",
        ),
    ],
)
def test_instance_verdicts(instance: InstanceRow, host: HostRow, expected: Reason | None) -> None:
    """Each situation yields its reason from the closed set, and only past the deadline
    unless the agent itself named a terminal state."""
    verdict = judge_instance(instance, host, deadline_s=DEADLINE_S, now=NOW)
    assert (verdict.reason if verdict else None) == expected
    if verdict is not None:
        assert verdict.message


def test_an_instance_on_a_frozen_agent_names_the_host_and_its_last_heartbeat() -> None:
    """The verdict says where to look: the host, since when, and that nothing was observed."""
    frozen = replace(HOST, state=HostState.NOT_READY, state_since=ago(30), last_heartbeat=ago(33))
    verdict = judge_instance(NEVER_REPORTED, frozen, deadline_s=DEADLINE_S, now=NOW)
    assert verdict is not None
    assert verdict.reason is Reason.HOST_UNREACHABLE
    assert "host-1 is NOT_READY" in verdict.message
    assert "last heartbeat 33s ago" in verdict.message
    assert "last observed never" in verdict.message
    assert GUIDES[verdict.reason].runbook == "runbooks/stuck/host-unreachable.md"


def test_an_instance_never_reported_by_a_live_agent_is_not_started() -> None:
    """A heartbeating agent that never reports the instance: NOT_STARTED, not START_FAILED
    (whose runbook is about exec errors)."""
    verdict = judge_instance(NEVER_REPORTED, HOST, deadline_s=DEADLINE_S, now=NOW)
    assert verdict is not None
    assert verdict.reason is Reason.NOT_STARTED
    assert "never reported by its agent" in verdict.message
    assert GUIDES[verdict.reason].runbook == "runbooks/stuck/not-started.md"


WORKLOAD = WorkloadRow(
    workload=Workload(name="web", spec=INSTANCE.spec, replicas=1),
    generation=1,
    deleting=False,
    created_at=ago(600),
    updated_at=ago(600),
)
NO_HOST = Unschedulable(UnschedulableCode.NO_MATCHING_HOST, "no host has labels role=gpu")


@pytest.mark.parametrize(
    ("row", "plan", "own", "expected"),
    [
        pytest.param(WORKLOAD, WorkloadPlan((), (), None, None), [INSTANCE], None, id="converged"),
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(300)),
            WorkloadPlan((), (), NO_HOST, None),
            [],
            Reason.UNSCHEDULABLE,
            id="unschedulable-past-deadline",
        ),
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(10)),
            WorkloadPlan((), (), NO_HOST, None),
            [],
            None,
            id="unschedulable-within-deadline",
        ),
        pytest.param(
            replace(WORKLOAD, generation=2, unconverged_since=ago(300)),
            WorkloadPlan((), (), None, "budget: 0 of 1 may be unavailable"),
            [INSTANCE],
            Reason.ROLLOUT_BLOCKED,
            id="rollout-blocked",
        ),
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(300)),
            WorkloadPlan((), (), None, None),
            [replace(INSTANCE, ready=False)],
            None,
            id="instance-trouble-is-reported-on-the-instance",
        ),
    ],
)
def test_workload_verdicts(
    row: WorkloadRow, plan: WorkloadPlan, own: list[InstanceRow], expected: Reason | None
) -> None:
    """A workload is stuck itself only for placement or a blocked rollout."""
    verdict = judge_workload(row, plan, own, set(), now=NOW)
    assert (verdict.reason if verdict else None) == expected
    # The stuck detector judges (and plans) only what may be stuck: nothing else has a verdict.
    assert verdict is None or may_be_stuck(row, now=NOW, failure=None)


def test_unschedulable_message_names_the_scheduler_reason() -> None:
    """The operator sees which of the unschedulable causes it is, with its specifics."""
    row = replace(WORKLOAD, unconverged_since=ago(300))
    verdict = judge_workload(row, WorkloadPlan((), (), NO_HOST, None), [], set(), now=NOW)
    assert verdict is not None
    assert verdict.message == "NO_MATCHING_HOST: no host has labels role=gpu"


def test_workload_converged_needs_every_instance_current_and_converged() -> None:
    """Old generations or unconverged instances keep the workload unconverged."""
    empty = WorkloadPlan((), (), None, None)
    assert workload_converged(WORKLOAD, empty, [INSTANCE])
    assert not workload_converged(WORKLOAD, empty, [replace(INSTANCE, ready=False)])
    assert not workload_converged(replace(WORKLOAD, generation=2), empty, [INSTANCE])
    assert not workload_converged(WORKLOAD, WorkloadPlan(("host-1",), (), None, None), [])


def test_every_reason_has_a_guide() -> None:
    """The closed set and its runbooks and next commands stay in step."""
    assert set(GUIDES) == set(Reason)


FAILING = ReconcileFailure("could not write: disk full", attempts=5, failing_for_s=130.0,
                           permanent=False)  # fmt: skip


@pytest.mark.parametrize(
    ("row", "plan", "failure", "expected"),
    [
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(300)),
            WorkloadPlan(("host-1",), (), None, None),
            FAILING,
            Reason.RECONCILE_FAILING,
            id="failing-past-the-deadline",
        ),
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(300)),
            WorkloadPlan(("host-1",), (), None, None),
            replace(FAILING, failing_for_s=119.0),
            None,
            id="failing-within-the-deadline",
        ),
        pytest.param(
            WORKLOAD,
            WorkloadPlan((), (), None, None),
            replace(FAILING, failing_for_s=0.0, permanent=True),
            Reason.RECONCILE_FAILING,
            id="permanent-at-once",
        ),
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(300)),
            WorkloadPlan((), (), NO_HOST, None),
            FAILING,
            Reason.RECONCILE_FAILING,
            id="the-failure-comes-before-what-the-plan-would-say",
        ),
        pytest.param(
            replace(WORKLOAD, unconverged_since=ago(300)),
            WorkloadPlan((), (), NO_HOST, None),
            None,
            Reason.UNSCHEDULABLE,
            id="a-reconcile-that-succeeds-again-clears-it",
        ),
    ],
)
def test_reconcile_failing_verdicts(
    row: WorkloadRow, plan: WorkloadPlan, failure: ReconcileFailure | None, expected: Reason | None
) -> None:
    """A workload whose reconcile keeps failing past its deadline (or fails permanently) is
    RECONCILE_FAILING, carrying the last error; without a failure the usual verdicts apply."""
    verdict = judge_workload(row, plan, [], set(), now=NOW, failure=failure)
    assert (verdict.reason if verdict else None) == expected
    assert verdict is None or may_be_stuck(row, now=NOW, failure=failure)
    if verdict is not None and expected is Reason.RECONCILE_FAILING:
        assert failure is not None and verdict.message.endswith(failure.error)
