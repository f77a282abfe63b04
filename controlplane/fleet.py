"""FleetService: the operator API (keelctl). Checks the request, calls the store, presents rows.

Handlers raise Keel's errors and never choose a status code: the table in
`controlplane.errors`, applied to every call by `controlplane.interceptors`, does (a spec
problem is INVALID_ARGUMENT naming the field and the rule, an unknown name NOT_FOUND naming
it, the database away UNAVAILABLE). Request fields are checked and rows presented in
`controlplane.convert`; lists are paged (`controlplane.paging`) and read, like every operator
read, from Postgres through `controlplane.listing`, never from the leader's cache (any replica
answers); logs come from the host's agent through `controlplane.logrelay`, or through
`controlplane.logbus` from the replica that holds the host's stream. Every mutating call runs
through `controlplane.idempotency.Requests`: its answer is built, and recorded under the
caller's request id, in the write's own transaction.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import grpc
import structlog

from controlplane import convert, liveness, operation_convert, paging
from controlplane.actor import actor_of
from controlplane.cache import FleetCache
from controlplane.canary_api import CanaryApi
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.freeze_api import FreezeApi
from controlplane.host_delete import HostDeleted, delete_host
from controlplane.idempotency import Requests
from controlplane.listing import tallies_on
from controlplane.logbus import LogBus, NoHolder
from controlplane.logrelay import LogRelay, disconnected
from controlplane.operations_api import OperationsApi, OperationWatch
from controlplane.rollouts_api import RolloutsApi
from controlplane.secrets import SecretBox
from controlplane.sql import Conn
from controlplane.status import StatusStore
from controlplane.store import CordonResult, HostRow, Store, WorkloadRow
from controlplane.tokens import TokenStore
from controlplane.tokens_api import TokensApi
from keel import fields, spec
from keel.model import HostState
from keel.tracing import inject_traceparent
from keel.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

log = structlog.get_logger("keel.fleet")

DEFAULT_EVENTS = 100
# What `keelctl events --for` may name; the store turns a workload into a pattern, so the name
# must not carry regular-expression syntax.
# `fleet/liveness`: the mass-failure brake's pauses and resumes (`liveness`).
_OBJECT = re.compile(
    r"^(workload|host|instance|operation|token|fleet)/[a-z0-9][-a-z0-9_.]{0,252}\Z"
)
MAX_EVENTS = 10_000


class FleetApi(
    RolloutsApi,
    CanaryApi,
    FreezeApi,
    TokensApi,
    OperationsApi,
    fleet_pb2_grpc.FleetServiceServicer,  # type: ignore[misc]
):
    def __init__(
        self,
        store: Store,
        *,
        status: StatusStore,
        logs: LogRelay,
        log_wait_s: float,
        logs_elsewhere: LogBus | None = None,
        cache: FleetCache | None = None,
        watch: OperationWatch | None = None,
        watch_poll_s: float = 2.0,
        drain_blocked_after_s: float = 60.0,
        secrets: SecretBox,
        tokens: TokenStore | None = None,
        requests: Requests | None = None,
        gone_after_s: float = 24 * 3600.0,
        on_freeze_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._on_freeze_changed = on_freeze_changed
        self._tokens = tokens
        self._requests = requests or Requests()
        self._status = status
        self._logs = logs
        self._log_wait_s = log_wait_s
        self._logs_elsewhere = logs_elsewhere
        self._cache = cache
        self._watch = watch or OperationWatch()
        self._watch_poll_s = watch_poll_s
        self._drain_blocked_after_s = drain_blocked_after_s
        self._secrets = secrets
        self._gone_after_s = gone_after_s

    async def ApplyWorkload(
        self, request: fleet_pb2.ApplyWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ApplyWorkloadResponse:
        parsed = spec.parse_manifest(request.manifest_json, "manifest_json")
        reason = convert.reason(request.reason)
        # Sealed before anything else sees it: the store, its events and every answer hold
        # only ciphertext, and a changed value still changes what is stored (deterministic).
        workload = replace(parsed, spec=self._secrets.seal(parsed.name, parsed.spec))
        actor = actor_of(context)
        # The RPC's span is current (controlplane.interceptors): its traceparent travels with
        # the desired change to the agent, so one trace runs from keelctl to the process start.
        trace_context = inject_traceparent()

        async def respond(
            conn: Conn, done: tuple[WorkloadRow, str]
        ) -> fleet_pb2.ApplyWorkloadResponse:
            row, result = done
            return fleet_pb2.ApplyWorkloadResponse(
                workload=await _workload_pb(conn, row), result=result
            )

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.ApplyWorkloadResponse,
            write=lambda once: self._store.apply_workload(
                workload,
                actor=actor,
                reason=reason,
                trace_context=trace_context,
                override_freeze=request.override_freeze,
                once=once,
            ),
            respond=respond,
        )
        log.info("workload applied", workload=workload.name, result=reply.result,
                 generation=reply.workload.generation)  # fmt: skip
        return reply

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
        actor = actor_of(context)

        async def respond(conn: Conn, row: WorkloadRow) -> fleet_pb2.DeleteWorkloadResponse:
            return fleet_pb2.DeleteWorkloadResponse(workload=await _workload_pb(conn, row))

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.DeleteWorkloadResponse,
            write=lambda once: self._store.delete_workload(name, actor=actor, once=once),
            respond=respond,
        )
        log.info("workload deleting", workload=name)
        return reply

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

        async def respond(conn: Conn, deleted: HostDeleted) -> fleet_pb2.DeleteHostResponse:
            return fleet_pb2.DeleteHostResponse(name=name, removed_instances=deleted.removed)

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.DeleteHostResponse,
            write=lambda once: delete_host(
                self._store.pool, name, force=request.force, actor=actor, once=once
            ),
            respond=respond,
        )
        log.warning("host deleted", host=name, actor=actor, force=request.force,
                    instances_removed=len(reply.removed_instances))  # fmt: skip
        return reply

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
                f"object: must be KIND/NAME with KIND workload, host, instance, operation or "
                "fleet and "
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
        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.CordonResponse,
            write=lambda once: self._store.cordon(
                selection.names, selection.selector, reason=reason, actor=actor, once=once
            ),
            respond=_cordon_pb,
        )
        log.info("hosts cordoned", hosts=list(reply.changed), reason=reason, actor=actor,
                 already=len(reply.hosts) - len(reply.changed))  # fmt: skip
        return reply

    async def Uncordon(
        self, request: fleet_pb2.UncordonRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.UncordonResponse:
        selection = convert.host_selection(request.hosts, request.selector)
        actor = actor_of(context)
        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.UncordonResponse,
            write=lambda once: self._store.uncordon(
                selection.names, selection.selector, actor=actor, once=once
            ),
            respond=_uncordon_pb,
        )
        log.info("hosts uncordoned", hosts=list(reply.changed), actor=actor,
                 already=len(reply.hosts) - len(reply.changed))  # fmt: skip
        return reply

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
        elsewhere = self._logs_elsewhere
        if host.connected and elsewhere is not None and not self._logs.holds(host.name):
            try:
                remote = elsewhere.fetch(
                    host.name, inst.id, tail_lines=tail, follow=request.follow, wait_s=wait_s
                )
                async for chunk in remote:
                    if chunk.error:
                        raise FailedPrecondition(chunk.error)
                    yield chunk
                return
            except NoHolder:
                # No replica holds the stream: the agent is disconnected now, whether the
                # host is not yet marked so or its agent is reconnecting. Read the host again
                # in case it has just reconnected here.
                host = await self._store.get_host(inst.host)
                if not self._logs.holds(host.name):
                    raise FailedPrecondition(
                        disconnected(host.name, inst.id, maybe_back=host.connected)
                    ) from None
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


async def _workload_pb(conn: Conn, row: WorkloadRow) -> types_pb2.Workload:
    """A write's answer: the workload with its status, as the write's transaction sees it."""
    tallies = await tallies_on(conn, [row])
    return convert.workload_pb(row, tallies[row.workload.name])


async def _cordon_pb(conn: Conn, result: CordonResult) -> fleet_pb2.CordonResponse:
    return fleet_pb2.CordonResponse(hosts=convert.hosts_pb(result.hosts), changed=result.changed)


async def _uncordon_pb(conn: Conn, result: CordonResult) -> fleet_pb2.UncordonResponse:
    return fleet_pb2.UncordonResponse(hosts=convert.hosts_pb(result.hosts), changed=result.changed)
