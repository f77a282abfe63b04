"""Hosts in Postgres: registration, heartbeats and liveness transitions.

Neighbours: `sync` registers hosts; `heartbeats.HeartbeatWriter` writes their heartbeats here in
batches; `liveness` decides which silent hosts change state, from the leader's cache (here: write
its decisions), and which are fenced (`fencing` writes that); `store.Store` inherits these
queries, so callers hold one store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane.errors import NotFound
from controlplane.liveness import Transition
from controlplane.sql import (
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    check_epoch,
    record_event,
)
from keel.model import Desired, HostState, Phase, Resources, holds_resources


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat as written: the host is `state` (READY unless its agent has not acted on
    the host's revision yet) since `state_since`, heartbeated at `last_heartbeat` (database
    time); `was` is its state before."""

    host: str
    was: HostState
    state_since: datetime
    last_heartbeat: datetime
    state: HostState = HostState.READY


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

        A new host is READY at once (it has nothing to catch up on). A known host keeps its
        state: one that is not READY becomes READY only by a heartbeat saying its agent has
        acted on the host's current revision (`write_heartbeats`), so an agent back from a
        partition stops its fenced instances before its host is READY again.

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
                       connected = true, last_heartbeat = now(), stream_id = EXCLUDED.stream_id
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

    async def write_heartbeats(self, beats: Sequence[tuple[str, str, int]]) -> list[Beat]:
        """Records a batch of heartbeats, (host, stream id, revision acted on) each, in one
        statement: each host whose current registration is that stream (`register_host`) and
        still connected. A heartbeat from a stream replaced since, or written after its stream
        ended (`disconnect_host`), changes nothing. A host that was not READY becomes READY
        again, with its HostReady event and the `*` notification, in the same statement, if
        the heartbeat's revision is the host's: its agent has stopped what the host's desired
        set no longer wants running (fenced instances among them); an agent still behind only
        refreshes the heartbeat. Returns the hosts written, as they are now."""
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
                   SELECT o.name, o.state, o.state = 'READY' OR u.acted >= o.revision AS ready
                   FROM host o
                   JOIN unnest($1::text[], $2::text[], $4::bigint[]) AS u(name, stream_id, acted)
                     ON o.name = u.name AND o.stream_id = u.stream_id
                   WHERE o.connected
                   ORDER BY o.name FOR UPDATE OF o),
               beat AS (
                   UPDATE host h SET last_heartbeat = now(),
                          state_since = CASE WHEN h.state = 'READY' OR NOT before.ready
                                             THEN h.state_since ELSE now() END,
                          state = CASE WHEN before.ready THEN 'READY' ELSE h.state END
                   FROM before WHERE h.name = before.name
                   RETURNING h.name, before.state AS was, h.state, h.state_since,
                             h.last_heartbeat),
               back AS (
                   INSERT INTO event (object, kind, actor, message)
                   SELECT 'host/' || name, 'HostReady', '', 'heartbeat after ' || was
                   FROM beat WHERE was <> 'READY' AND state = 'READY' ORDER BY name
                   RETURNING id)
               SELECT beat.*, (SELECT pg_notify($3, '*') FROM back LIMIT 1) IS NULL AS quiet
               FROM beat""",
            [name for name, _, _ in beats],
            [stream for _, stream, _ in beats],
            WORKLOAD_CHANNEL,
            [acted for _, _, acted in beats],
        )
        return [
            Beat(
                r["name"],
                # Nearly always READY: skip EnumType.__call__ for it.
                HostState.READY if r["was"] == "READY" else HostState(r["was"]),
                r["state_since"],
                r["last_heartbeat"],
                HostState.READY if r["state"] == "READY" else HostState(r["state"]),
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


async def hosts_on(conn: Conn, names: Sequence[str]) -> list[HostRow]:
    """The named hosts that exist, in name order, as `conn`'s transaction sees them."""
    rows = await conn.fetch(
        "SELECT * FROM host WHERE name = ANY($1::text[]) ORDER BY name", list(names)
    )
    usage = await conn.fetch(USAGE_OF, list(names))
    return _hosts(rows, usage)
