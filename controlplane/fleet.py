"""FleetService: the operator API (keelctl). Checks the request, calls the store, presents rows.

Handlers raise Keel's errors and never choose a status code: the table in
`controlplane.errors`, applied to every call by `controlplane.interceptors`, does (a spec
problem is INVALID_ARGUMENT naming the field and the rule, an unknown name NOT_FOUND naming
it, the database away UNAVAILABLE). Request fields are checked and rows presented in
`controlplane.convert`; lists are paged (`controlplane.paging`) and read, like every operator
read, from Postgres through `controlplane.listing`, never from the leader's cache (any replica
answers); logs come from the host's agent through `controlplane.logrelay`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence

import grpc
import structlog

from controlplane import convert, liveness, operation_convert, paging
from controlplane.actor import actor_of
from controlplane.cache import FleetCache
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.host_delete import delete_host
from controlplane.logrelay import LogRelay
from controlplane.operations_api import OperationsApi, OperationWatch
from controlplane.status import StatusStore
from controlplane.store import HostRow, Store, WorkloadRow
from keel import fields, spec
from keel.model import HostState
from keel.tracing import inject_traceparent
from keel.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

log = structlog.get_logger("keel.fleet")

DEFAULT_EVENTS = 100
# What `keelctl events --for` may name; the store turns a workload into a pattern, so the name
# must not carry regular-expression syntax.
_OBJECT = re.compile(r"^(workload|host|instance|operation)/[a-z0-9][-a-z0-9_.]{0,252}\Z")
MAX_EVENTS = 10_000


class FleetApi(OperationsApi, fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: Store,
        *,
        status: StatusStore,
        logs: LogRelay,
        log_wait_s: float,
        cache: FleetCache | None = None,
        watch: OperationWatch | None = None,
        watch_poll_s: float = 2.0,
        drain_blocked_after_s: float = 60.0,
        gone_after_s: float = 24 * 3600.0,
    ) -> None:
        self._store = store
        self._status = status
        self._logs = logs
        self._log_wait_s = log_wait_s
        self._cache = cache
        self._watch = watch or OperationWatch()
        self._watch_poll_s = watch_poll_s
        self._drain_blocked_after_s = drain_blocked_after_s
        self._gone_after_s = gone_after_s

    async def ApplyWorkload(
        self, request: fleet_pb2.ApplyWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ApplyWorkloadResponse:
        workload = spec.parse_manifest(request.manifest_json, "manifest_json")
        # The RPC's span is current (controlplane.interceptors): its traceparent travels with
        # the desired change to the agent, so one trace runs from keelctl to the process start.
        row, result = await self._store.apply_workload(
            workload, actor=actor_of(context), trace_context=inject_traceparent()
        )
        log.info(
            "workload applied", workload=workload.name, result=result, generation=row.generation
        )
        return fleet_pb2.ApplyWorkloadResponse(workload=await self._workload_pb(row), result=result)

    async def GetWorkload(
        self, request: fleet_pb2.GetWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.Workload:
        row = await self._store.get_workload(convert.workload_name(request.name))
        return await self._workload_pb(row)

    async def _workload_pb(self, row: WorkloadRow) -> types_pb2.Workload:
        """The workload with its status, counted from its instances' tallies."""
        tallies = await self._store.tallies([row])
        return convert.workload_pb(row, tallies[row.workload.name])

    async def ListWorkloads(
        self, request: fleet_pb2.ListWorkloadsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListWorkloadsResponse:
        page = paging.page_request(
            paging.WORKLOADS, page_size=request.page_size, page_token=request.page_token
        )
        rows, tallies = await self._store.page_workloads(page)
        return fleet_pb2.ListWorkloadsResponse(
            workloads=convert.workloads_pb(rows.rows, tallies), next_page_token=rows.next_token
        )

    async def DeleteWorkload(
        self, request: fleet_pb2.DeleteWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.DeleteWorkloadResponse:
        name = convert.workload_name(request.name)
        row = await self._store.delete_workload(name, actor=actor_of(context))
        log.info("workload deleting", workload=name)
        return fleet_pb2.DeleteWorkloadResponse(workload=await self._workload_pb(row))

    async def GetHost(
        self, request: fleet_pb2.GetHostRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.Host:
        row = await self._store.get_host(fields.host_name(request.name, "name"))
        return convert.host_pb(row, gone=bool(await self._gone([row])))

    async def _gone(self, rows: Sequence[HostRow]) -> set[str]:
        """The hosts among `rows` that are gone (`liveness.gone`), by database time."""
        if all(r.state is HostState.READY for r in rows):
            return set()
        now = await self._store.now()
        return {
            r.name
            for r in rows
            if liveness.gone(r.state, r.state_since, now=now, gone_after_s=self._gone_after_s)
        }

    async def DeleteHost(
        self, request: fleet_pb2.DeleteHostRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.DeleteHostResponse:
        name = fields.host_name(request.name, "name")
        actor = actor_of(context)
        deleted = await delete_host(self._store.pool, name, force=request.force, actor=actor)
        log.warning("host deleted", host=name, actor=actor, force=request.force,
                    instances_removed=len(deleted.removed))  # fmt: skip
        return fleet_pb2.DeleteHostResponse(name=name, removed_instances=deleted.removed)

    async def ListHosts(
        self, request: fleet_pb2.ListHostsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListHostsResponse:
        page = paging.page_request(
            paging.HOSTS, page_size=request.page_size, page_token=request.page_token
        )
        hosts = await self._store.page_hosts(page)
        return fleet_pb2.ListHostsResponse(
            hosts=convert.hosts_pb(hosts.rows, gone=await self._gone(hosts.rows)),
            next_page_token=hosts.next_token,
        )

    async def GetInstance(
        self, request: fleet_pb2.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.Instance:
        row = await self._store.instance_status(fields.object_id(request.id, "id"))
        return convert.instance_pb(row)

    async def ListInstances(
        self, request: fleet_pb2.ListInstancesRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListInstancesResponse:
        workload = convert.optional(request.workload, convert.workload_name, "workload")
        host = convert.optional(request.host, fields.host_name, "host")
        page = paging.page_request(
            paging.INSTANCES, page_size=request.page_size, page_token=request.page_token
        )
        instances = await self._store.page_instances(page, workload=workload, host=host)
        reply = fleet_pb2.ListInstancesResponse(next_page_token=instances.next_token)
        convert.instances_into(reply.instances, instances.rows)
        return reply

    async def ListStuck(
        self, request: fleet_pb2.ListStuckRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListStuckResponse:
        workloads = await self._store.stuck_workloads()
        instances = await self._store.stuck_instances()
        objects = convert.stuck_objects_pb(workloads, instances)
        drains = await self._store.list_operations(everything=False)
        blocked = operation_convert.blocked_drains_pb(
            drains, now=await self._store.now(), after_s=self._drain_blocked_after_s
        )
        objects = sorted(
            [*objects, *blocked], key=lambda o: (o.stuck.since.ToNanoseconds(), o.object)
        )
        return fleet_pb2.ListStuckResponse(objects=objects)

    async def ListEvents(
        self, request: fleet_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListEventsResponse:
        if request.limit < 0 or request.limit > MAX_EVENTS:
            raise InvalidArgument(f"limit: must be between 0 and {MAX_EVENTS}, got {request.limit}")
        if request.object and not _OBJECT.match(request.object):
            raise InvalidArgument(
                f"object: must be KIND/NAME with KIND workload, host, instance or operation and "
                f"NAME made "
                f"of a-z, 0-9, '-', '_' and '.' (e.g. workload/web), got "
                f"{fields.shown(request.object)}"
            )
        events = await self._status.list_events(
            obj=request.object or None, limit=request.limit or DEFAULT_EVENTS
        )
        return fleet_pb2.ListEventsResponse(events=[convert.event_pb(e) for e in events])

    async def Cordon(
        self, request: fleet_pb2.CordonRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.CordonResponse:
        selection = convert.host_selection(request.hosts, request.selector)
        reason = convert.reason(request.reason)
        actor = actor_of(context)
        result = await self._store.cordon(
            selection.names, selection.selector, reason=reason, actor=actor
        )
        log.info("hosts cordoned", hosts=result.changed, reason=reason, actor=actor,
                 already=len(result.hosts) - len(result.changed))  # fmt: skip
        return fleet_pb2.CordonResponse(
            hosts=convert.hosts_pb(result.hosts), changed=result.changed
        )

    async def Uncordon(
        self, request: fleet_pb2.UncordonRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.UncordonResponse:
        selection = convert.host_selection(request.hosts, request.selector)
        actor = actor_of(context)
        result = await self._store.uncordon(selection.names, selection.selector, actor=actor)
        log.info("hosts uncordoned", hosts=result.changed, actor=actor,
                 already=len(result.hosts) - len(result.changed))  # fmt: skip
        return fleet_pb2.UncordonResponse(
            hosts=convert.hosts_pb(result.hosts), changed=result.changed
        )

    async def GetLogs(
        self, request: fleet_pb2.GetLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[types_pb2.LogChunk]:
        tail = convert.tail_lines(request.tail_lines)
        inst = await self._store.get_instance(fields.object_id(request.instance_id, "instance_id"))
        host = await self._store.get_host(inst.host)
        # Answer before the caller gives up, so that a silent agent is named as the cause
        # instead of the caller's deadline blaming the control plane.
        remaining = context.time_remaining()
        wait_s = self._log_wait_s
        if remaining is not None:
            wait_s = max(0.1, min(wait_s, remaining * 0.8))
        chunks = self._logs.fetch(
            host.name,
            inst.id,
            tail_lines=tail,
            follow=request.follow,
            wait_s=wait_s,
            last_heartbeat=host.last_heartbeat,
        )
        async for chunk in chunks:
            if chunk.error:
                raise FailedPrecondition(chunk.error)
            yield chunk
