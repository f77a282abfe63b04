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
from controlplane.listing import tallies_on
from controlplane.sql import Conn
from controlplane.store import Store, WorkloadRow
from keel.convert import ts
from keel.model import Desired, converged
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
    """The workload's rollout as `conn`'s transaction sees it: its instances counted by
    whether they run the current spec (`WorkloadRow.is_current`) and are ready."""
    name = row.workload.name
    live = [t for t in (await tallies_on(conn, [row]))[name] if t.desired is not Desired.REMOVED]
    updated = [t for t in live if row.is_current(t.generation)]
    since = await conn.fetchval(
        "SELECT created_at FROM workload_revision WHERE workload = $1 AND revision = $2",
        name,
        row.generation,
    )
    if row.canary_pending:
        state = "AWAITING_PROMOTION"
    elif row.paused:
        state = "PAUSED"
    else:
        state = "PROGRESSING"
    return fleet_pb2.RolloutStatus(
        workload=name,
        revision=row.generation,
        state=state,
        desired=row.workload.replicas,
        updated=sum(t.count for t in updated),
        ready=sum(t.count for t in updated if converged(Desired.RUNNING, t.phase, t.ready)),
        old_remaining=sum(t.count for t in live) - sum(t.count for t in updated),
        canaries=sum(t.count for t in updated) if row.canary_pending else 0,
        paused=row.paused,
        paused_by=row.paused_by,
        paused_at=ts(row.paused_at),
        message=message,
        since=ts(since),
    )
