"""The control plane's one protobuf edge: requests and agent messages in, rows out.

Inbound, every field an operator or an agent sends is checked here with the rules of
`keel.fields` (a `SpecError` names the field and the rule; the error table in
`controlplane.errors` makes it INVALID_ARGUMENT) before a handler passes it on: an agent's
Hello becomes a `Hello`, a status report a `store.Report`, a request's name a checked string.
Outbound, store rows become `keel.v1` messages, and a row that cannot be presented (stored
before a rule existed, or by a bug) is logged and left out instead of failing a whole list.
The handlers (`controlplane.fleet`, `controlplane.sync`) hold no protobuf building of their
own; shared pieces (specs, phases, timestamps) come from `keel.convert`, which the agent uses.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from controlplane.listing import InstanceStatusRow, Tally
from controlplane.secrets import SecretBox
from controlplane.status import Event
from controlplane.store import HostRow, InstanceRow, Report, StuckState, WorkloadRow
from keel import convert, fields
from keel.fields import SpecError
from keel.model import Desired, Kind, Phase, Resources, converged
from keel.quantities import MAX_CPU_MILLIS, MAX_MEMORY_MIB
from keel.spec import NAME_RE
from keel.stuck import GUIDES, Reason, next_command
from keel.v1 import agent_pb2, fleet_pb2, types_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

log = structlog.get_logger("keel.convert")

T = TypeVar("T")
R = TypeVar("R")

# A host's capacity: a thousand of the largest instances a workload may ask for, which keeps
# every sum of capacities and allocations far inside int64.
MAX_HOST_CPU_MILLIS = MAX_CPU_MILLIS * 1000
MAX_HOST_MEMORY_MIB = MAX_MEMORY_MIB * 1000
MAX_AGENT_VERSION = 128
MAX_TAIL_LINES = 1_000_000
MAX_REASON = 1024

# ------------------------------------------------------------------------------ inbound


@dataclass(frozen=True)
class Hello:
    """An agent's opening message, checked: who it is and what its host offers."""

    host: str
    labels: dict[str, str]
    capacity: Resources
    agent_version: str
    revision: int


def hello_from_pb(m: agent_pb2.Hello) -> Hello:
    """The Hello an agent sent, or SpecError naming the first field that breaks a rule."""
    host = fields.host_name(m.host, "hello.host")
    labels = fields.labels(dict(m.labels), "hello.labels")
    cpu = fields.integer(
        m.capacity.cpu_millis, "hello.capacity.cpu_millis", minimum=0, maximum=MAX_HOST_CPU_MILLIS
    )
    memory = fields.integer(
        m.capacity.memory_mib, "hello.capacity.memory_mib", minimum=0, maximum=MAX_HOST_MEMORY_MIB
    )
    version = fields.check_text(
        m.agent_version, "hello.agent_version", limit=MAX_AGENT_VERSION, single_line=True
    )
    revision = fields.integer(m.revision, "hello.revision", minimum=0, maximum=2**63 - 1)
    return Hello(host, labels, Resources(cpu, memory), version, revision)


def _text(value: str, limit: int) -> str:
    """Agent text fit for a Postgres text column: bounded, and without NUL (which Postgres
    refuses, so one NUL in a workload's stderr would poison the whole report batch)."""
    return value[:limit].replace("\x00", "\N{REPLACEMENT CHARACTER}")


def report_from_pb(host: str, s: types_pb2.InstanceStatus) -> Report:
    stuck = s.stuck if s.HasField("stuck") else None
    return Report(
        host=host,
        instance_id=_text(s.instance_id, fields.MAX_NAME),
        phase=convert.phase_from_pb(s.phase),
        pid=s.pid,
        restart_count=s.restart_count,
        last_exit=_text(s.last_exit, 500),
        reason=_text(stuck.reason if stuck else s.reason, 100),
        # A CRASH_LOOP message carries up to 4 KiB of stderr besides its summary.
        message=_text(stuck.message if stuck else s.message, 6144),
        ports={_text(k, 64): v for k, v in s.ports.items()},
        ready=s.ready,
        removed=s.removed,
        started_at=convert.from_ts(s.started_at) if s.HasField("started_at") else None,
        agent_stuck=stuck is not None,
    )


def workload_name(value: str, field: str = "name") -> str:
    """A workload name as a request gives it (the rule `keel.spec` applies to manifests)."""
    if not value:
        raise SpecError(field, "required")
    if len(value) > 63 or not NAME_RE.match(value):
        raise SpecError(
            field,
            "not a workload name (lowercase letters, digits and '-', at most 63 characters), "
            f"got {fields.shown(value)}",
        )
    return value


def optional(value: str, check: Callable[[str, str], str], field: str) -> str | None:
    """A filter field: None when empty, else checked."""
    return check(value, field) if value else None


def tail_lines(value: int) -> int:
    return fields.integer(value, "tail_lines", minimum=0, maximum=MAX_TAIL_LINES)


@dataclass(frozen=True)
class HostSelection:
    """The hosts a request is about: named ones (sorted, each once) and a label selector."""

    names: tuple[str, ...]
    selector: dict[str, str]


def host_selection(hosts: Sequence[str], selector: Mapping[str, str]) -> HostSelection:
    """The hosts a request names (`hosts`) and its `selector`, checked; at least one of them
    must be given."""
    if len(hosts) > fields.MAX_LIST:
        raise SpecError(
            "hosts",
            f"must name at most {fields.MAX_LIST} hosts, got {len(hosts)} (a selector selects "
            "any number)",
        )
    names = [fields.host_name(h, f"hosts[{n}]") for n, h in enumerate(hosts)]
    checked = fields.labels(dict(selector), "selector")
    if not names and not checked:
        raise SpecError("hosts", "name at least one host, or give a selector")
    return HostSelection(tuple(sorted(set(names))), checked)


def reason(value: str, field: str = "reason") -> str:
    """Why an operator did something: one line, bounded (it is shown in tables and events)."""
    return fields.check_text(value, field, limit=MAX_REASON, single_line=True)


# ------------------------------------------------------------------------------ outbound


def stuck_pb(
    state: StuckState | None, *, instance: str = "", workload: str = "", host: str = ""
) -> types_pb2.Stuck | None:
    """The stuck state as an operator reads it: with its runbook and the next command."""
    if state is None:
        return None
    try:
        reason = Reason(state.reason)
    except ValueError:
        return types_pb2.Stuck(
            reason=state.reason, since=convert.ts(state.since), message=state.message
        )
    return types_pb2.Stuck(
        reason=reason.value,
        since=convert.ts(state.since),
        message=state.message,
        runbook=GUIDES[reason].runbook,
        next_command=next_command(reason, instance=instance, workload=workload, host=host),
    )


def workload_status(row: WorkloadRow, tallies: Sequence[Tally]) -> types_pb2.WorkloadStatus:
    """How far a workload is: its live instances counted by what `keel.model` says of them
    (from their tallies: a daemon's desired count is the hosts its live instances are on)."""
    w = row.workload
    live = [t for t in tallies if t.desired is not Desired.REMOVED]
    desired = w.replicas if w.kind is Kind.SERVICE else len({t.host for t in live})
    return types_pb2.WorkloadStatus(
        desired=0 if row.deleting else desired,
        instances=sum(t.count for t in live),
        running=sum(t.count for t in live if t.phase is Phase.RUNNING),
        ready=sum(t.count for t in live if converged(Desired.RUNNING, t.phase, t.ready)),
        updated=sum(t.count for t in live if row.is_current(t.generation)),
    )


def workload_pb(row: WorkloadRow, tallies: Sequence[Tally]) -> types_pb2.Workload:
    w = row.workload
    return types_pb2.Workload(
        name=w.name,
        kind=w.kind.value,
        replicas=w.replicas,
        max_unavailable=w.max_unavailable,
        max_surge=w.max_surge,
        selector=w.selector,
        deadline_ms=w.deadline_ms,
        spec=convert.spec_to_pb(w.spec),
        generation=row.generation,
        deleting=row.deleting,
        created_at=convert.ts(row.created_at),
        updated_at=convert.ts(row.updated_at),
        status=workload_status(row, tallies),
        stuck=stuck_pb(row.stuck, workload=w.name),
        rollout=convert.rollout_to_pb(w.rollout),
        paused=row.paused,
        paused_by=row.paused_by,
        paused_at=convert.ts(row.paused_at),
    )


def workloads_pb(
    rows: Iterable[WorkloadRow], tallies: Mapping[str, Sequence[Tally]]
) -> list[types_pb2.Workload]:
    return each(
        rows,
        lambda r: workload_pb(r, tallies.get(r.workload.name, ())),
        what="workload",
        name=lambda r: r.workload.name,
    )


def instance_pb(row: InstanceStatusRow) -> types_pb2.Instance:
    msg = types_pb2.Instance()
    _fill_instance(msg, row)
    return msg


def _fill_instance(msg: types_pb2.Instance, row: InstanceStatusRow) -> None:
    """Sets the instance's fields in `msg` in place: a page of a list is built inside its answer,
    not built apart and then copied in (a copy per message, with its nested status, was a
    third of the cost of a page)."""
    msg.id = row.id
    msg.workload = row.workload
    msg.generation = row.generation
    msg.host = row.host
    msg.desired = convert.desired_to_pb(row.desired)
    convert.set_ts(msg.desired_changed_at, row.desired_changed_at)
    convert.set_ts(msg.created_at, row.created_at)
    msg.converged = row.converged
    msg.replaces = row.replaces
    stuck = stuck_pb(row.stuck, instance=row.id, workload=row.workload, host=row.host)
    if stuck is not None:
        msg.stuck.CopyFrom(stuck)
    s = msg.status
    s.instance_id = row.id
    s.phase = convert.phase_to_pb(row.phase)
    s.pid = row.pid
    s.restart_count = row.restart_count
    s.last_exit = row.last_exit
    s.reason = row.reason
    s.message = row.message
    if row.ports:
        s.ports.update(row.ports)
    s.ready = row.ready
    convert.set_ts(s.started_at, row.started_at)
    convert.set_ts(s.observed_at, row.observed_at)


def instances_into(
    instances: RepeatedCompositeFieldContainer[types_pb2.Instance],
    rows: Iterable[InstanceStatusRow],
) -> None:
    """Appends each row to a list answer's `instances`; one that cannot be presented is logged
    and left out, as `each` does."""
    for row in rows:
        try:
            _fill_instance(instances.add(), row)
        except (ValueError, TypeError, KeyError) as exc:
            del instances[-1]
            log.error("instance cannot be presented; left out", instance=row.id, error=str(exc))


def host_pb(row: HostRow, *, gone: bool = False) -> types_pb2.Host:
    return types_pb2.Host(
        name=row.name,
        labels=row.labels,
        capacity=convert.resources_to_pb(row.capacity),
        allocated=convert.resources_to_pb(row.allocated),
        schedulable=row.schedulable,
        cordon_reason=row.cordon_reason,
        state=row.state.value,
        last_heartbeat=convert.ts(row.last_heartbeat),
        connected=row.connected,
        agent_version=row.agent_version,
        instances=row.instances,
        revision=row.revision,
        cordon_actor=row.cordon_actor,
        cordoned_at=convert.ts(row.cordoned_at),
        drained=row.drained,
        gone=gone,
        state_since=convert.ts(row.state_since),
    )


def hosts_pb(rows: Iterable[HostRow], *, gone: Container[str] = ()) -> list[types_pb2.Host]:
    """The hosts, those named in `gone` marked so (`liveness.gone`)."""
    return each(rows, lambda r: host_pb(r, gone=r.name in gone), what="host", name=lambda r: r.name)


def stuck_objects_pb(
    workloads: Iterable[WorkloadRow], instances: Iterable[InstanceStatusRow]
) -> list[fleet_pb2.StuckObject]:
    """Every stuck object, the longest stuck first."""
    objects = []
    for w in workloads:
        pb = stuck_pb(w.stuck, workload=w.workload.name)
        if pb is not None:
            objects.append(fleet_pb2.StuckObject(object=f"workload/{w.workload.name}", stuck=pb))
    for i in instances:
        pb = stuck_pb(i.stuck, instance=i.id, workload=i.workload, host=i.host)
        if pb is not None:
            objects.append(fleet_pb2.StuckObject(object=f"instance/{i.id}", stuck=pb))
    objects.sort(key=lambda o: (o.stuck.since.ToNanoseconds(), o.object))
    return objects


def event_pb(e: Event) -> fleet_pb2.Event:
    return fleet_pb2.Event(
        id=e.id, at=convert.ts(e.at), object=e.object, kind=e.kind, actor=e.actor, message=e.message
    )


def assignment_pb(row: InstanceRow, *, secrets: SecretBox) -> agent_pb2.Assignment:
    """The one message that carries secret_env values opened: the agent starts with them. A
    tombstone only stops, so it carries them sealed (redacted) and never needs the key."""
    spec = row.spec if row.desired is Desired.REMOVED else secrets.open(row.workload, row.spec)
    return agent_pb2.Assignment(
        instance_id=row.id,
        workload=row.workload,
        generation=row.generation,
        desired=convert.desired_to_pb(row.desired),
        spec=convert.spec_to_pb(spec),
        revision=row.revision,
        trace_context=row.trace_context,
    )


def assignments_pb(
    full: bool, revision: int, rows: Iterable[InstanceRow], *, secrets: SecretBox
) -> agent_pb2.ControlMessage:
    """Raises SecretsUnopenable rather than leave an assignment out: a full set without it
    would make the agent stop that instance."""
    assignments = each(
        rows, lambda r: assignment_pb(r, secrets=secrets), what="instance", name=lambda r: r.id
    )
    return agent_pb2.ControlMessage(
        assignments=agent_pb2.Assignments(full=full, revision=revision, assignments=assignments)
    )


def each(
    rows: Iterable[T], present: Callable[[T], R], *, what: str, name: Callable[[T], str]
) -> list[R]:
    """present(row) for every row; one that cannot be presented is logged and left out."""
    out = []
    for row in rows:
        try:
            out.append(present(row))
        except (ValueError, TypeError, KeyError) as exc:
            log.error(f"{what} cannot be presented; left out", **{what: name(row)}, error=str(exc))
    return out


# -- logs relayed over an agent's stream (controlplane.logrelay) ---------------------------


def log_request_pb(
    request_id: str, instance_id: str, *, tail_lines: int, follow: bool
) -> agent_pb2.ControlMessage:
    return agent_pb2.ControlMessage(
        log_request=agent_pb2.LogRequest(
            request_id=request_id, instance_id=instance_id, tail_lines=tail_lines, follow=follow
        )
    )


def log_cancel_pb(request_id: str) -> agent_pb2.ControlMessage:
    """Tells the agent to stop following a log (the client went away)."""
    return agent_pb2.ControlMessage(
        log_request=agent_pb2.LogRequest(request_id=request_id, cancel=True)
    )


def log_error_pb(error: str) -> types_pb2.LogChunk:
    """The last chunk of a log request that could not be served, saying why."""
    return types_pb2.LogChunk(eof=True, error=error)
