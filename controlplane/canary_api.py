"""FleetService's canary calls: PromoteRollout and AbortRollout (`keelctl rollout promote|abort`).

`CanaryApi` is a base of `fleet.FleetApi`. Promote lets the canary rollout of a workload's
current revision continue (`revision_store.promote`); abort removes its canaries and returns to
the revision they ran beside (`canary_store.abort`). Both are mutating calls run once per
request id (`idempotency.Requests`), with the caller's token name as their actor
(`controlplane.actor`); which role may call them is in `controlplane.auth`. Each answers the
workload's rollout as its write's transaction left it (a `RolloutStatus`).
"""

from __future__ import annotations

import grpc
import structlog

from controlplane import convert
from controlplane.actor import actor_of
from controlplane.canary_store import Aborted
from controlplane.idempotency import Requests
from controlplane.rollout_convert import status_pb
from controlplane.rollout_status import read_status
from controlplane.sql import Conn
from controlplane.store import Store, WorkloadRow
from keel.v1 import fleet_pb2

log = structlog.get_logger("keel.canary")


class CanaryApi:
    """FleetService's PromoteRollout and AbortRollout."""

    _store: Store
    _requests: Requests

    async def PromoteRollout(
        self, request: fleet_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.RolloutStatus:
        name = convert.workload_name(request.workload, "workload")
        reason = convert.reason(request.reason)
        actor = actor_of(context)

        async def respond(conn: Conn, row: WorkloadRow) -> fleet_pb2.RolloutStatus:
            return await rollout_status(
                conn,
                row,
                message=f"revision {row.generation} promoted by {actor}: the rollout continues",
            )

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.RolloutStatus,
            write=lambda once: self._store.promote(name, actor=actor, reason=reason, once=once),
            respond=respond,
            method="PromoteRollout",
        )
        log.info("rollout promoted", workload=name, revision=reply.revision, actor=actor)
        return reply

    async def AbortRollout(
        self, request: fleet_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.RolloutStatus:
        name = convert.workload_name(request.workload, "workload")
        reason = convert.reason(request.reason)
        actor = actor_of(context)

        async def respond(conn: Conn, done: Aborted) -> fleet_pb2.RolloutStatus:
            return await rollout_status(
                conn,
                done.row,
                message=(
                    f"revision {done.aborted} aborted by {actor}: its canaries are removed; the "
                    f"spec of revision {done.to_revision} runs again as revision "
                    f"{done.row.generation}, its instances kept"
                ),
            )

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.RolloutStatus,
            write=lambda once: self._store.abort(name, actor=actor, reason=reason, once=once),
            respond=respond,
            method="AbortRollout",
        )
        log.info("rollout aborted", workload=name, revision=reply.revision, actor=actor)
        return reply


async def rollout_status(conn: Conn, row: WorkloadRow, *, message: str) -> fleet_pb2.RolloutStatus:
    """The workload's rollout as `conn`'s transaction sees it (`rollout_status.read_status`,
    GetRolloutStatus's own reading), with what was just done as its message."""
    status = status_pb(await read_status(conn, row.workload.name))
    status.message = message
    return status
