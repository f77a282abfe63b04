"""FleetService's deploy-freeze calls: Freeze, Unfreeze (operator) and GetFreeze (viewer).

`FreezeApi` is a base of `fleet.FleetApi`; the freezes live in `controlplane.freeze` (the
store queries, the events and the gate that applies consult). Freeze and Unfreeze run through
`idempotency.Requests` like every mutating call, so a retried call is answered, not applied
twice; both answer the freezes that hold afterwards, so Unfreeze says which alert freezes
still hold, and Unfreeze what it lifted (the operator's freeze; with `alert` or `all`, alerts'
freezes whose resolved notification was lost). The alerts' freezes come from the webhook
(`controlplane.alert_hook`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import grpc

from controlplane import convert, freeze
from controlplane.actor import actor_of
from controlplane.errors import InvalidArgument
from controlplane.idempotency import Requests
from controlplane.sql import Conn
from controlplane.store import Store
from keel.convert import set_ts
from keel.quantities import MAX_DURATION_MS
from keel.v1 import fleet_pb2

# The longest `until_in`: keelctl's longest duration (`keel.quantities`).
MAX_UNTIL_IN = timedelta(milliseconds=MAX_DURATION_MS)


def status_pb(
    freezes: Sequence[freeze.Freeze], *, lifted: Sequence[freeze.Freeze] = ()
) -> fleet_pb2.FreezeStatus:
    reply = fleet_pb2.FreezeStatus(frozen=bool(freezes))
    for into, items in ((reply.freezes, freezes), (reply.lifted, lifted)):
        for f in items:
            item = into.add(source=f.source, reason=f.reason, actor=f.actor)
            set_ts(item.since, f.since)
            set_ts(item.until, f.until)
    return reply


async def _status_pb(conn: Conn, freezes: list[freeze.Freeze]) -> fleet_pb2.FreezeStatus:
    return status_pb(freezes)


async def _unfrozen_pb(conn: Conn, done: freeze.Unfrozen) -> fleet_pb2.FreezeStatus:
    return status_pb(done.holding, lifted=done.lifted)


def until_of(request: fleet_pb2.FreezeRequest) -> datetime | timedelta | None:
    """The request's `until`, its `until_in` (from now, by database time when the freeze is
    written), or None (until unfrozen); whether a time is ahead is the store's question."""
    if request.HasField("until") and request.HasField("until_in"):
        raise InvalidArgument("until_in: give until (a time) or until_in (a duration), not both")
    if request.HasField("until_in"):
        try:
            ahead = request.until_in.ToTimedelta()
        except (ValueError, OverflowError):
            ahead = None
        if ahead is None or not timedelta(0) < ahead <= MAX_UNTIL_IN:
            raise InvalidArgument(
                f"until_in: must be a duration from 1ms to {MAX_UNTIL_IN.days} days, got "
                f"{request.until_in.seconds}s {request.until_in.nanos}ns"
            )
        return ahead
    if not request.HasField("until"):
        return None
    try:
        return request.until.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            "until: not a time that can be stored (seconds since 1970 within years 1-9999)"
        ) from None


class FreezeApi:
    """Freeze, Unfreeze and GetFreeze; see the module docstring."""

    _store: Store
    _requests: Requests
    # Called after a Freeze or Unfreeze commits (`freeze_watch.FreezeWatch.changed`: this
    # replica's keel_deploy_frozen follows at once).
    _on_freeze_changed: Callable[[], None]

    async def Freeze(
        self, request: fleet_pb2.FreezeRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.FreezeStatus:
        reason = convert.reason(request.reason)
        until = until_of(request)
        actor = actor_of(context)
        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.FreezeStatus,
            write=lambda once: freeze.freeze(
                self._store.pool, reason=reason, until=until, actor=actor, once=once
            ),
            respond=_status_pb,
        )
        self._on_freeze_changed()
        return reply

    async def Unfreeze(
        self, request: fleet_pb2.UnfreezeRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.FreezeStatus:
        actor = actor_of(context)
        reply = await self._requests.run(
            context,
            request,
            reply=fleet_pb2.FreezeStatus,
            write=lambda once: freeze.unfreeze(
                self._store.pool, actor=actor, alert=request.alert, every=request.all, once=once
            ),
            respond=_unfrozen_pb,
        )
        self._on_freeze_changed()
        return reply

    async def GetFreeze(
        self, request: fleet_pb2.GetFreezeRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.FreezeStatus:
        return status_pb(await freeze.status(self._store.pool))
