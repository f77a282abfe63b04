"""The store: every read and write of Keel's Postgres state, as named, parameterized queries.

Neighbours: `fleet` (operator RPCs) and `sync` (agent streams) call it; `controllers` plan
with its snapshots and write back through it. Ordering rule: every transaction that changes a
host's instances bumps that host's `revision` in the same transaction (the row lock orders
them), so a watcher asking "what changed on host H since revision N" never skips a slow
transaction's change. Each desired change ends with NOTIFY, delivered at commit.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from controlplane.errors import FailedPrecondition, NotFound, NotLeader
from keel.model import Desired, HostState, Kind, Resources, Workload, WorkloadSpec

HOST_CHANNEL = "keel_host"
WORKLOAD_CHANNEL = "keel_workload"

# A connection, whether held directly or borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )
    assert pool is not None
    return pool


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
class HostRow:
    name: str
    labels: dict[str, str]
    capacity: Resources
    allocated: Resources
    schedulable: bool
    cordon_reason: str
    state: HostState
    state_since: datetime
    last_heartbeat: datetime | None
    connected: bool
    agent_version: str
    revision: int
    instances: int


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
    phase: str
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
        if self.desired is Desired.RUNNING:
            return self.phase == "RUNNING" and self.ready
        if self.desired is Desired.STOPPED:
            return self.phase == "STOPPED"
        return False  # a tombstone converges by going away


@dataclass(frozen=True)
class PlanResult:
    created: list[str]
    removed: int  # instances newly tombstoned


@dataclass(frozen=True)
class Report:
    """One observed instance status from an agent (already converted from protobuf)."""

    host: str
    instance_id: str
    phase: str
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


def _host(r: asyncpg.Record) -> HostRow:
    return HostRow(
        name=r["name"],
        labels=dict(r["labels"]),
        capacity=Resources(r["cpu_millis"], r["memory_mib"]),
        allocated=Resources(r["alloc_cpu"], r["alloc_memory"]),
        schedulable=r["schedulable"],
        cordon_reason=r["cordon_reason"],
        state=HostState(r["state"]),
        state_since=r["state_since"],
        last_heartbeat=r["last_heartbeat"],
        connected=r["connected"],
        agent_version=r["agent_version"],
        revision=r["revision"],
        instances=r["n_instances"],
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
        phase=r["phase"],
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


# A host's resources are held by every instance that is not a tombstone already stopped
# (the same rule as controlplane.view.InstanceView.holds_resources, which the scheduler uses).
_HOST_SELECT = """
SELECT h.*,
       coalesce(sum(i.cpu_millis) FILTER (WHERE i.id IS NOT NULL), 0)::bigint AS alloc_cpu,
       coalesce(sum(i.memory_mib) FILTER (WHERE i.id IS NOT NULL), 0)::bigint AS alloc_memory,
       count(i.id)::int AS n_instances
FROM host h
LEFT JOIN instance i
       ON i.host = h.name AND NOT (i.desired = 'REMOVED' AND i.phase = 'STOPPED')
"""

_SPEC_FIELDS = ("kind", "replicas", "max_unavailable", "max_surge", "selector", "deadline_ms")


class Store:
    """Postgres-backed desired and observed state. One instance per process, sharing a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

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
                if not spec_changed and all(old[k] == new_values[k] for k in _SPEC_FIELDS):
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
            await self._event(
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
        return [_workload(r) for r in rows]

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
            await self._event(conn, f"workload/{name}", "WorkloadDeleted", "deleting", actor=actor)
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, name)
            return _workload(row)

    # -- hosts --------------------------------------------------------------------------

    async def register_host(
        self,
        name: str,
        *,
        labels: dict[str, str],
        capacity: Resources,
        agent_version: str,
    ) -> int:
        """Records an agent's Hello (a heartbeat too); returns the host's current revision."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO host AS h (name, labels, cpu_millis, memory_mib, agent_version,
                                          connected, last_heartbeat, state, state_since)
                   VALUES ($1, $2, $3, $4, $5, true, now(), 'READY', now())
                   ON CONFLICT (name) DO UPDATE SET
                       labels = EXCLUDED.labels, cpu_millis = EXCLUDED.cpu_millis,
                       memory_mib = EXCLUDED.memory_mib, agent_version = EXCLUDED.agent_version,
                       connected = true, last_heartbeat = now(),
                       state_since = CASE WHEN h.state = 'READY' THEN h.state_since ELSE now() END,
                       state = 'READY'
                   RETURNING revision, (xmax = 0) AS inserted""",
                name,
                labels,
                capacity.cpu_millis,
                capacity.memory_mib,
                agent_version,
            )
            assert row is not None
            what = "registered" if row["inserted"] else "connected"
            await self._event(conn, f"host/{name}", "HostConnected", f"agent {what}")
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, "*")
            return int(row["revision"])

    async def heartbeat(self, name: str) -> bool:
        """Records a heartbeat. Returns True when it made the host READY again."""
        row = await self.pool.fetchrow(
            """UPDATE host AS h SET last_heartbeat = now(), connected = true,
                      state_since = CASE WHEN h.state = 'READY' THEN h.state_since ELSE now() END,
                      state = 'READY'
               FROM (SELECT state FROM host WHERE name = $1 FOR UPDATE) AS before
               WHERE h.name = $1 RETURNING before.state AS was""",
            name,
        )
        if row is None or row["was"] == "READY":
            return False
        async with self.pool.acquire() as conn, conn.transaction():
            await self._event(conn, f"host/{name}", "HostReady", f"heartbeat after {row['was']}")
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, "*")
        return True

    async def disconnect_host(self, name: str) -> None:
        await self.pool.execute("UPDATE host SET connected = false WHERE name = $1", name)

    async def judge_liveness(
        self, *, grace_s: float, unknown_after_s: float
    ) -> list[tuple[str, str]]:
        """Moves silent hosts READY -> NOT_READY -> UNKNOWN by database time.

        Returns (host, new state) for every host that changed, after recording events.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                # state_since keeps when the host stopped being READY: UNKNOWN does not move
                # it, so fencing and HOST_UNREACHABLE count from the first missed deadline.
                """UPDATE host SET
                       state = CASE WHEN state = 'READY' THEN 'NOT_READY' ELSE 'UNKNOWN' END,
                       state_since = CASE WHEN state = 'READY' THEN now() ELSE state_since END
                   WHERE (state = 'READY'
                          AND last_heartbeat < now() - make_interval(secs => $1))
                      OR (state = 'NOT_READY'
                          AND state_since < now() - make_interval(secs => $2))
                   RETURNING name, state, last_heartbeat""",
                grace_s,
                unknown_after_s,
            )
            for r in rows:
                last = r["last_heartbeat"]
                await self._event(
                    conn,
                    f"host/{r['name']}",
                    f"Host{r['state'].title().replace('_', '')}",
                    f"no heartbeat since {last.isoformat() if last else 'ever'}",
                )
            if rows:
                await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, "*")
            return [(r["name"], r["state"]) for r in rows]

    async def hosts_to_fence(self, *, after_s: float) -> list[str]:
        """Hosts not READY for longer than `after_s` (their service instances get replaced)."""
        rows = await self.pool.fetch(
            """SELECT name FROM host WHERE state <> 'READY'
               AND state_since < now() - make_interval(secs => $1)""",
            after_s,
        )
        return [r["name"] for r in rows]

    async def get_host(self, name: str) -> HostRow:
        row = await self.pool.fetchrow(_HOST_SELECT + " WHERE h.name = $1 GROUP BY h.name", name)
        if row is None:
            raise NotFound(f'host "{name}" not found')
        return _host(row)

    async def list_hosts(self) -> list[HostRow]:
        rows = await self.pool.fetch(_HOST_SELECT + " GROUP BY h.name ORDER BY h.name")
        return [_host(r) for r in rows]

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
        return [_instance(r) for r in rows]

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
            return int(revision), [_instance(r) for r in rows]

    async def host_tombstones(self, host: str) -> list[InstanceRow]:
        """The host's instances waiting for the agent to confirm their removal."""
        rows = await self.pool.fetch(
            "SELECT * FROM instance WHERE host = $1 AND desired = 'REMOVED' ORDER BY id", host
        )
        return [_instance(r) for r in rows]

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
            await self._check_epoch(conn, epoch)
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
            revisions = await self._bump(conn, hosts)
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
                await self._event(
                    conn, f"workload/{w.name}", "WorkloadReconciled", "; ".join(parts)
                )
            for h in hosts:
                await conn.execute("SELECT pg_notify($1, $2)", HOST_CHANNEL, h)
        return PlanResult(created=created, removed=removed)

    async def fence_host(self, host: str, kinds: Iterable[Kind], *, epoch: int | None) -> int:
        """Tombstones the given kinds' instances on a lost host so they are replaced elsewhere."""
        kind_values = [k.value for k in kinds]
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_epoch(conn, epoch)
            # The host lock first: a plan writing to this host (which takes it too) cannot
            # tombstone these rows between the SELECT and the UPDATE.
            await conn.execute("SELECT 1 FROM host WHERE name = $1 FOR UPDATE", host)
            ids = await conn.fetch(
                """SELECT i.id FROM instance i JOIN workload w ON w.name = i.workload
                   WHERE i.host = $1 AND i.desired <> 'REMOVED' AND w.kind = ANY($2::text[])""",
                host,
                kind_values,
            )
            if not ids:
                return 0
            revision = (await self._bump(conn, [host]))[host]
            await conn.execute(
                """UPDATE instance SET desired = 'REMOVED', revision = $2, ready = false,
                          desired_changed_at = clock_timestamp(), converged_at = NULL,
                          unconverged_since = clock_timestamp(), slow_counted = false
                   WHERE id = ANY($1::text[]) AND desired <> 'REMOVED'""",
                [r["id"] for r in ids],
                revision,
            )
            await self._event(
                conn,
                f"host/{host}",
                "InstancesFenced",
                f"{len(ids)} instance(s) replaced elsewhere after the host stayed unreachable",
            )
            await conn.execute("SELECT pg_notify($1, $2)", HOST_CHANNEL, host)
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, "*")
            return len(ids)

    async def finish_deleted_workload(self, name: str, *, epoch: int | None) -> bool:
        """Drops a deleting workload whose instances are all gone. True when it did."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_epoch(conn, epoch)
            status = await conn.execute(
                """DELETE FROM workload w WHERE name = $1 AND deleting
                   AND NOT EXISTS (SELECT 1 FROM instance WHERE workload = w.name)""",
                name,
            )
            if status.endswith(" 1"):
                await self._event(
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
    async def _check_epoch(conn: Conn, epoch: int | None) -> None:
        if epoch is None:
            return
        # FOR SHARE: a new leader's epoch bump waits for this transaction, and this one
        # sees the bump if it came first.
        current = await conn.fetchval("SELECT epoch FROM leader FOR SHARE")
        if current != epoch:
            raise NotLeader(f"leadership moved to epoch {current} (this replica held {epoch})")

    @staticmethod
    async def _hosts_of(conn: Conn, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        rows = await conn.fetch(
            "SELECT DISTINCT host FROM instance WHERE id = ANY($1::text[])", list(ids)
        )
        return [r["host"] for r in rows]

    @staticmethod
    async def _bump(conn: Conn, hosts: Sequence[str]) -> dict[str, int]:
        """Bumps each host's revision (sorted, so concurrent writers lock in one order)."""
        if not hosts:
            return {}
        # Lock in name order first, so two writers touching the same hosts cannot deadlock.
        await conn.execute(
            "SELECT 1 FROM host WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE",
            sorted(hosts),
        )
        rows = await conn.fetch(
            """UPDATE host SET revision = revision + 1
               WHERE name = ANY($1::text[]) RETURNING name, revision""",
            sorted(hosts),
        )
        return {r["name"]: int(r["revision"]) for r in rows}

    @staticmethod
    async def _event(conn: Conn, obj: str, kind: str, message: str, *, actor: str = "") -> None:
        await conn.execute(
            "INSERT INTO event (object, kind, actor, message) VALUES ($1, $2, $3, $4)",
            obj,
            kind,
            actor,
            message,
        )
