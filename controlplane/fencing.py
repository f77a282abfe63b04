"""Fencing a lost host in Postgres: its service instances tombstoned for the workload controller
to replace within their budget, and the ones presumed stopped by their agent; the mass-failure
brake's events.

Neighbours: `liveness` decides (pure) which hosts to fence, which instances are past their
self-fencing time and when the brake holds; this writes those decisions, deciding nothing;
`disruption` counts what is written (a fenced instance may still run until it is STOPPED);
`store.Store` inherits these queries, beside the host queries of `hosts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

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
from keel.model import Kind


class FencingStore:
    """Fencing queries over the shared pool (a base of `store.Store`)."""

    pool: Database

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
