"""Operations in Postgres: a drain begun (its hosts cordoned in the same transaction), read,
listed, moved through its states by the drain controller, cancelled.

Neighbours: `fleet` (the operator RPCs) begins, reads, lists and cancels through `store.Store`,
which inherits these queries; the drain controller (`drainer`) starts, records progress,
forces and finishes, each write fenced by the leader epoch and refused once the operation has
ended; the records are `operations`; cordons are `cordon_store`. Every write takes a new
`version` and ends with NOTIFY on `OPERATION_CHANNEL`, so watchers on any replica send it.
Lock order (see `sql`): the leader row, the operation, workloads, hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from controlplane.cordon_store import cordon_hosts, select_hosts, uncordon_hosts
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.idempotency import Once, once_in
from controlplane.operations import (
    ACTIVE,
    RUNBOOK,
    DrainParams,
    OperationRow,
    OperationState,
    Progress,
)
from controlplane.plan_checks import Stale
from controlplane.sql import (
    OPERATION_CHANNEL,
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    bump_versions,
    check_epoch,
    decode_each,
    notify,
    record_event,
    workload_payload,
)
from keel.text import first_of

# `keelctl ops --all` lists at most this many, newest first.
MAX_LISTED = 1000


class _Keep:
    """An `update_operation` argument left as it is (None is a value: not blocked)."""


KEEP = _Keep()


def operation_row(r: asyncpg.Record) -> OperationRow:
    return OperationRow(
        id=r["id"],
        kind=r["kind"],
        state=OperationState(r["state"]),
        hosts=tuple(r["hosts"]),
        params=DrainParams.from_json(r["params"]),
        actor=r["actor"],
        reason=r["reason"],
        runbook=r["runbook"],
        progress=Progress.from_json(r["progress"]),
        message=r["message"],
        forced=r["forced"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        deadline_at=r["deadline_at"],
        blocked_since=r["blocked_since"],
        version=r["version"],
    )


# Hosts named in a message, at most.
_MESSAGE_HOSTS = 10


class OperationStore:
    """Operation queries over the shared pool (a base of `store.Store`)."""

    pool: Database

    async def begin_drain(
        self,
        names: Sequence[str],
        selector: Mapping[str, str],
        *,
        params: DrainParams,
        reason: str,
        actor: str,
        once: Once[tuple[OperationRow, bool]] | None = None,
    ) -> tuple[OperationRow, bool]:
        """Cordons the hosts and records their drain, in one transaction. If every host is being
        drained already by one operation, that operation is returned (False: not created);
        FailedPrecondition if only some are (nothing changed). NotFound like a cordon. `once`:
        the request id's record (`idempotency`)."""

        async def write() -> tuple[OperationRow, bool]:
            hosts = await select_hosts(conn, names, selector)
            running = await conn.fetch(
                """SELECT * FROM operation WHERE state = ANY($2::text[]) AND hosts && $1::text[]
                   ORDER BY created_at""",
                hosts,
                list(ACTIVE),
            )
            for r in running:
                if set(hosts) <= set(r["hosts"]):
                    return operation_row(r), False
            if running:
                op = running[0]
                overlap = sorted(set(op["hosts"]) & set(hosts))
                named = first_of(overlap, _MESSAGE_HOSTS)
                raise FailedPrecondition(
                    f"{named} {'is' if len(overlap) == 1 else 'are'} being "
                    f"drained by {op['id']} (keelctl op get {op['id']}); drain the other hosts "
                    "on their own, or cancel it first; nothing was changed"
                )
            number = await conn.fetchval("SELECT nextval('operation_number')")
            op_id = f"op-{number:06d}"
            why = f": {reason}" if reason else ""
            await cordon_hosts(
                conn, hosts, reason=reason or f"drain {op_id}", actor=actor,
                message=f"cordoned for drain {op_id}{why}",
            )  # fmt: skip
            row = await conn.fetchrow(
                """INSERT INTO operation (id, kind, state, hosts, params, actor, reason, runbook,
                                          deadline_at)
                   VALUES ($1, 'drain', 'PENDING', $2, $3, $4, $5, $6,
                           now() + $7::bigint * interval '1 millisecond')
                   RETURNING *""",
                op_id,
                hosts,
                params.to_json(),
                actor,
                reason,
                RUNBOOK,
                params.deadline_ms,
            )
            assert row is not None
            await record_event(
                conn,
                f"operation/{op_id}",
                "DrainRequested",
                f"drain of {first_of(hosts, _MESSAGE_HOSTS)}{why}",
                actor=actor,
            )
            await notify(conn, OPERATION_CHANNEL, [op_id])
            return operation_row(row), True

        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(conn, once, write)

    async def get_operation(self, op_id: str) -> OperationRow:
        row = await self.pool.fetchrow("SELECT * FROM operation WHERE id = $1", op_id)
        if row is None:
            raise NotFound(f'operation "{op_id}" not found')
        return operation_row(row)

    async def list_operations(self, *, everything: bool) -> list[OperationRow]:
        """The running operations (`everything`: every one kept), newest first."""
        if everything:
            rows = await self.pool.fetch(
                "SELECT * FROM operation ORDER BY created_at DESC, id DESC LIMIT $1", MAX_LISTED
            )
        else:
            rows = await self.pool.fetch(
                """SELECT * FROM operation WHERE state IN ('PENDING', 'RUNNING')
                   ORDER BY created_at DESC, id DESC"""
            )
        return decode_each(rows, operation_row, what="operation")

    async def cancel_operation(
        self,
        op_id: str,
        *,
        uncordon: bool,
        actor: str,
        once: Once[OperationRow] | None = None,
    ) -> OperationRow:
        """Ends a running operation CANCELLED: nothing more moves, what moved stays moved, and
        its hosts stay cordoned unless `uncordon`. Cancelling a cancelled operation changes
        nothing; one that ended otherwise is FailedPrecondition. `once`: the request id's
        record (`idempotency`)."""

        async def write() -> OperationRow:
            row = await conn.fetchrow("SELECT * FROM operation WHERE id = $1 FOR UPDATE", op_id)
            if row is None:
                raise NotFound(f'operation "{op_id}" not found')
            op = operation_row(row)
            if op.state is OperationState.CANCELLED:
                return op
            if not op.state.active:
                raise FailedPrecondition(
                    f"{op_id} already ended {op.state.value}; there is nothing to cancel"
                )
            p = op.progress
            message = f"cancelled by {actor}: {p.moved} moved, {p.remaining} left on the hosts" + (
                "; hosts uncordoned" if uncordon else "; hosts left cordoned"
            )
            row = await conn.fetchrow(
                """UPDATE operation SET state = 'CANCELLED', finished_at = now(), message = $2,
                          blocked_since = NULL, version = version + 1
                   WHERE id = $1 RETURNING *""",
                op_id,
                message,
            )
            assert row is not None
            await record_event(conn, f"operation/{op_id}", "DrainCancelled", message, actor=actor)
            await release_moves(conn, op.hosts)
            if uncordon:
                await select_hosts(conn, op.hosts, {})  # locks them, in name order
                await uncordon_hosts(conn, op.hosts, actor=actor)
            await notify(conn, OPERATION_CHANNEL, [op_id])
            return operation_row(row)

        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(conn, once, write)

    # -- the drain controller's writes --------------------------------------------------------

    async def operation_counts(self) -> dict[tuple[str, str], int]:
        """Every operation kept, counted by (kind, state) (keel_operations)."""
        rows = await self.pool.fetch(
            "SELECT kind, state, count(*)::int AS n FROM operation GROUP BY kind, state"
        )
        return {(r["kind"], r["state"]): r["n"] for r in rows}

    async def active_operations(self) -> list[OperationRow]:
        rows = await self.pool.fetch(
            "SELECT * FROM operation WHERE state IN ('PENDING', 'RUNNING') ORDER BY created_at"
        )
        return decode_each(rows, operation_row, what="operation")

    async def update_operation(
        self,
        op_id: str,
        *,
        epoch: int | None,
        state: OperationState | None = None,
        progress: Progress | None = None,
        blocked_since: datetime | _Keep | None = KEEP,
        message: str | None = None,
        forced: bool | None = None,
        event: tuple[str, str] | None = None,
        actor: str = "",
        hosts: Sequence[str] = (),
    ) -> OperationRow | None:
        """Writes what the drain controller decided of a running operation; None (nothing
        written) if it has ended meanwhile (a cancel won). `event` is (kind, message). An
        operation that ends FAILED releases the moves under way on its `hosts`
        (`release_moves`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            row = await conn.fetchrow(
                """UPDATE operation SET
                       state = coalesce($2, state),
                       started_at = CASE WHEN $2 = 'RUNNING' THEN now() ELSE started_at END,
                       finished_at = CASE WHEN $2 IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
                                          THEN now() ELSE finished_at END,
                       progress = coalesce($3, progress),
                       blocked_since = CASE WHEN $4 THEN $5 ELSE blocked_since END,
                       message = coalesce($6, message),
                       forced = coalesce($7, forced),
                       version = version + 1
                   WHERE id = $1 AND state IN ('PENDING', 'RUNNING')
                   RETURNING *""",
                op_id,
                None if state is None else state.value,
                None if progress is None else progress.to_json(),
                not isinstance(blocked_since, _Keep),
                None if isinstance(blocked_since, _Keep) else blocked_since,
                message,
                forced,
            )
            if row is None:
                return None
            if event is not None:
                kind, text = event
                await record_event(conn, f"operation/{op_id}", kind, text, actor=actor)
            if state is OperationState.FAILED:
                await release_moves(conn, hosts)
            await notify(conn, OPERATION_CHANNEL, [op_id])
            return operation_row(row)

    async def mark_drained(self, op_id: str, hosts: Sequence[str], *, epoch: int | None) -> None:
        """The hosts' services are gone: their daemons stop now and stay stopped until they are
        uncordoned. The `*` notification makes the leader's cache read the hosts again, and the
        workload controller removes the daemons."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            await guard_running(conn, op_id)
            rows = await conn.fetch(
                """UPDATE host SET drained = true
                   WHERE name = ANY($1::text[]) AND NOT drained RETURNING name""",
                sorted(hosts),
            )
            for r in rows:
                await record_event(
                    conn, f"host/{r['name']}", "HostDrained",
                    f"drain {op_id}: services moved off; daemons stop until it is uncordoned",
                )  # fmt: skip
            if rows:
                await conn.execute("SELECT pg_notify($1, '*')", WORKLOAD_CHANNEL)


async def release_moves(conn: Conn, hosts: Sequence[str]) -> None:
    """A drain that ends before its moves do hands them back to the workload controller: each
    replacement stops naming the instance it replaces on the drained `hosts`, so both count as
    replicas again and the workload's own plan removes the surplus, within its budget (else the
    old instance would run on, uncounted). Locks the workloads (in name order, after the
    operation), gives them a new version and notifies them, so the leader's cache reads them."""
    rows = await conn.fetch(
        """SELECT DISTINCT r.workload FROM instance r JOIN instance x ON x.id = r.replaces
           WHERE r.replaces <> '' AND x.host = ANY($1::text[])""",
        list(hosts),
    )
    names = sorted(r["workload"] for r in rows)
    if not names:
        return
    await conn.execute(
        "SELECT 1 FROM workload WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE", names
    )
    await conn.execute(
        """UPDATE instance r SET replaces = '' FROM instance x
           WHERE x.id = r.replaces AND r.replaces <> '' AND x.host = ANY($1::text[])""",
        list(hosts),
    )
    for v in await bump_versions(conn, names, desired=True):
        await conn.execute(
            "SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, workload_payload(v.workload, v.version)
        )


async def guard_running(conn: Conn, op_id: str) -> None:
    """Stale unless the operation is still RUNNING; held FOR SHARE until the transaction ends,
    so a cancel (which takes it FOR UPDATE) waits for a write already under way and every
    later write sees the cancel."""
    state = await conn.fetchval("SELECT state FROM operation WHERE id = $1 FOR SHARE", op_id)
    if state != OperationState.RUNNING.value:
        raise Stale(f"operation {op_id} is no longer running")
