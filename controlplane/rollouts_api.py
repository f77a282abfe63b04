"""The rollout calls of FleetService: history, status, pause, resume and undo.

`RolloutsApi` is a base of `fleet.FleetApi`. Reads go to Postgres in one snapshot, like every
operator read (any replica answers): the revisions (`revision_store`), the status counted from
the instances' tallies (`rollout_status`). Writes run through `idempotency.Requests` with the
caller's token name as actor (`controlplane.actor`): pause and resume in `rollout_pause`, undo
through `revision_store.RevisionStore.roll_back` (an earlier revision's spec applied again, its
instances kept). Each write's answer is built in its own transaction. Messages are built in
`rollout_convert`; which role may call each is in `controlplane.auth`.
"""

from __future__ import annotations

import grpc
import structlog

from controlplane import convert
from controlplane.actor import actor_of
from controlplane.errors import InvalidArgument
from controlplane.idempotency import Requests
from controlplane.listing import tallies_on
from controlplane.rollout_convert import revision_pb, status_pb
from controlplane.rollout_pause import set_paused
from controlplane.rollout_status import read_status
from controlplane.sql import Conn
from controlplane.store import Store, WorkloadRow
from keel.v1 import fleet_pb2

log = structlog.get_logger("keel.rollouts")


def _to_revision(value: int) -> int | None:
    if value < 0:
        raise InvalidArgument(
            f"to_revision: must be a revision number (keelctl rollout history), or 0 for the "
            f"last revision that was fully ready, got {value}"
        )
    return value or None


class RolloutsApi:
    """FleetService's GetRolloutHistory, GetRolloutStatus, PauseRollout, ResumeRollout and
    UndoRollout."""

    _store: Store
    _requests: Requests

    async def GetRolloutHistory(
        self, request: fleet_pb2.GetRolloutHistoryRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.GetRolloutHistoryResponse:
        name = convert.workload_name(request.workload, "workload")
        revisions = await self._store.revisions(name)
        # The newest revision is the current one: the generation moves only with a new spec,
        # which is a new revision, and the history never prunes the newest.
        return fleet_pb2.GetRolloutHistoryResponse(
            revisions=[revision_pb(r, current=i == 0) for i, r in enumerate(revisions)]
        )

    async def GetRolloutStatus(
        self, request: fleet_pb2.GetRolloutStatusRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.RolloutStatus:
        name = convert.workload_name(request.workload, "workload")
        async with (
            self._store.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return status_pb(await read_status(conn, name))

    async def PauseRollout(
        self, request: fleet_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.RolloutStatus:
        return await self._pause(request, context, paused=True)

    async def ResumeRollout(
        self, request: fleet_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.RolloutStatus:
        return await self._pause(request, context, paused=False)

    async def _pause(
        self,
        request: fleet_pb2.RolloutActionRequest,
        context: grpc.aio.ServicerContext,
        *,
        paused: bool,
    ) -> fleet_pb2.RolloutStatus:
        name = convert.workload_name(request.workload, "workload")
        reason = convert.reason(request.reason)
        actor = actor_of(context)

        async def respond(conn: Conn, row: WorkloadRow) -> fleet_pb2.RolloutStatus:
            return status_pb(await read_status(conn, row.workload.name))

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.RolloutStatus,
            write=lambda once: set_paused(
                self._store.pool, name, paused=paused, actor=actor, reason=reason, once=once
            ),
            respond=respond,
            method="PauseRollout" if paused else "ResumeRollout",
        )
        log.info("rollout paused" if paused else "rollout resumed", workload=name, actor=actor,
                 reason=reason, revision=reply.revision)  # fmt: skip
        return reply

    async def UndoRollout(
        self, request: fleet_pb2.UndoRolloutRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.UndoRolloutResponse:
        name = convert.workload_name(request.workload, "workload")
        to_revision = _to_revision(request.to_revision)
        reason = convert.reason(request.reason)
        actor = actor_of(context)

        async def respond(
            conn: Conn, done: tuple[WorkloadRow, int]
        ) -> fleet_pb2.UndoRolloutResponse:
            row, applied = done
            tallies = await tallies_on(conn, [row])
            return fleet_pb2.UndoRolloutResponse(
                workload=convert.workload_pb(row, tallies[row.workload.name]),
                revision=row.generation,
                to_revision=applied,
            )

        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.UndoRolloutResponse,
            write=lambda once: self._store.roll_back(
                name, to_revision=to_revision, actor=actor, reason=reason, once=once
            ),
            respond=respond,
        )
        log.info("rollout undone", workload=name, actor=actor, reason=reason,
                 revision=reply.revision, to_revision=reply.to_revision)  # fmt: skip
        return reply
