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
            rows = await conn.fetch(
                "SELECT * FROM host WHERE name = ANY($1::text[]) ORDER BY name", list(names)
            )
            usage = await conn.fetch(USAGE_OF, list(names))
        return _hosts(rows, usage)

    async def fence_host(
        self,
        host: str,
        kinds: Iterable[Kind],
        *,
        epoch: int | None,
        down_since: datetime | None = None,
        last_heartbeat: datetime | None = None,
        self_fenced: Sequence[str] = (),
    ) -> int:
        """Tombstones the given kinds' instances on a lost host, for the workload controller to
        replace within their budget (`disruption`); marks `self_fenced` as stopped by their
        agent (`liveness.self_fence_due`). Returns the instances newly tombstoned.

        Only while the host is not READY (and, given `down_since`, has not been READY since
        then, as the decision judged): a heartbeat that came back after the decision was made,
        seen or not by whoever decided, wins. The marks also need the host's last heartbeat to
        be `last_heartbeat` still (the agent's clock for stop_after starts over from a later
        one). The fencing decision is when the replacements became desired: the tombstones and
        their workloads' `desired_changed_at` get its time, so the replacements the next plans
        place carry it (their convergence clock starts here, not at placement). Each workload
        fenced takes a new version.
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
                       WHERE i.host = $1 AND (
                           (i.desired <> 'REMOVED' AND w.kind = ANY($2::text[]))
                           OR i.id = ANY($3::text[])))
                   ORDER BY name FOR UPDATE""",
                host,
                kind_values,
                list(self_fenced),
            )
            # Then the host: a plan writing to this host (which takes it too) cannot tombstone
            # these rows between the SELECT and the UPDATE, nor a heartbeat make it READY.
            found = await conn.fetchrow(
                """SELECT state <> 'READY' AND ($2::timestamptz IS NULL OR state_since = $2)
                          AS lost,
                          last_heartbeat IS NOT DISTINCT FROM $3::timestamptz AS unheard,
                          to_char(clock_timestamp() - state_since, 'FMHH24"h"MI"m"SS"s"') AS down
                   FROM host WHERE name = $1 FOR UPDATE""",
                host,
                down_since,
                last_heartbeat,
            )
            if found is None or not found["lost"]:
                return 0
            ids = await conn.fetch(
                """SELECT i.id, i.workload FROM instance i JOIN workload w ON w.name = i.workload
                   WHERE i.host = $1 AND i.desired <> 'REMOVED' AND w.kind = ANY($2::text[])""",
                host,
                kind_values,
            )
            if not ids and not (self_fenced and found["unheard"]):
                return 0
            if ids:
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
            marked = []
            if self_fenced and found["unheard"]:
                # Its agent has stopped it by now (`liveness.self_fence_due`): STOPPED as the
                # control plane presumes it, with the reason that says so, until the agent's
                # own report replaces it. Stopped, it no longer counts against max_surge.
                marked = await conn.fetch(
                    """UPDATE instance SET phase = 'STOPPED', ready = false,
                              reason = 'SELF_FENCED', message = $3
                       WHERE id = ANY($1::text[]) AND host = $2 AND desired = 'REMOVED'
                         AND phase <> 'STOPPED'
                       RETURNING id, workload""",
                    list(self_fenced),
                    host,
                    "presumed stopped by its agent: the host has been silent past the "
                    "workload's on_disconnect.stop_after and stop grace",
                )
            if not ids and not marked:
                return 0
            workloads = sorted({r["workload"] for r in ids} | {r["workload"] for r in marked})
            versions = await bump_versions(conn, workloads, desired=bool(ids))
            await record_event(conn, f"host/{host}", *_fence_event(len(ids), len(marked), found))
            if ids:
                await conn.execute("SELECT pg_notify($1, $2)", HOST_CHANNEL, host)
            # By name: each replacement is a fresh change for its workload, not a resync.
            await notify(
                conn, WORKLOAD_CHANNEL, [workload_payload(v.workload, v.version) for v in versions]
            )
            return len(ids)

    async def record_brake(self, engaged: bool, message: str, *, epoch: int | None) -> None:
        """The mass-failure brake engaged (`LivenessPaused`) or released (`LivenessResumed`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            kind = "LivenessPaused" if engaged else "LivenessResumed"
            await record_event(conn, "fleet/liveness", kind, message)


def _fence_event(fenced: int, marked: int, found: asyncpg.Record) -> tuple[str, str]:
    """The event of a fence: what was tombstoned, and what is now counted as stopped. It never
    says the instances were replaced: the workload controller places the replacements later,
    as far as each workload's max_surge allows."""
    stopped = (
        f"{marked} instance(s) past on_disconnect.stop_after are counted as stopped by their "
        "agent, so their replacements may start"
    )
    if not fenced:
        return "InstancesSelfFenced", stopped
    message = (
        f"{fenced} service instance(s) fenced after the host was unreachable for "
        f"{found['down']}: replacements are placed within each workload's max_surge, counting "
        "the fenced ones until their agent reports them stopped"
    )
    return "InstancesFenced", message + (f"; {stopped}" if marked else "")
