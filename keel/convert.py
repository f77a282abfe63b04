"""The one place protobuf messages become domain types and back (keel.model <-> keel.v1)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from keel.model import (
    Desired,
    HealthCheck,
    Phase,
    Resources,
    RolloutPolicy,
    SecretValue,
    WorkloadSpec,
)
from keel.v1 import types_pb2 as pb

_DESIRED_TO_PB = {
    Desired.RUNNING: pb.DESIRED_RUNNING,
    Desired.STOPPED: pb.DESIRED_STOPPED,
    Desired.REMOVED: pb.DESIRED_REMOVED,
}
_DESIRED_FROM_PB = {v: k for k, v in _DESIRED_TO_PB.items()}
_PHASE_TO_PB = {
    Phase.PENDING: pb.PHASE_PENDING,
    Phase.STARTING: pb.PHASE_STARTING,
    Phase.RUNNING: pb.PHASE_RUNNING,
    Phase.STOPPING: pb.PHASE_STOPPING,
    Phase.STOPPED: pb.PHASE_STOPPED,
    Phase.FAILED: pb.PHASE_FAILED,
}
_PHASE_FROM_PB = {v: k for k, v in _PHASE_TO_PB.items()}


def desired_to_pb(d: Desired) -> pb.DesiredState:
    return _DESIRED_TO_PB[d]


def desired_from_pb(d: pb.DesiredState) -> Desired:
    try:
        return _DESIRED_FROM_PB[d]
    except KeyError:
        raise ValueError(f"unknown desired state {d}") from None


def phase_to_pb(p: Phase) -> pb.Phase:
    return _PHASE_TO_PB[p]


def phase_from_pb(p: pb.Phase) -> Phase:
    return _PHASE_FROM_PB.get(p, Phase.PENDING)


def resources_to_pb(r: Resources) -> pb.Resources:
    return pb.Resources(cpu_millis=r.cpu_millis, memory_mib=r.memory_mib)


def resources_from_pb(r: pb.Resources) -> Resources:
    return Resources(cpu_millis=r.cpu_millis, memory_mib=r.memory_mib)


def spec_to_pb(s: WorkloadSpec) -> pb.WorkloadSpec:
    msg = pb.WorkloadSpec(
        command=list(s.command),
        env=dict(s.env),
        ports=list(s.ports),
        resources=resources_to_pb(s.resources),
        stop_grace_ms=s.stop_grace_ms,
        min_ready_ms=s.min_ready_ms,
        user=s.user,
        stop_after_disconnect_ms=s.stop_after_disconnect_ms,
    )
    for name, secret in s.secret_env.items():
        secret_to_pb(secret, msg.secret_env[name])
    if s.health is not None:
        if s.health.tcp is not None:
            msg.health.tcp = s.health.tcp
        elif s.health.http_port is not None:
            msg.health.http.port = s.health.http_port
            msg.health.http.path = s.health.http_path
        elif s.health.exec is not None:
            msg.health.exec.command.extend(s.health.exec)
    return msg


def spec_from_pb(m: pb.WorkloadSpec) -> WorkloadSpec:
    health = None
    which = m.health.WhichOneof("probe") if m.HasField("health") else None
    if which == "tcp":
        health = HealthCheck(tcp=m.health.tcp)
    elif which == "http":
        health = HealthCheck(http_port=m.health.http.port, http_path=m.health.http.path or "/")
    elif which == "exec":
        health = HealthCheck(exec=tuple(m.health.exec.command))
    return WorkloadSpec(
        command=tuple(m.command),
        env=dict(m.env),
        ports=tuple(m.ports),
        resources=resources_from_pb(m.resources),
        health=health,
        stop_grace_ms=m.stop_grace_ms,
        min_ready_ms=m.min_ready_ms,
        secret_env={k: secret_from_pb(v) for k, v in m.secret_env.items()},
        user=m.user,
        stop_after_disconnect_ms=m.stop_after_disconnect_ms,
    )


def rollout_to_pb(r: RolloutPolicy) -> pb.RolloutPolicy:
    return pb.RolloutPolicy(
        progress_deadline_ms=r.progress_deadline_ms,
        auto_rollback=r.auto_rollback,
        canary=r.canary,
        auto_promote=r.auto_promote,
    )


def rollout_from_pb(m: pb.RolloutPolicy) -> RolloutPolicy:
    # An answer from a server without rollout policies leaves it unset: the defaults.
    if m.progress_deadline_ms <= 0:
        return RolloutPolicy()
    return RolloutPolicy(
        progress_deadline_ms=m.progress_deadline_ms,
        auto_rollback=m.auto_rollback,
        canary=m.canary,
        auto_promote=m.auto_promote,
    )


def secret_to_pb(s: SecretValue, msg: pb.SecretValue) -> None:
    """Fills msg: the plain value when the spec holds it (the agent's assignment), the file
    reference, or `redacted` for a sealed value (what an operator's answer carries)."""
    if s.value is not None:
        msg.value = s.value
    elif s.file is not None:
        msg.file = s.file
    else:
        msg.redacted = True


def secret_from_pb(m: pb.SecretValue) -> SecretValue:
    which = m.WhichOneof("source")
    if which == "value":
        return SecretValue(value=m.value)
    if which == "file":
        return SecretValue(file=m.file)
    return SecretValue(sealed="")  # redacted: sealed where this side cannot see it


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _seconds_nanos(dt: datetime) -> tuple[int, int]:
    # By arithmetic rather than Timestamp.FromDatetime, which goes through a time tuple and was
    # most of the cost of presenting a page of instances (four times per instance).
    if dt.tzinfo is None:
        dt = dt.astimezone(UTC)  # a naive time is local time, as Timestamp.FromDatetime takes it
    delta = dt - _EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def ts(dt: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for dt, or None (leave the field unset)."""
    if dt is None:
        return None
    seconds, nanos = _seconds_nanos(dt)
    return Timestamp(seconds=seconds, nanos=nanos)


def set_ts(field: Timestamp, dt: datetime | None) -> None:
    """Sets a message's Timestamp field in place to dt (None leaves it unset): no Timestamp is
    built apart and copied in."""
    if dt is not None:
        field.seconds, field.nanos = _seconds_nanos(dt)


def from_ts(t: Timestamp) -> datetime | None:
    if t.seconds == 0 and t.nanos == 0:
        return None
    return t.ToDatetime(tzinfo=UTC)
