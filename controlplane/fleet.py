"""FleetService: the operator API (keelctl). Validates, calls the store, presents rows.

Errors become gRPC status codes here and nowhere else: a spec problem is INVALID_ARGUMENT
naming the field and the rule, an unknown name is NOT_FOUND naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
import structlog

from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.logrelay import LogRelay
from controlplane.status import StatusStore
from controlplane.store import HostRow, InstanceRow, Store, StuckState, WorkloadRow
from keel import convert, spec
from keel.model import Desired, Kind, Phase, converged
from keel.stuck import GUIDES, Reason, next_command
from keel.tracing import inject_traceparent
from keel.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

log = structlog.get_logger("keel.fleet")

MAX_MANIFEST_BYTES = 256 * 1024
DEFAULT_EVENTS = 100
# What `keelctl events --for` may name; the store turns a workload into a pattern, so the name
# must not carry regular-expression syntax.
_OBJECT = re.compile(r"^(workload|host|instance)/[a-z0-9][-a-z0-9_.]{0,252}$")
MAX_EVENTS = 10_000
T = TypeVar("T")


def _status(
    fn: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Turns Keel's exceptions into gRPC status codes with the message a person reads."""

    @wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except (InvalidArgument, spec.SpecError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except FailedPrecondition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("unreachable: abort raises")

    return wrapper


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


def workload_pb(row: WorkloadRow, instances: list[InstanceRow]) -> types_pb2.Workload:
    w = row.workload
    live = [i for i in instances if i.desired.value != "REMOVED"]
    desired = w.replicas if w.kind is Kind.SERVICE else len({i.host for i in live})
    msg = types_pb2.Workload(
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
        status=types_pb2.WorkloadStatus(
            desired=0 if row.deleting else desired,
            instances=len(live),
            running=sum(1 for i in live if i.phase is Phase.RUNNING),
            ready=sum(1 for i in live if converged(Desired.RUNNING, i.phase, i.ready)),
            updated=sum(1 for i in live if i.generation == row.generation),
        ),
        stuck=stuck_pb(row.stuck, workload=w.name),
    )
    return msg


def instance_pb(row: InstanceRow) -> types_pb2.Instance:
    return types_pb2.Instance(
        id=row.id,
        workload=row.workload,
        generation=row.generation,
        host=row.host,
        desired=convert.desired_to_pb(row.desired),
        desired_changed_at=convert.ts(row.desired_changed_at),
        created_at=convert.ts(row.created_at),
        converged=row.converged,
        stuck=stuck_pb(row.stuck, instance=row.id, workload=row.workload, host=row.host),
        status=types_pb2.InstanceStatus(
            instance_id=row.id,
            phase=convert.phase_to_pb(row.phase),
            pid=row.pid,
            restart_count=row.restart_count,
            last_exit=row.last_exit,
            reason=row.reason,
            message=row.message,
            ports=row.ports,
            ready=row.ready,
            started_at=convert.ts(row.started_at),
            observed_at=convert.ts(row.observed_at),
        ),
    )


def host_pb(row: HostRow) -> types_pb2.Host:
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
    )


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field}: required")
    return value


class FleetApi(fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]  # untyped base
    def __init__(self, store: Store, *, status: StatusStore, logs: LogRelay) -> None:
        self._store = store
        self._status = status
        self._logs = logs

    @_status
    async def ApplyWorkload(
        self, request: fleet_pb2.ApplyWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ApplyWorkloadResponse:
        if len(request.manifest_json) > MAX_MANIFEST_BYTES:
            raise InvalidArgument(
                f"manifest_json: must be at most {MAX_MANIFEST_BYTES} bytes, "
                f"got {len(request.manifest_json)}"
            )
        try:
            doc = json.loads(request.manifest_json)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"manifest_json: not valid JSON ({exc})") from exc
        workload = spec.parse_workload(doc)
        # The RPC's span is current (controlplane.interceptors): its traceparent travels with
        # the desired change to the agent, so one trace runs from keelctl to the process start.
        row, result = await self._store.apply_workload(
            workload, actor=_peer(context), trace_context=inject_traceparent()
        )
        log.info(
            "workload applied", workload=workload.name, result=result, generation=row.generation
        )
        instances = await self._store.list_instances(workload=workload.name)
        return fleet_pb2.ApplyWorkloadResponse(workload=workload_pb(row, instances), result=result)

    @_status
    async def GetWorkload(
        self, request: fleet_pb2.GetWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.Workload:
        row = await self._store.get_workload(_required(request.name, "name"))
        return workload_pb(row, await self._store.list_instances(workload=request.name))

    @_status
    async def ListWorkloads(
        self, request: fleet_pb2.ListWorkloadsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListWorkloadsResponse:
        rows = await self._store.list_workloads()
        by_workload: dict[str, list[InstanceRow]] = {}
        for i in await self._store.list_instances():
            by_workload.setdefault(i.workload, []).append(i)
        return fleet_pb2.ListWorkloadsResponse(
            workloads=[workload_pb(r, by_workload.get(r.workload.name, [])) for r in rows]
        )

    @_status
    async def DeleteWorkload(
        self, request: fleet_pb2.DeleteWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.DeleteWorkloadResponse:
        row = await self._store.delete_workload(
            _required(request.name, "name"), actor=_peer(context)
        )
        log.info("workload deleting", workload=request.name)
        instances = await self._store.list_instances(workload=request.name)
        return fleet_pb2.DeleteWorkloadResponse(workload=workload_pb(row, instances))

    @_status
    async def GetHost(
        self, request: fleet_pb2.GetHostRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.Host:
        return host_pb(await self._store.get_host(_required(request.name, "name")))

    @_status
    async def ListHosts(
        self, request: fleet_pb2.ListHostsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListHostsResponse:
        return fleet_pb2.ListHostsResponse(
            hosts=[host_pb(h) for h in await self._store.list_hosts()]
        )

    @_status
    async def GetInstance(
        self, request: fleet_pb2.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.Instance:
        return instance_pb(await self._store.get_instance(_required(request.id, "id")))

    @_status
    async def ListInstances(
        self, request: fleet_pb2.ListInstancesRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListInstancesResponse:
        rows = await self._store.list_instances(
            workload=request.workload or None, host=request.host or None
        )
        return fleet_pb2.ListInstancesResponse(instances=[instance_pb(r) for r in rows])

    @_status
    async def ListStuck(
        self, request: fleet_pb2.ListStuckRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListStuckResponse:
        objects = []
        for w in await self._store.list_workloads():
            pb = stuck_pb(w.stuck, workload=w.workload.name)
            if pb is not None:
                objects.append(
                    fleet_pb2.StuckObject(object=f"workload/{w.workload.name}", stuck=pb)
                )
        for i in await self._store.list_instances():
            pb = stuck_pb(i.stuck, instance=i.id, workload=i.workload, host=i.host)
            if pb is not None:
                objects.append(fleet_pb2.StuckObject(object=f"instance/{i.id}", stuck=pb))
        objects.sort(key=lambda o: (o.stuck.since.ToNanoseconds(), o.object))
        return fleet_pb2.ListStuckResponse(objects=objects)

    @_status
    async def ListEvents(
        self, request: fleet_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListEventsResponse:
        if request.limit < 0 or request.limit > MAX_EVENTS:
            raise InvalidArgument(f"limit: must be between 0 and {MAX_EVENTS}, got {request.limit}")
        if request.object and not _OBJECT.match(request.object):
            raise InvalidArgument(
                f"object: must be KIND/NAME with KIND workload, host or instance and NAME made "
                f"of a-z, 0-9, '-', '_' and '.' (e.g. workload/web), got {request.object!r}"
            )
        events = await self._status.list_events(
            obj=request.object or None, limit=request.limit or DEFAULT_EVENTS
        )
        return fleet_pb2.ListEventsResponse(
            events=[
                fleet_pb2.Event(
                    id=e.id,
                    at=convert.ts(e.at),
                    object=e.object,
                    kind=e.kind,
                    actor=e.actor,
                    message=e.message,
                )
                for e in events
            ]
        )

    async def GetLogs(
        self, request: fleet_pb2.GetLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[types_pb2.LogChunk]:
        try:
            if request.tail_lines < 0:
                raise InvalidArgument(f"tail_lines: must be >= 0, got {request.tail_lines}")
            inst = await self._store.get_instance(_required(request.instance_id, "instance_id"))
            chunks = self._logs.fetch(
                inst.host, inst.id, tail_lines=request.tail_lines, follow=request.follow
            )
            async for chunk in chunks:
                if chunk.error:
                    raise FailedPrecondition(chunk.error)
                yield chunk
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except FailedPrecondition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))


def _peer(context: grpc.aio.ServicerContext) -> str:
    peer: str = context.peer() or ""
    return peer
