"""Instances in Postgres: placements of a workload generation on hosts, and the plans that
write them.

Neighbours: `store.Store` inherits these queries (with `workload_store` and `hosts`); the
workload controller (`workload`) writes each `rollout` plan through `apply_plan`; `sync`
reads a host's assignments for its agent's stream; observed state (reports, stuck marks) is
written by `status`. Every transaction that changes a host's instances bumps that host's
revision in the same transaction (`sql.bump_revisions`), and ends with NOTIFY on
`HOST_CHANNEL`, delivered at commit. A plan is written only over the workload version and the
host states it was made from, and takes a new workload version (`sql.bump_versions`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane.errors import NotFound
from controlplane.fleet_index import Delta, HostSeen
from controlplane.plan_checks import Stale, moved_hosts
from controlplane.records import INSTANCE_COLUMNS, instance_record
from controlplane.sql import (
    HOST_CHANNEL,
    Conn,
    Database,
    bump_revisions,
    bump_versions,
    check_epoch,
    decode_each,
    notify,
    record_event,
)
from controlplane.view import StuckState
from controlplane.workload_store import WorkloadRow, stuck_state
from keel.model import Desired, Kind, Phase, WorkloadSpec, converged
from keel.text import first_of


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


@dataclass(frozen=True)
class PlanResult:
    created: list[str]
    removed: int  # instances newly tombstoned
    # Why nothing was written: what the plan was made from changed since (None: written).
    stale: str | None = None
    stale_hosts: tuple[str, ...] = ()  # hosts whose state or cordon moved since the plan
    # The write as the cache applies it (None: nothing written).
    delta: Delta | None = None


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

# How many instance ids an event names before it says "and N more" (a pass may remove 1,000).
_EVENT_IDS = 10


def change_clock(kind: Kind, *, workload_changed_at: datetime, host_since: datetime) -> datetime:
    """When a change a plan writes on a host became desired.

    A service's changes follow from the workload's desired state alone
    (`workload.desired_changed_at`). A daemon's also follow from its hosts: a host that joins
    or comes back READY wants its instance from then, and one that stops being READY has its
    old instances removed from then (`host.state_since`), not from an apply weeks before.
    """
    if kind is Kind.DAEMON:
        return max(workload_changed_at, host_since)
    return workload_changed_at


def instance_id(workload: str, generation: int, number: int) -> str:
    """WORKLOAD-GENERATION-NUMBER, the number from the `instance_number` sequence in hex, six
    digits at least (short, and unique by construction; nothing relies on how ids sort).
    Workload names are DNS labels, so `status.list_events` tells a workload's instances apart
    by `-[0-9]+-[0-9a-f]+$`."""
    return f"{workload}-{generation}-{number:06x}"


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
        try:
            return await self._apply_plan(
                workload,
                create_on=create_on,
                remove=remove,
                epoch=epoch,
                version=workload.version if version is None else version,
                hosts_read=hosts_read or {},
                settles=settles,
                replaces=replaces,
                guard=guard,
            )
        except Stale as stale:
            return PlanResult(created=[], removed=0, stale=stale.what, stale_hosts=stale.hosts)

    async def _apply_plan(
        self,
        workload: WorkloadRow,
        *,
        create_on: Sequence[str],
        remove: Sequence[str],
        epoch: int | None,
        version: int,
        hosts_read: Mapping[str, HostSeen],
        settles: bool,
        replaces: Sequence[str],
        guard: Callable[[Conn], Awaitable[None]] | None,
    ) -> PlanResult:
        w = workload.workload
        drain = guard is not None
        spec = w.spec.to_json()
        records = []
        created: list[str] = []
        removed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            if guard is not None:
                await guard(conn)
            # Locked first, as fencing and report batches lock workloads before hosts and
            # instances: none of them can change what the plan read until this commits.
            current = await conn.fetchrow(
                """SELECT version, desired_version, desired_changed_at, desired_pending
                   FROM workload WHERE name = $1 FOR NO KEY UPDATE""",
                w.name,
            )
            if current is None:
                raise Stale("the workload was deleted")
            if remove and current["version"] != version:
                raise Stale("the workload or its instances changed")
            if not remove and current["desired_version"] != workload.desired_version:
                raise Stale("the workload's desired state changed")
            hosts = sorted(set(create_on) | set(await self._hosts_of(conn, remove)))
            revisions = await bump_revisions(conn, hosts)  # and locks them
            moved = await moved_hosts(conn, hosts_read, bumped=revisions)
            if moved:
                raise Stale("hosts changed", moved)  # rolls the bumps back
            since = await conn.fetch(
                "SELECT name, state_since FROM host WHERE name = ANY($1::text[])", hosts
            )
            decided_at = await conn.fetchval("SELECT clock_timestamp()")
            if drain:
                await conn.execute(
                    "UPDATE workload SET desired_changed_at = $2 WHERE name = $1",
                    w.name,
                    decided_at,
                )
            clocks = {
                r["name"]: change_clock(
                    w.kind,
                    workload_changed_at=current["desired_changed_at"],
                    host_since=r["state_since"],
                )
                if not drain
                else decided_at
                for r in since
            }
            if create_on:
                # Numbers from a sequence: ids are unique by construction, and a retry of a
                # failed transaction gets new ones.
                numbers = await conn.fetch(
                    "SELECT nextval('instance_number') AS n FROM generate_series(1, $1)",
                    len(create_on),
                )
                ids = [instance_id(w.name, workload.generation, r["n"]) for r in numbers]
                records += await conn.fetch(
                    f"""INSERT INTO instance (id, workload, generation, host, spec, cpu_millis,
                                              memory_mib, desired, revision, trace_context,
                                              desired_changed_at, unconverged_since, replaces)
                        SELECT u.id, $1, $2, u.host, $3, $4, $5, 'RUNNING', u.revision, $9,
                               u.clock, clock_timestamp(), u.replaces
                        FROM unnest($6::text[], $7::text[], $8::bigint[], $10::timestamptz[],
                                    $11::text[])
                             AS u(id, host, revision, clock, replaces)
                        RETURNING {INSTANCE_COLUMNS}""",
                    w.name,
                    workload.generation,
                    spec,
                    w.spec.resources.cpu_millis,
                    w.spec.resources.memory_mib,
                    ids,
                    list(create_on),
                    [revisions[h] for h in create_on],
                    workload.trace_context,
                    [clocks[h] for h in create_on],
                    list(replaces) or [""] * len(create_on),
                )
                created = ids
            if remove:
                tombstones = await conn.fetch(
                    # u's columns are named apart from the instance's, which RETURNING names.
                    f"""UPDATE instance i SET desired = 'REMOVED', revision = u.new_revision,
                               desired_changed_at = u.clock, converged_at = NULL,
                               unconverged_since = clock_timestamp(), slow_counted = false,
                               trace_context = $4
                        FROM unnest($2::text[], $3::bigint[], $5::timestamptz[])
                             AS u(on_host, new_revision, clock)
                        WHERE i.id = ANY($1::text[]) AND i.host = u.on_host
                          AND i.desired <> 'REMOVED'
                        RETURNING {INSTANCE_COLUMNS}""",
                    list(remove),
                    list(revisions),
                    list(revisions.values()),
                    workload.trace_context,
                    [clocks[h] for h in revisions],
                )
                removed = len(tombstones)
                records += tombstones
            parts = []
            if created:
                parts.append(f"placed {len(created)} on {', '.join(sorted(set(create_on)))}")
            if remove:
                parts.append(f"removing {first_of(sorted(remove), _EVENT_IDS)}")
            if parts:
                await record_event(
                    conn, f"workload/{w.name}", "WorkloadReconciled", "; ".join(parts)
                )
            if settles and current["desired_pending"]:
                await conn.execute(
                    "UPDATE workload SET desired_pending = false WHERE name = $1", w.name
                )
            [versions] = await bump_versions(conn, [w.name], desired=True)
            await notify(conn, HOST_CHANNEL, hosts)
        delta = Delta(
            w.name,
            from_version=versions.was,
            to_version=versions.version,
            upserts=tuple(decode_each(records, instance_record, what="instance")),
            revisions=tuple(sorted(revisions.items())),
            desired_version=versions.desired_version,
            settled=settles,
        )
        return PlanResult(created=created, removed=removed, delta=delta)

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

    @staticmethod
    async def _hosts_of(conn: Conn, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        rows = await conn.fetch(
            "SELECT DISTINCT host FROM instance WHERE id = ANY($1::text[])", list(ids)
        )
        return [r["host"] for r in rows]
