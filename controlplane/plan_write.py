"""Writing one workload's plan inside a transaction: new instances and tombstones.

`write_plan` is the body every plan write shares: the workload controller's (one workload per
transaction, `instance_store.apply_plan`) and a drain step's (every workload the step moves, in
one transaction, each in a savepoint, `instance_store.apply_plans`). It checks that the plan was
made from what is current and raises `plan_checks.Stale` when not; the caller's transaction (or
savepoint) then writes nothing of it. Neighbours: `sql` (revisions, versions, events, NOTIFY),
`plan_checks` (what "current" means), `fleet_index.Delta` (what the leader's cache applies).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.fleet_index import Delta, HostSeen
from controlplane.plan_checks import Stale, moved_hosts
from controlplane.records import INSTANCE_COLUMNS, instance_record
from controlplane.sql import (
    HOST_CHANNEL,
    Conn,
    bump_revisions,
    bump_versions,
    decode_each,
    notify,
    record_event,
)
from controlplane.workload_store import WorkloadRow
from keel.model import Kind
from keel.text import first_of

# How many instance ids an event names before it says "and N more" (a pass may remove 1,000).
_EVENT_IDS = 10


@dataclass(frozen=True)
class PlanResult:
    created: list[str]
    removed: int  # instances newly tombstoned
    # Why nothing was written: what the plan was made from changed since (None: written).
    stale: str | None = None
    stale_hosts: tuple[str, ...] = ()  # hosts whose state or cordon moved since the plan
    # The write as the cache applies it (None: nothing written).
    delta: Delta | None = None


@dataclass(frozen=True)
class PlanWrite:
    """One workload's plan as a write: what to create where, what to remove, and what it was
    made from (`instance_store.apply_plan` says what each field means)."""

    workload: WorkloadRow
    create_on: Sequence[str] = ()
    remove: Sequence[str] = ()
    version: int | None = None  # None: the version `workload` was read at
    hosts_read: Mapping[str, HostSeen] = field(default_factory=dict)
    settles: bool = False
    replaces: Sequence[str] = ()
    # (object, kind, message) recorded with `actor` if, and only if, the plan is written.
    events: Sequence[tuple[str, str, str]] = ()
    actor: str = ""


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


async def hosts_of(conn: Conn, ids: Sequence[str]) -> list[str]:
    """The hosts the given instances are on."""
    if not ids:
        return []
    rows = await conn.fetch(
        "SELECT DISTINCT host FROM instance WHERE id = ANY($1::text[])", list(ids)
    )
    return [r["host"] for r in rows]


async def write_plan(
    conn: Conn,
    plan: PlanWrite,
    *,
    drain: bool,
    bumped_before: Mapping[str, int] | None = None,
) -> tuple[PlanResult, dict[str, int]]:
    """Writes `plan` in the caller's transaction; returns the result and the hosts' new
    revisions. Raises Stale (having written nothing the caller's rollback keeps) when the
    plan was not made from what is current. `bumped_before`: how many times writes earlier in
    the same transaction bumped each host, so that a host they moved is still compared with
    what the plan saw (a drain step planned its moves together, before any was written)."""
    workload, create_on, remove, hosts_read = (
        plan.workload, plan.create_on, plan.remove, plan.hosts_read
    )  # fmt: skip
    version = workload.version if plan.version is None else plan.version
    settles, replaces = plan.settles, plan.replaces
    w = workload.workload
    spec = w.spec.to_json()
    records = []
    created: list[str] = []
    removed = 0
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
    hosts = sorted(set(create_on) | set(await hosts_of(conn, remove)))
    revisions = await bump_revisions(conn, hosts)  # and locks them
    moved = await moved_hosts(
        conn, hosts_read, bumped=Counter(bumped_before or {}) + Counter(dict.fromkeys(revisions, 1))
    )
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
        await record_event(conn, f"workload/{w.name}", "WorkloadReconciled", "; ".join(parts))
    if plan.events:
        await conn.execute(
            """INSERT INTO event (object, kind, message, actor)
               SELECT o, k, m, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(o, k, m)""",
            [e[0] for e in plan.events],
            [e[1] for e in plan.events],
            [e[2] for e in plan.events],
            plan.actor,
        )
    if settles and current["desired_pending"]:
        await conn.execute("UPDATE workload SET desired_pending = false WHERE name = $1", w.name)
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
    return PlanResult(created=created, removed=removed, delta=delta), revisions
