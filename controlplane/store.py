"""The store: desired state in Postgres (workloads, instances, plans), as named queries.

Neighbours: `fleet` (operator RPCs) and `sync` (agent streams) call it; `workload` plans
with its snapshots and write back through it; host queries come from `hosts.HostStore` and
observed state (reports, stuck marks, events) lives in `status`. Every transaction that changes
a host's instances bumps that host's revision in the same transaction (`sql.bump_revisions`),
and each desired change ends with NOTIFY, delivered at commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane.errors import FailedPrecondition, NotFound
from controlplane.hosts import HostRow, HostStore
from controlplane.sql import (
    HOST_CHANNEL,
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    bump_revisions,
    check_epoch,
    create_pool,
    decode_each,
    record_event,
)
from keel.model import Desired, Kind, Phase, Workload, WorkloadSpec, converged

__all__ = [
    "HOST_CHANNEL",
    "WORKLOAD_CHANNEL",
    "HostRow",
    "InstanceRow",
    "PlanResult",
    "Report",
    "Store",
    "StuckState",
    "WorkloadRow",
    "create_pool",
]


@dataclass(frozen=True)
class StuckState:
    reason: str
    since: datetime
    message: str


@dataclass(frozen=True)
class WorkloadRow:
    workload: Workload
    generation: int
    deleting: bool
    created_at: datetime
    updated_at: datetime
    stuck: StuckState | None = None
    unconverged_since: datetime | None = None
    trace_context: str = ""


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

    @property
    def converged(self) -> bool:
        return converged(self.desired, self.phase, self.ready)


@dataclass(frozen=True)
class PlanResult:
    created: list[str]
    removed: int  # instances newly tombstoned


@dataclass(frozen=True)
class Report:
    """One observed instance status from an agent (already converted from protobuf)."""

    host: str
    instance_id: str
    phase: Phase
    pid: int
    restart_count: int
    last_exit: str
    reason: str
    message: str
    ports: dict[str, int]
    ready: bool
    removed: bool
    started_at: datetime | None
    agent_stuck: bool = False  # the agent's own verdict (CRASH_LOOP, START_FAILED, ...)


def _stuck(r: asyncpg.Record) -> StuckState | None:
    if not r["stuck_reason"]:
        return None
    return StuckState(r["stuck_reason"], r["stuck_since"], r["stuck_message"])


def _workload(r: asyncpg.Record) -> WorkloadRow:
    return WorkloadRow(
        workload=Workload(
            name=r["name"],
            kind=Kind(r["kind"]),
            replicas=r["replicas"],
            max_unavailable=r["max_unavailable"],
            max_surge=r["max_surge"],
            selector=dict(r["selector"]),
            deadline_ms=r["deadline_ms"],
            spec=WorkloadSpec.from_json(r["spec"]),
        ),
        generation=r["generation"],
        deleting=r["deleting"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        stuck=_stuck(r),
        unconverged_since=r["unconverged_since"],
        trace_context=r["trace_context"],
    )


def _instance(r: asyncpg.Record) -> InstanceRow:
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
        stuck=_stuck(r),
        agent_stuck=r["agent_stuck"],
        unconverged_since=r["unconverged_since"],
        converged_at=r["converged_at"],
        trace_context=r["trace_context"],
    )


# Fields an apply changes in place (no new generation); kind is checked apart.
_IN_PLACE_FIELDS = ("kind", "replicas", "max_unavailable", "max_surge", "selector", "deadline_ms")


class Store(HostStore):
    """Postgres-backed desired and observed state. One instance per process, sharing a pool."""

    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self.pool = Database.of(pool)  # asyncpg's errors become Keel's there

    async def now(self) -> datetime:
        """Database time: the one clock every replica and report is judged by."""
        value: datetime = await self.pool.fetchval("SELECT now()")
        return value

    # -- workloads ----------------------------------------------------------------------

    async def apply_workload(
        self, w: Workload, *, actor: str = "", trace_context: str = ""
    ) -> tuple[WorkloadRow, str]:
        """Creates or updates a workload. Returns it and `created`, `configured` or `unchanged`.

        The generation moves only when the spec (what runs) changes; replicas, budgets,
        selector and deadline are updated in place, like a Deployment's pod template.
        """
        spec = w.spec.to_json()
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", w.name)
            if old is None:
                row = await conn.fetchrow(
                    """INSERT INTO workload (name, kind, replicas, max_unavailable, max_surge,
                                             selector, deadline_ms, spec, trace_context)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *""",
                    w.name,
                    w.kind.value,
                    w.replicas,
                    w.max_unavailable,
                    w.max_surge,
                    w.selector,
                    w.deadline_ms,
                    spec,
                    trace_context,
                )
                result = "created"
            else:
                if old["deleting"]:
                    raise FailedPrecondition(
                        f'workload "{w.name}" is being deleted; wait until `keelctl get '
                        f"workloads` no longer lists it, then apply again"
                    )
                new_values = {
                    "kind": w.kind.value,
                    "replicas": w.replicas,
                    "max_unavailable": w.max_unavailable,
                    "max_surge": w.max_surge,
                    "selector": w.selector,
                    "deadline_ms": w.deadline_ms,
                }
                if old["kind"] != w.kind.value:
                    raise FailedPrecondition(
                        f'workload "{w.name}" is a {old["kind"]}; kind cannot change — delete it '
                        f"and apply it again as a {w.kind.value}"
                    )
                spec_changed = old["spec"] != spec
                if not spec_changed and all(old[k] == new_values[k] for k in _IN_PLACE_FIELDS):
                    return _workload(old), "unchanged"
                row = await conn.fetchrow(
                    """UPDATE workload SET replicas = $2, max_unavailable = $3, max_surge = $4,
                              selector = $5, deadline_ms = $6, spec = $7,
                              generation = generation + $8::int, updated_at = now(),
                              trace_context = $9
                       WHERE name = $1 RETURNING *""",
                    w.name,
                    w.replicas,
                    w.max_unavailable,
                    w.max_surge,
                    w.selector,
                    w.deadline_ms,
                    spec,
                    1 if spec_changed else 0,
                    trace_context,
                )
                result = "configured"
            assert row is not None
            await record_event(
                conn,
                f"workload/{w.name}",
                "WorkloadApplied",
                f"{result}, generation {row['generation']}, replicas {w.replicas}",
                actor=actor,
            )
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, w.name)
            return _workload(row), result

    async def get_workload(self, name: str) -> WorkloadRow:
        row = await self.pool.fetchrow("SELECT * FROM workload WHERE name = $1", name)
        if row is None:
            raise NotFound(f'workload "{name}" not found')
        return _workload(row)

    async def list_workloads(self) -> list[WorkloadRow]:
        rows = await self.pool.fetch("SELECT * FROM workload ORDER BY name")
        return decode_each(rows, _workload, what="workload")

    async def workload_names(self) -> list[str]:
        return [r["name"] for r in await self.pool.fetch("SELECT name FROM workload")]

    async def delete_workload(self, name: str, *, actor: str = "") -> WorkloadRow:
        """Marks the workload deleting; the controller removes its instances, then the row."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE workload SET deleting = true, updated_at = now() WHERE name = $1 "
                "RETURNING *",
                name,
            )
            if row is None:
                raise NotFound(f'workload "{name}" not found')
            await record_event(conn, f"workload/{name}", "WorkloadDeleted", "deleting", actor=actor)
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, name)
            return _workload(row)

    # -- instances ----------------------------------------------------------------------

    async def get_instance(self, instance_id: str) -> InstanceRow:
        row = await self.pool.fetchrow("SELECT * FROM instance WHERE id = $1", instance_id)
        if row is None:
            raise NotFound(f'instance "{instance_id}" not found')
        return _instance(row)

    async def list_instances(
        self, *, workload: str | None = None, host: str | None = None
    ) -> list[InstanceRow]:
        rows = await self.pool.fetch(
            """SELECT * FROM instance
               WHERE ($1::text IS NULL OR workload = $1) AND ($2::text IS NULL OR host = $2)
               ORDER BY workload, generation, id""",
            workload,
            host,
        )
        return decode_each(rows, _instance, what="instance")

    async def host_assignments(
        self, host: str, *, since: int | None
    ) -> tuple[int, list[InstanceRow]]:
        """The host's revision and its instances changed after `since` (None: all of them).

        Both come from one snapshot, so the revision returned covers exactly the rows returned.
        """
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            revision = await conn.fetchval("SELECT revision FROM host WHERE name = $1", host)
            if revision is None:
                return 0, []
            rows = await conn.fetch(
                "SELECT * FROM instance WHERE host = $1 AND revision > $2 ORDER BY revision, id",
                host,
                -1 if since is None else since,
            )
            return int(revision), decode_each(rows, _instance, what="instance")

    async def host_tombstones(self, host: str) -> list[InstanceRow]:
        """The host's instances waiting for the agent to confirm their removal."""
        rows = await self.pool.fetch(
            "SELECT * FROM instance WHERE host = $1 AND desired = 'REMOVED' ORDER BY id", host
        )
        return decode_each(rows, _instance, what="instance")

    async def apply_plan(
        self,
        workload: WorkloadRow,
        *,
        create_on: Sequence[str],
        remove: Sequence[str],
        epoch: int | None,
    ) -> PlanResult:
        """Writes one workload's plan in one transaction: new instances and tombstones.

        `epoch` fences a deposed leader: the transaction fails with NotLeader if another
        replica has taken over since. Each desired change is stamped with clock_timestamp()
        (database time, as close to the commit as a statement gets) and the trace context of
        the operator request behind the workload's latest change.
        """
        w = workload.workload
        spec = w.spec.to_json()
        created: list[str] = []
        removed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            # The plan was made from this generation: if an apply or delete committed since,
            # write nothing (its NOTIFY has queued the workload for a fresh plan).
            current = await conn.fetchrow(
                "SELECT generation, deleting FROM workload WHERE name = $1 FOR SHARE", w.name
            )
            if current is None or (current["generation"], current["deleting"]) != (
                workload.generation,
                workload.deleting,
            ):
                return PlanResult(created=[], removed=0)
            hosts = sorted(set(create_on) | set(await self._hosts_of(conn, remove)))
            revisions = await bump_revisions(conn, hosts)
            if create_on:
                ids = [f"{w.name}-{workload.generation}-{secrets.token_hex(3)}" for _ in create_on]
                await conn.execute(
                    """INSERT INTO instance (id, workload, generation, host, spec, cpu_millis,
                                             memory_mib, desired, revision, trace_context,
                                             desired_changed_at, unconverged_since)
                       SELECT u.id, $1, $2, u.host, $3, $4, $5, 'RUNNING', u.revision, $9,
                              clock_timestamp(), clock_timestamp()
                       FROM unnest($6::text[], $7::text[], $8::bigint[])
                            AS u(id, host, revision)""",
                    w.name,
                    workload.generation,
                    spec,
                    w.spec.resources.cpu_millis,
                    w.spec.resources.memory_mib,
                    ids,
                    list(create_on),
                    [revisions[h] for h in create_on],
                    workload.trace_context,
                )
                created = ids
            if remove:
                status = await conn.execute(
                    """UPDATE instance i SET desired = 'REMOVED', revision = u.revision,
                              desired_changed_at = clock_timestamp(), converged_at = NULL,
                              unconverged_since = clock_timestamp(), slow_counted = false,
                              trace_context = $4
                       FROM unnest($2::text[], $3::bigint[]) AS u(host, revision)
                       WHERE i.id = ANY($1::text[]) AND i.host = u.host
                         AND i.desired <> 'REMOVED'""",
                    list(remove),
                    list(revisions),
                    list(revisions.values()),
                    workload.trace_context,
                )
                removed = int(status.split()[-1])
            parts = []
            if created:
                parts.append(f"placed {len(created)} on {', '.join(sorted(set(create_on)))}")
            if remove:
                parts.append(f"removing {', '.join(sorted(remove))}")
            if parts:
                await record_event(
                    conn, f"workload/{w.name}", "WorkloadReconciled", "; ".join(parts)
                )
            for h in hosts:
                await conn.execute("SELECT pg_notify($1, $2)", HOST_CHANNEL, h)
        return PlanResult(created=created, removed=removed)

    async def finish_deleted_workload(self, name: str, *, epoch: int | None) -> bool:
        """Drops a deleting workload whose instances are all gone. True when it did."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            status = await conn.execute(
                """DELETE FROM workload w WHERE name = $1 AND deleting
                   AND NOT EXISTS (SELECT 1 FROM instance WHERE workload = w.name)""",
                name,
            )
            if status.endswith(" 1"):
                await record_event(
                    conn, f"workload/{name}", "WorkloadGone", "every instance removed"
                )
                return True
            return False

    # -- leadership ---------------------------------------------------------------------

    async def take_leadership(self, conn: Conn, holder: str) -> int:
        row = await conn.fetchrow(
            "UPDATE leader SET epoch = epoch + 1, holder = $1, acquired_at = now() RETURNING epoch",
            holder,
        )
        assert row is not None
        return int(row["epoch"])

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    async def _hosts_of(conn: Conn, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        rows = await conn.fetch(
            "SELECT DISTINCT host FROM instance WHERE id = ANY($1::text[])", list(ids)
        )
        return [r["host"] for r in rows]
