"""The agent's protobuf edge (`agent.convert`): what the control plane sends, in domain terms,
and the status reports built from domain reports."""

from __future__ import annotations

from agent.convert import DesiredUpdate, LogRequest, control_from_pb, reports_to_pb
from agent.status import InstanceReport
from agent.stuck import StuckInfo
from keel.convert import spec_to_pb
from keel.model import Desired, Phase, WorkloadSpec
from keel.v1 import agent_pb2, types_pb2

SPEC = WorkloadSpec(command=("sleep", "1000"), ports=("http",))


def assignment(iid: str, desired: int = types_pb2.DESIRED_RUNNING) -> agent_pb2.Assignment:
    return agent_pb2.Assignment(
        instance_id=iid, workload="web", generation=2, desired=desired, spec=spec_to_pb(SPEC)
    )


def test_a_bad_assignment_is_rejected_alone() -> None:
    """An unreadable assignment is named with its error; the others still arrive."""
    msg = agent_pb2.ControlMessage(
        assignments=agent_pb2.Assignments(
            full=True, revision=7, assignments=[assignment("a"), assignment("b", desired=99)]
        )
    )
    update = control_from_pb(msg)
    assert isinstance(update, DesiredUpdate)
    assert (update.full, update.revision) == (True, 7)
    assert [(a.instance_id, a.desired, a.spec) for a in update.assignments] == [
        ("a", Desired.RUNNING, SPEC)
    ]
    assert [iid for iid, _ in update.rejected] == ["b"]
    assert "99" in update.rejected[0][1]


def test_log_request_and_unknown_messages() -> None:
    """A LogRequest becomes its domain twin; a message with nothing set asks for nothing."""
    msg = agent_pb2.ControlMessage(
        log_request=agent_pb2.LogRequest(
            request_id="r1", instance_id="a", tail_lines=5, follow=True
        )
    )
    assert control_from_pb(msg) == LogRequest("r1", "a", 5, True, False)
    assert control_from_pb(agent_pb2.ControlMessage()) is None


def test_report_carries_times_and_the_stuck_verdict() -> None:
    """Started, stuck-since and observed times are set; unset times stay unset."""
    stuck = StuckInfo("CRASH_LOOP", 90.0, "last exit: exit code 1", "runbooks/x.md", "keelctl x")
    reports = [
        InstanceReport("a", Phase.FAILED, restart_count=3, stuck=stuck, started_at=80.5),
        InstanceReport("b", Phase.PENDING),
    ]
    msg = reports_to_pb(reports, observed_at=100.0)
    a, b = msg.report.instances
    assert (a.phase, a.restart_count, a.started_at.seconds) == (types_pb2.PHASE_FAILED, 3, 80)
    assert (a.stuck.reason, a.stuck.since.seconds, a.stuck.runbook) == (
        "CRASH_LOOP",
        90,
        "runbooks/x.md",
    )
    assert a.observed_at.seconds == b.observed_at.seconds == 100
    assert not b.HasField("started_at") and not b.HasField("stuck")
