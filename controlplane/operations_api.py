"""FleetService's operation calls: Drain, PlanDrain, GetOperation, ListOperations,
CancelOperation and WatchOperation (a base of `fleet.FleetApi`, which has the rest).

Any replica answers them: the operation lives in Postgres and the drain controller (`drainer`,
on the leader) carries it out. A watch sends the record, then each new version of it until it
ends, woken on this replica by the `keel_operation` NOTIFY (`OperationWatch`) and reading it
again every `--watch-poll` whatever happens, so a lost notification only delays it. A dry run
reads the leader's cache when this replica leads, else the hosts and the drained hosts'
workloads from Postgres, and runs the planner forward (`drain_plan.plan_drain`); it writes
nothing. Drain and CancelOperation run through `controlplane.idempotency.Requests` like every
mutating call (a retry with the same request id is answered from the first attempt's record).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
import structlog

from controlplane import convert, operation_convert
from controlplane.actor import actor_of
from controlplane.cache import FleetCache, NotLoaded
from controlplane.drain import DrainFleet, Options
from controlplane.drain_plan import Timing, plan_drain, timing_of
from controlplane.fleet_index import InstanceRecord
from controlplane.idempotency import Requests
from controlplane.operations import OperationRow
from controlplane.sql import Conn
from controlplane.store import Store
from controlplane.view import HostView, WorkloadView
from keel.v1 import fleet_pb2

log = structlog.get_logger("keel.fleet")


class OperationWatch:
    """The WatchOperation streams on this replica, woken when their operation changes."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def changed(self, op_id: str) -> None:
        for event in self._waiting.get(op_id, ()):
            event.set()

    def changed_all(self) -> None:
        """Notifications may have been lost (the listener reconnected): every watch reads."""
        for events in self._waiting.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watching(self, op_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.setdefault(op_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(op_id, set())
            events.discard(event)
            if not events:
                self._waiting.pop(op_id, None)


class OperationsApi:
    """The operation calls, over the store and, on the leader, its cache."""

    _store: Store
    _cache: FleetCache | None
    _watch: OperationWatch
    _watch_poll_s: float
    _requests: Requests

    async def Drain(
        self, request: fleet_pb2.DrainRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.DrainResponse:
        selection = convert.host_selection(request.hosts, request.selector)
        params = operation_convert.drain_params(request)
        reason = convert.reason(request.reason)
        actor = actor_of(context)
        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.DrainResponse,
            write=lambda once: self._store.begin_drain(
                selection.names,
                selection.selector,
                params=params,
                reason=reason,
                actor=actor,
                once=once,
            ),
            respond=_drain_pb,
        )
        op = reply.operation
        log.info("drain requested" if reply.created else "drain requested again: already running",
                 operation=op.id, hosts=list(op.hosts), actor=actor)  # fmt: skip
        return reply

    async def PlanDrain(
        self, request: fleet_pb2.PlanDrainRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.PlanDrainResponse:
        selection = convert.host_selection(request.hosts, request.selector)
        max_parallel = operation_convert.max_parallel(request.max_parallel)
        hosts = await self._store.resolve_hosts(selection.names, selection.selector)
        fleet, timings = await self._drain_fleet(hosts)
        options = Options(max_parallel=max_parallel or None, ignore_daemons=request.ignore_daemons)
        plan = plan_drain(fleet, options, now=await self._store.now(), timings=timings)
        return operation_convert.drain_plan_pb(plan, hosts)

    async def GetOperation(
        self, request: fleet_pb2.GetOperationRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.Operation:
        op = await self._store.get_operation(operation_convert.operation_id(request.id))
        return operation_convert.operation_pb(op)

    async def ListOperations(
        self, request: fleet_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListOperationsResponse:
        rows = await self._store.list_operations(everything=request.all)
        return fleet_pb2.ListOperationsResponse(operations=operation_convert.operations_pb(rows))

    async def CancelOperation(
        self, request: fleet_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.Operation:
        op_id = operation_convert.operation_id(request.id)
        actor = actor_of(context)
        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.Operation,
            write=lambda once: self._store.cancel_operation(
                op_id, uncordon=request.uncordon, actor=actor, once=once
            ),
            respond=_operation_pb,
        )
        log.info("operation cancelled", operation=op_id, uncordon=request.uncordon, actor=actor)
        return reply

    async def WatchOperation(
        self, request: fleet_pb2.WatchOperationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fleet_pb2.Operation]:
        op_id = operation_convert.operation_id(request.id)
        sent = 0
        with self._watch.watching(op_id) as woke:
            while True:
                woke.clear()
                op = await self._store.get_operation(op_id)
                if op.version != sent:
                    yield operation_convert.operation_pb(op)
                    sent = op.version
                if not op.state.active:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._watch_poll_s):
                        await woke.wait()

    async def _drain_fleet(self, hosts: list[str]) -> tuple[DrainFleet, dict[str, Timing]]:
        """What a dry run plans from: the leader's cache, or Postgres on a follower."""
        draining = {h for op in await self._store.active_operations() for h in op.hosts}
        draining.update(hosts)
        host_views: dict[str, HostView]
        workloads: dict[str, WorkloadView] = {}
        instances: dict[str, list[InstanceRecord]] = {}
        timings: dict[str, Timing] = {}
        try:
            if self._cache is None:
                raise NotLoaded()
            index = self._cache.index
            # An uncordon just before the dry run must count: the hosts as they are now.
            await self._cache.refresh_hosts()
            names = {n for h in hosts for n in index.workloads_on(h)}
            entries = [e for n in sorted(names) if (e := index.workload(n)) is not None]
            reads = [(e.row, e.view, list(e.instances.values())) for e in entries]
            host_views = dict(self._cache.hosts)
            usage = self._cache.usage
        except NotLoaded:
            records = await self._store.read_hosts(None)
            host_views = {r.name: r.view for r in records}
            names = set(await self._store.workloads_on(hosts))
            reads = [
                (r.row, r.view, r.instances)
                for r in await self._store.read_workloads(sorted(names))
            ]
            usage = await self._store.read_usage()
        observed = await self._store.observed_start_s([view.name for _, view, _ in reads])
        for row, view, records_of in reads:
            workloads[view.name] = view
            instances[view.name] = records_of
            timings[view.name] = timing_of(
                row.workload.spec, observed_start_s=observed.get(view.name)
            )
        fleet = DrainFleet(
            targets=frozenset(hosts),
            hosts=host_views,
            draining=draining,
            workloads=workloads,
            instances=instances,
            usage=usage,
        )
        return fleet, timings


async def _drain_pb(conn: Conn, done: tuple[OperationRow, bool]) -> fleet_pb2.DrainResponse:
    op, created = done
    return fleet_pb2.DrainResponse(operation=operation_convert.operation_pb(op), created=created)


async def _operation_pb(conn: Conn, op: OperationRow) -> fleet_pb2.Operation:
    return operation_convert.operation_pb(op)
