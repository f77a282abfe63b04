"""Instances in Postgres: placements of a workload generation on hosts, and the plans that
write them.

Neighbours: `store.Store` inherits these queries (with `workload_store` and `hosts`); the
workload controller (`workload`) writes each `rollout` plan through `apply_plan`, and the drain
controller (`drainer`) a step's plans through `apply_plans` (both with `plan_write`); `sync`
reads a host's assignments for its agent's stream; observed state (reports, stuck marks) is
written by `status`. Every transaction that changes a host's instances bumps that host's
revision in the same transaction (`sql.bump_revisions`), and ends with NOTIFY on
`HOST_CHANNEL`, delivered at commit. A plan is written only over the workload version and the
host states it was made from, and takes a new workload version (`sql.bump_versions`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane.errors import NotFound
from controlplane.fleet_index import HostSeen
from controlplane.plan_checks import Stale
from controlplane.plan_write import (
    PlanResult,
    PlanWrite,
    change_clock,
    hosts_of,
    instance_id,
    write_plan,
)
from controlplane.sql import Conn, Database, check_epoch, decode_each
from controlplane.view import StuckState
from controlplane.workload_store import WorkloadRow, stuck_state
from keel.model import Desired, Phase, WorkloadSpec, converged

__all__ = ["InstanceRow", "InstanceStore", "PlanResult", "PlanWrite", "change_clock", "instance_id"]


@dataclass(frozen=True)
class InstanceRow:
    id: str
    workload: str
    generation: int
    host: str
    spec: WorkloadSpec
    desired: Desired
    desired_changed_at: datetime
    revision: int
    created_at: datetime
    phase: Phase
    pid: int
    restart_count: int
    last_exit: str
    reason: str
    message: str
    ports: dict[str, int]
    ready: bool
    started_at: datetime | None
    observed_at: datetime | None
    stuck: StuckState | None = None
    agent_stuck: bool = False
    unconverged_since: datetime | None = None
    converged_at: datetime | None = None
    trace_context: str = ""
    replaces: str = ""  # a drain's replacement: the instance it replaces

    @property
    def converged(self) -> bool:
        return converged(self.desired, self.phase, self.ready)

    @property
    def observed(self) -> bool:
        """Its agent has reported it at least once."""
        return self.observed_at is not None

    @property
    def stop_grace_ms(self) -> int:
        return self.spec.stop_grace_ms


def _refused(stale: Stale) -> PlanResult:
    return PlanResult(created=[], removed=0, stale=stale.what, stale_hosts=stale.hosts)


def instance_row(r: asyncpg.Record) -> InstanceRow:
    return InstanceRow(
        id=r["id"],
        workload=r["workload"],
        generation=r["generation"],
        host=r["host"],
        spec=WorkloadSpec.from_json(r["spec"]),
        desired=Desired(r["desired"]),
        desired_changed_at=r["desired_changed_at"],
        revision=r["revision"],
        created_at=r["created_at"],
        phase=Phase(r["phase"]),
        pid=r["pid"],
        restart_count=r["restart_count"],
        last_exit=r["last_exit"],
        reason=r["reason"],
        message=r["message"],
        ports=dict(r["ports"]),
        ready=r["ready"],
        started_at=r["started_at"],
        observed_at=r["observed_at"],
        stuck=stuck_state(r),
        agent_stuck=r["agent_stuck"],
        unconverged_since=r["unconverged_since"],
        converged_at=r["converged_at"],
        trace_context=r["trace_context"],
        replaces=r["replaces"],
    )


# list_instances' filters: (by workload, by host) -> its WHERE clause (fixed text, never input).
_LIST_WHERE = {
    (True, True): "WHERE workload = $1 AND host = $2",
    (True, False): "WHERE workload = $1",
    (False, True): "WHERE host = $1",
    (False, False): "",
}


class InstanceStore:
    """Instance and plan queries over the shared pool (a base of `store.Store`)."""

    pool: Database

    async def get_instance(self, instance_id: str) -> InstanceRow:
        row = await self.pool.fetchrow("SELECT * FROM instance WHERE id = $1", instance_id)
        if row is None:
            raise NotFound(f'instance "{instance_id}" not found')
        return instance_row(row)

    async def list_instances(
        self, *, workload: str | None = None, host: str | None = None
    ) -> list[InstanceRow]:
        """Every matching instance, full rows (spec included). Operators read pages of what
        they are shown instead (`listing`); this is the whole read, as the tests check it."""
        # One statement per filter, not one with "$1 IS NULL OR": a prepared statement's
        # generic plan could use no index for that, and a workload's read would scan the fleet.
        where = _LIST_WHERE[(workload is not None, host is not None)]
        rows = await self.pool.fetch(
            f"SELECT * FROM instance {where} ORDER BY workload, generation, id",
            *(a for a in (workload, host) if a is not None),
        )
        return decode_each(rows, instance_row, what="instance")

    async def host_assignments(
        self, host: str, *, since: int | None
    ) -> tuple[int, list[InstanceRow]]:
        """The host's revision and its instances changed after `since` (None: all of them).

        Both come from one statement, so one snapshot: the revision returned covers exactly
        the rows returned. One round trip, as every push to an agent makes this read.
        """
        rows = await self.pool.fetch(
            """SELECT h.revision AS host_revision, i.*
               FROM host h LEFT JOIN instance i ON i.host = h.name AND i.revision > $2
               WHERE h.name = $1 ORDER BY i.revision, i.id""",
            host,
            -1 if since is None else since,
        )
        if not rows:
            return 0, []
        found = [r for r in rows if r["id"] is not None]  # none: the one row the join kept
        return int(rows[0]["host_revision"]), decode_each(found, instance_row, what="instance")

    async def host_tombstones(self, host: str) -> list[InstanceRow]:
        """The host's instances waiting for the agent to confirm their removal."""
        rows = await self.pool.fetch(
            "SELECT * FROM instance WHERE host = $1 AND desired = 'REMOVED' ORDER BY id", host
        )
        return decode_each(rows, instance_row, what="instance")

    async def apply_plan(
        self,
        workload: WorkloadRow,
        *,
        create_on: Sequence[str],
        remove: Sequence[str],
        epoch: int | None,
        version: int | None = None,
        hosts_read: Mapping[str, HostSeen] | None = None,
        settles: bool = False,
        replaces: Sequence[str] = (),
        guard: Callable[[Conn], Awaitable[None]] | None = None,
    ) -> PlanResult:
        """Writes one workload's plan in one transaction: new instances and tombstones.

        A drain's write (`drainer`) names, for each instance it creates, the instance it
        replaces (`replaces`, aligned with `create_on`), and passes a `guard` run first in the
        transaction (after the epoch check), which raises `Stale` if the drain may no longer
        write. Its changes became desired when the drain decided them, not when the workload
        last changed: they, and the workload's `desired_changed_at` (which the replacement of
        a stop-before-start move is placed with), get the transaction's time.

        `epoch` fences a deposed leader: the transaction fails with NotLeader if another
        replica has taken over since. The plan is written only if it was made from what is
        current: `version` (by default the version `workload` was read at) is still the
        workload's version (no apply, delete, plan, fencing or report changed it or its
        instances since); a plan that only creates compares `workload.desired_version` instead
        (reports cannot make its count or its room wrong: they only free resources and surge
        room, and it removes nothing whose availability they change); and every host in
        `hosts_read` is still as the plan saw it
        (state, cordon, and the revision of a host it places on: nothing was placed there
        since). Otherwise nothing is written and the result says what moved (`stale`), so the
        caller reads again and plans again. Each desired change is stamped with the trace
        context of the operator request behind the workload's latest change, and with when it
        became desired (`change_clock`), not when it was placed: the convergence SLI counts
        the time it waited in the control plane's queue. `settles`: the plan leaves nothing
        more to do this pass, so the workload's desired change is no longer pending.
        """
        plan = PlanWrite(
            workload,
            create_on=create_on,
            remove=remove,
            version=version,
            hosts_read=hosts_read or {},
            settles=settles,
            replaces=replaces,
        )
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await check_epoch(conn, epoch)
                if guard is not None:
                    await guard(conn)
                result, _ = await write_plan(conn, plan, drain=guard is not None)
                return result
        except Stale as stale:
            return _refused(stale)

    async def apply_plans(
        self,
        plans: Sequence[PlanWrite],
        *,
        epoch: int | None,
        guard: Callable[[Conn], Awaitable[None]],
    ) -> list[PlanResult]:
        """A drain step's writes, every workload's in one transaction (one commit, not one per
        workload: a step moving 110 single-replica workloads spent nearly all its time in 110
        commits). Each is written as `apply_plan` writes one (with the drain's `guard`, run
        once), in a savepoint of its own: a plan made from what moved since is refused alone,
        and the others are written. The workloads, then every host the step touches, are
        locked first, in name order, the order every other writer takes them in.
        """
        if not plans:
            return []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await check_epoch(conn, epoch)
                await guard(conn)
                await conn.execute(
                    """SELECT 1 FROM workload WHERE name = ANY($1::text[])
                       ORDER BY name FOR NO KEY UPDATE""",
                    sorted({p.workload.workload.name for p in plans}),
                )
                removed = await hosts_of(conn, [i for p in plans for i in p.remove])
                touched = {h for p in plans for h in p.create_on} | set(removed)
                await conn.execute(
                    "SELECT 1 FROM host WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE",
                    sorted(touched),
                )
                bumped: Counter[str] = Counter()
                results = []
                for plan in plans:
                    try:
                        async with conn.transaction():  # a savepoint
                            result, revisions = await write_plan(
                                conn, plan, drain=True, bumped_before=bumped
                            )
                    except Stale as stale:
                        results.append(_refused(stale))
                        continue
                    bumped.update(revisions.keys())
                    results.append(result)
                return results
        except Stale as stale:  # the guard: the drain may no longer write
            return [_refused(stale)] * len(plans)

    async def settle_desired(self, name: str, *, desired_version: int, epoch: int | None) -> bool:
        """The workload's pending desired change needs no plan (what should run already
        does, or is on its way): it is no longer pending. Only over the desired state the
        caller read; False when that moved (the next pass looks again)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            done = await conn.fetchval(
                """UPDATE workload SET desired_pending = false
                   WHERE name = $1 AND desired_version = $2 AND desired_pending
                   RETURNING true""",
                name,
                desired_version,
            )
        return bool(done)
