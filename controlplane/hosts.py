"""Hosts in Postgres: registration, heartbeats, liveness and fencing.

Neighbours: `sync` registers hosts; `heartbeats.HeartbeatWriter` writes their heartbeats here in
batches; `liveness` decides which silent hosts change state and which are fenced, from the
leader's cache (here: write its decisions, fence); `store.Store` inherits these queries, so
callers hold one store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane.errors import NotFound
from controlplane.liveness import Transition
from controlplane.sql import (
    HOST_CHANNEL,
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    bump_revisions,
    bump_versions,
    check_epoch,
    notify,
    record_event,
    workload_payload,
)
from keel.model import Desired, HostState, Kind, Phase, Resources, holds_resources


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat as written: the host is READY since `state_since`, heartbeated at
    `last_heartbeat` (database time); `was` is its state before."""

    host: str
    was: HostState
    state_since: datetime
    last_heartbeat: datetime


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
    cordon_actor: str = ""
    cordoned_at: datetime | None = None
    drained: bool = False


def host_row(r: asyncpg.Record, usage: Sequence[asyncpg.Record]) -> HostRow:
    """A host row with what its instances hold; `usage` is the host's rows of USAGE_OF."""
    holding = [u for u in usage if holds_resources(Desired(u["desired"]), Phase(u["phase"]))]
    return HostRow(
        name=r["name"],
        labels=dict(r["labels"]),
        capacity=Resources(r["cpu_millis"], r["memory_mib"]),
        allocated=Resources(
            sum(int(u["cpu"]) for u in holding), sum(int(u["memory"]) for u in holding)
        ),
        schedulable=r["schedulable"],
        cordon_reason=r["cordon_reason"],
        state=HostState(r["state"]),
        state_since=r["state_since"],
        last_heartbeat=r["last_heartbeat"],
        connected=r["connected"],
        agent_version=r["agent_version"],
        revision=r["revision"],
        instances=sum(int(u["n"]) for u in holding),
        cordon_actor=r["cordon_actor"],
        cordoned_at=r["cordoned_at"],
        drained=r["drained"],
    )


def _hosts(rows: Sequence[asyncpg.Record], usage: Sequence[asyncpg.Record]) -> list[HostRow]:
    by_host: dict[str, list[asyncpg.Record]] = {}
    for u in usage:
        by_host.setdefault(u["host"], []).append(u)
    return [host_row(r, by_host.get(r["name"], [])) for r in rows]


# What the named hosts' instances hold, by desired state and phase: which of them count against
# a host's capacity is `keel.model.holds_resources`, applied in Python so the rule lives once.
# An operator's get or page of hosts reads it (`listing`); the leader keeps its own per-host
# usage in its cache.
USAGE_OF = """
SELECT host, desired, phase, sum(cpu_millis)::bigint AS cpu, sum(memory_mib)::bigint AS memory,
       count(*)::int AS n
FROM instance WHERE host = ANY($1::text[])
GROUP BY host, desired, phase
"""


class HostStore:
    """Host queries over the shared pool (a base of `store.Store`)."""

    pool: Database

    async def register_host(
        self,
        name: str,
        *,
        labels: dict[str, str],
        capacity: Resources,
        agent_version: str,
        stream_id: str = "",
    ) -> int:
        """Records an agent's Hello (a heartbeat too); returns the host's current revision.

        `stream_id` names the stream that said Hello: only that stream's end disconnects the
        host (`disconnect_host`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO host AS h (name, labels, cpu_millis, memory_mib, agent_version,
                                          connected, last_heartbeat, state, state_since,
                                          stream_id)
                   VALUES ($1, $2, $3, $4, $5, true, now(), 'READY', now(), $6)
                   ON CONFLICT (name) DO UPDATE SET
                       labels = EXCLUDED.labels, cpu_millis = EXCLUDED.cpu_millis,
                       memory_mib = EXCLUDED.memory_mib, agent_version = EXCLUDED.agent_version,
                       connected = true, last_heartbeat = now(), stream_id = EXCLUDED.stream_id,
                       state_since = CASE WHEN h.state = 'READY' THEN h.state_since ELSE now() END,
                       state = 'READY'
                   RETURNING revision, (xmax = 0) AS inserted""",
                name,
                labels,
                capacity.cpu_millis,
                capacity.memory_mib,
                agent_version,
                stream_id,
            )
            assert row is not None
            what = "registered" if row["inserted"] else "connected"
            await record_event(conn, f"host/{name}", "HostConnected", f"agent {what}")
            await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, "*")
            return int(row["revision"])

    async def write_heartbeats(self, beats: Sequence[tuple[str, str]]) -> list[Beat]:
        """Records a batch of heartbeats, (host, stream id) each, in one statement: each host
        whose current registration is that stream (`register_host`) and still connected. A
        heartbeat from a stream replaced since, or written after its stream ended
        (`disconnect_host`), changes nothing. A host that was not READY becomes READY again,
        with its HostReady event and the `*` notification, in the same statement. Returns
        the hosts written, as they are now."""
        if not beats:
            return []
        # One statement, so one round trip and no BEGIN/COMMIT (a batch goes out every few
        # milliseconds at thousands of agents). The rows are locked first, in name order (as
        # `sql.bump_revisions` takes them), and read as they are once locked: `was` is the
        # state this write replaces. A host back to READY gets its event (the columns
        # `sql.record_event` writes) and the `*` notification, once per batch; a data-modifying
        # WITH runs whether or not it is read, the notification only if a host came back.
        rows = await self.pool.fetch(
            """WITH before AS (
                   SELECT o.name, o.state FROM host o
                   JOIN unnest($1::text[], $2::text[]) AS u(name, stream_id)
                     ON o.name = u.name AND o.stream_id = u.stream_id
                   WHERE o.connected
                   ORDER BY o.name FOR UPDATE OF o),
               beat AS (
                   UPDATE host h SET last_heartbeat = now(),
                          state_since = CASE WHEN h.state = 'READY' THEN h.state_since
                                             ELSE now() END,
                          state = 'READY'
                   FROM before WHERE h.name = before.name
                   RETURNING h.name, before.state AS was, h.state_since, h.last_heartbeat),
               back AS (
                   INSERT INTO event (object, kind, actor, message)
                   SELECT 'host/' || name, 'HostReady', '', 'heartbeat after ' || was
                   FROM beat WHERE was <> 'READY' ORDER BY name
                   RETURNING id)
               SELECT beat.*, (SELECT pg_notify($3, '*') FROM back LIMIT 1) IS NULL AS quiet
               FROM beat""",
            [name for name, _ in beats],
            [stream for _, stream in beats],
            WORKLOAD_CHANNEL,
        )
        return [
            Beat(
                r["name"],
                # Nearly always READY: skip EnumType.__call__ for it.
                HostState.READY if r["was"] == "READY" else HostState(r["was"]),
                r["state_since"],
                r["last_heartbeat"],
            )
            for r in rows
        ]

    async def host_revisions(self, names: Sequence[str]) -> dict[str, int]:
        """The named hosts' revisions (a host not found is left out): one query for every
        stream's periodic look (`sync.AgentSync.check_streams`)."""
        if not names:
            return {}
        rows = await self.pool.fetch(
            "SELECT name, revision FROM host WHERE name = ANY($1::text[])", list(names)
        )
        return {r["name"]: int(r["revision"]) for r in rows}

    async def disconnect_host(self, name: str, *, stream_id: str = "") -> None:
        """The stream `stream_id` ended: the host is disconnected, unless a newer stream has
        registered it since."""
        await self.pool.execute(
            "UPDATE host SET connected = false WHERE name = $1 AND stream_id = $2",
            name,
            stream_id,
        )

    async def record_liveness(
        self, transitions: Sequence[Transition], *, epoch: int | None
    ) -> list[Transition]:
        """Writes `liveness.judge`'s transitions, each only if the host is still as judged
        (same state, no heartbeat since): a heartbeat racing the pass wins. Records an event
        per host that changed; returns the transitions written."""
        if not transitions:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            rows = await conn.fetch(
                """UPDATE host h SET state = u.state, state_since = u.since
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                               $5::timestamptz[]) AS u(name, was, state, since, heartbeat)
                   WHERE h.name = u.name AND h.state = u.was
                     AND h.last_heartbeat IS NOT DISTINCT FROM u.heartbeat
                   RETURNING h.name""",
                [t.host for t in transitions],
                [t.was.value for t in transitions],
                [t.to.value for t in transitions],
                [t.since for t in transitions],
                [t.last_heartbeat for t in transitions],
            )
            written = {r["name"] for r in rows}
            done = [t for t in transitions if t.host in written]
            for t in done:
                last = t.last_heartbeat
                await record_event(
                    conn,
                    f"host/{t.host}",
                    f"Host{t.to.value.title().replace('_', '')}",
                    f"no heartbeat since {last.isoformat() if last else 'ever'}",
                )
            if done:
                await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, "*")
            return done

    async def get_host(self, name: str) -> HostRow:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await conn.fetchrow("SELECT * FROM host WHERE name = $1", name)
            usage = await conn.fetch(USAGE_OF, [name])
        if row is None:
            raise NotFound(f'host "{name}" not found')
        return host_row(row, usage)

    async def get_hosts(self, names: Sequence[str]) -> list[HostRow]:
        """The named hosts that exist, in name order, from one snapshot."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            return await hosts_on(conn, names)

    async def fence_host(
        self,
        host: str,
        kinds: Iterable[Kind],
        *,
        epoch: int | None,
        down_since: datetime | None = None,
    ) -> int:
        """Tombstones the given kinds' instances on a lost host so they are replaced elsewhere.

        Only while the host is not READY (and, given `down_since`, has not been READY since
        then, as the decision judged): a heartbeat that came back after the decision was made,
        seen or not by whoever decided, wins. The fencing decision is when the replacements
        became desired: the tombstones and their workloads' `desired_changed_at` get its time,
        so the replacements the next plans place carry it (their convergence clock starts
        here, not at placement). Each workload fenced takes a new version.
        """
        kind_values = [k.value for k in kinds]
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            # Lock order, as plans take them (`instance_store.apply_plan`): the workloads (in
            # name order), then the host. A lost host gets no new placements, so the workloads
            # found here before the locks are all the ones that can have instances to fence.
            await conn.execute(
                """SELECT 1 FROM workload WHERE name IN (
                       SELECT i.workload FROM instance i JOIN workload w ON w.name = i.workload
                       WHERE i.host = $1 AND i.desired <> 'REMOVED'
                         AND w.kind = ANY($2::text[]))
                   ORDER BY name FOR UPDATE""",
                host,
                kind_values,
            )
            # Then the host: a plan writing to this host (which takes it too) cannot tombstone
            # these rows between the SELECT and the UPDATE, nor a heartbeat make it READY.
            lost = await conn.fetchval(
                """SELECT state <> 'READY' AND ($2::timestamptz IS NULL OR state_since = $2)
                   FROM host WHERE name = $1 FOR UPDATE""",
                host,
                down_since,
            )
            if not lost:
                return 0
            ids = await conn.fetch(
                """SELECT i.id, i.workload FROM instance i JOIN workload w ON w.name = i.workload
                   WHERE i.host = $1 AND i.desired <> 'REMOVED' AND w.kind = ANY($2::text[])""",
                host,
                kind_values,
            )
            if not ids:
                return 0
            revision = (await bump_revisions(conn, [host]))[host]
            decided_at = await conn.fetchval("SELECT clock_timestamp()")
            await conn.execute(
                """UPDATE instance SET desired = 'REMOVED', revision = $2, ready = false,
                          desired_changed_at = $3, converged_at = NULL,
                          unconverged_since = $3, slow_counted = false
                   WHERE id = ANY($1::text[]) AND desired <> 'REMOVED'""",
                [r["id"] for r in ids],
                revision,
                decided_at,
            )
            await conn.execute(
                """UPDATE workload SET desired_changed_at = CASE WHEN desired_pending
                                                         THEN desired_changed_at ELSE $2 END,
                                      desired_pending = true
                   WHERE name = ANY($1::text[])""",
                sorted({r["workload"] for r in ids}),
                decided_at,
            )
            versions = await bump_versions(conn, sorted({r["workload"] for r in ids}), desired=True)
            await record_event(
                conn,
                f"host/{host}",
                "InstancesFenced",
                f"{len(ids)} instance(s) replaced elsewhere after the host stayed unreachable",
            )
            await conn.execute("SELECT pg_notify($1, $2)", HOST_CHANNEL, host)
            # By name: each replacement is a fresh change for its workload, not a resync.
            await notify(
                conn, WORKLOAD_CHANNEL, [workload_payload(v.workload, v.version) for v in versions]
            )
            return len(ids)


async def hosts_on(conn: Conn, names: Sequence[str]) -> list[HostRow]:
    """The named hosts that exist, in name order, as `conn`'s transaction sees them."""
    rows = await conn.fetch(
        "SELECT * FROM host WHERE name = ANY($1::text[]) ORDER BY name", list(names)
    )
    usage = await conn.fetch(USAGE_OF, list(names))
    return _hosts(rows, usage)
