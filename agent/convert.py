"""The agent's one place where protobuf (keel.v1) becomes domain types and back.

`agent.sync` owns the stream and calls only this module to read what the control plane sends
(`control_from_pb`: a desired-set update or a log request, in domain terms) and to build what
the agent sends (Hello, status reports, heartbeats, log chunks). The rest of the agent works
with domain types: `agent.state.Assignment`, `agent.status.InstanceReport`, `keel.model`.
The conversions both sides share (spec, desired state, phase, resources, timestamps) are in
`keel.convert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.state import Assignment
from agent.status import InstanceReport
from keel.convert import desired_from_pb, phase_to_pb, resources_to_pb, spec_from_pb, ts
from keel.model import Resources
from keel.v1 import agent_pb2, types_pb2

# What goes on the stream to the control plane (the sync client queues these).
Outgoing = agent_pb2.AgentMessage


@dataclass(frozen=True)
class DesiredUpdate:
    """An Assignments message: a full set (replaces) or changes (merge) at a revision.

    `rejected` names the assignments that could not be read, with why: one bad assignment
    must not cost the host all the others.
    """

    full: bool
    revision: int
    assignments: tuple[Assignment, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()  # (instance id, error)


@dataclass(frozen=True)
class LogRequest:
    """A LogRequest: send (or stop sending, `cancel`) the logs of one instance."""

    request_id: str
    instance_id: str
    tail_lines: int = 0
    follow: bool = False
    cancel: bool = False


@dataclass(frozen=True)
class HeartbeatAck:
    """The control plane recorded the heartbeat `sequence`."""

    sequence: int


@dataclass(frozen=True)
class Hello:
    """What the agent says about itself when a stream opens."""

    host: str
    agent_version: str
    revision: int
    labels: dict[str, str]
    capacity: Resources


def assignment_from_pb(m: agent_pb2.Assignment) -> Assignment:
    """ValueError or KeyError if the message is not a valid assignment."""
    return Assignment(
        instance_id=m.instance_id,
        workload=m.workload,
        generation=m.generation,
        desired=desired_from_pb(m.desired),
        spec=spec_from_pb(m.spec),
        trace_context=m.trace_context,
    )


def control_from_pb(
    msg: agent_pb2.ControlMessage,
) -> DesiredUpdate | LogRequest | HeartbeatAck | None:
    """What a message from the control plane asks for (None: nothing this agent knows)."""
    if msg.HasField("assignments"):
        m = msg.assignments
        assignments: list[Assignment] = []
        rejected: list[tuple[str, str]] = []
        for a in m.assignments:
            try:
                assignments.append(assignment_from_pb(a))
            except (ValueError, KeyError) as e:
                rejected.append((a.instance_id, str(e)))
        return DesiredUpdate(m.full, m.revision, tuple(assignments), tuple(rejected))
    if msg.HasField("log_request"):
        r = msg.log_request
        return LogRequest(r.request_id, r.instance_id, r.tail_lines, r.follow, r.cancel)
    if msg.HasField("heartbeat_ack"):
        return HeartbeatAck(msg.heartbeat_ack.sequence)
    return None


def join_request_pb(host: str, secret: str = "") -> agent_pb2.JoinRequest:
    return agent_pb2.JoinRequest(host=host, secret=secret)


def credential_from_pb(reply: agent_pb2.JoinResponse) -> str:
    return str(reply.credential)


def hello_to_pb(h: Hello) -> Outgoing:
    return agent_pb2.AgentMessage(
        hello=agent_pb2.Hello(
            host=h.host,
            labels=dict(h.labels),
            capacity=resources_to_pb(h.capacity),
            agent_version=h.agent_version,
            revision=h.revision,
        )
    )


def heartbeat_to_pb(revision: int, sequence: int = 0, *, ack_deferred: bool = False) -> Outgoing:
    """A heartbeat: `revision` is the one the agent has acted on; `ack_deferred`: no
    self-fencing instance here needs its acknowledgement at once (see the proto)."""
    return agent_pb2.AgentMessage(
        heartbeat=agent_pb2.Heartbeat(
            revision=revision, sequence=sequence, ack_deferred=ack_deferred
        )
    )


def reports_to_pb(reports: Sequence[InstanceReport], *, observed_at: float) -> Outgoing:
    """One StatusReport message for `reports`, all observed at `observed_at` (epoch s)."""
    observed = datetime.fromtimestamp(observed_at, UTC)
    return agent_pb2.AgentMessage(
        report=agent_pb2.StatusReport(
            instances=[report_to_pb(r, observed_at=observed) for r in reports]
        )
    )


def report_to_pb(r: InstanceReport, *, observed_at: datetime) -> types_pb2.InstanceStatus:
    msg = types_pb2.InstanceStatus(
        instance_id=r.instance_id,
        phase=phase_to_pb(r.phase),
        pid=r.pid,
        restart_count=r.restart_count,
        last_exit=r.last_exit,
        reason=r.reason,
        message=r.message,
        ports=dict(r.ports),
        ready=r.ready,
        removed=r.removed,
    )
    if r.started_at is not None:
        msg.started_at.FromDatetime(datetime.fromtimestamp(r.started_at, UTC))
    if r.stuck is not None:
        msg.stuck.CopyFrom(
            types_pb2.Stuck(
                reason=r.stuck.reason,
                message=r.stuck.message,
                runbook=r.stuck.runbook,
                next_command=r.stuck.next_command,
            )
        )
        msg.stuck.since.FromDatetime(datetime.fromtimestamp(r.stuck.since, UTC))
    observed = ts(observed_at)
    assert observed is not None
    msg.observed_at.CopyFrom(observed)
    return msg


def log_chunk_to_pb(
    request_id: str, *, stream: str = "", data: bytes = b"", eof: bool = False, error: str = ""
) -> Outgoing:
    return agent_pb2.AgentMessage(
        log_chunk=types_pb2.LogChunk(
            request_id=request_id, stream=stream, data=data, eof=eof, error=error
        )
    )
