"""Rows as the leader's cache holds them (`controlplane.fleet_index` records): the columns read,
and the one conversion of each row.

Only what the cache holds is read: an instance's resources come from its cpu_millis and
memory_mib columns and its stop grace from one key of its spec, so no JSON spec is decoded, and
a row becomes a record once per change, not once per reconcile. The cache's reads
(`cache_store`) and the writes that change what it holds (`instance_store.apply_plan`,
`status.write_reports`, through RETURNING) share these, so the leader applies its own writes
without reading them back.
"""

from __future__ import annotations

import asyncpg

from controlplane.fleet_index import HostRecord, InstanceRecord
from controlplane.view import HostView, InstanceView, StuckState
from keel.model import Desired, HostState, Phase, Resources, WorkloadSpec

# What the cache holds of an instance, for SELECT and RETURNING alike (fixed text, never input).
INSTANCE_COLUMNS = """id, workload, generation, host, desired, cpu_millis, memory_mib, phase,
    ready, desired_changed_at, unconverged_since, observed_at IS NOT NULL AS observed, reason,
    message, agent_stuck, (spec ->> 'stop_grace_ms')::bigint AS stop_grace_ms, stuck_reason,
    stuck_since, stuck_message, replaces,
    (spec ->> 'stop_after_disconnect_ms')::bigint AS stop_after_disconnect_ms, converged_at"""

HOST_COLUMNS = """name, labels, cpu_millis, memory_mib, state, schedulable, state_since,
    last_heartbeat, connected, revision, drained"""

# Enum lookups by value without EnumType.__call__ (a measurable share of a fleet-wide read).
_DESIRED = {d.value: d for d in Desired}
_PHASE = {p.value: p for p in Phase}
_STATE = {s.value: s for s in HostState}


def instance_record(r: asyncpg.Record) -> InstanceRecord:
    stuck = None
    if r["stuck_reason"]:
        stuck = StuckState(r["stuck_reason"], r["stuck_since"], r["stuck_message"])
    grace = r["stop_grace_ms"]
    return InstanceRecord(
        view=InstanceView(
            id=r["id"],
            workload=r["workload"],
            generation=r["generation"],
            host=r["host"],
            desired=_DESIRED[r["desired"]],
            resources=Resources(r["cpu_millis"], r["memory_mib"]),
            phase=_PHASE[r["phase"]],
            ready=r["ready"],
            replaces=r["replaces"],
        ),
        desired_changed_at=r["desired_changed_at"],
        unconverged_since=r["unconverged_since"],
        observed=r["observed"],
        reason=r["reason"],
        message=r["message"],
        agent_stuck=r["agent_stuck"],
        # A spec written without it (before the field existed) stops with the default.
        stop_grace_ms=WorkloadSpec.stop_grace_ms if grace is None else grace,
        stuck=stuck,
        stop_after_disconnect_ms=r["stop_after_disconnect_ms"] or 0,
        converged_at=r["converged_at"],
    )


def host_record(r: asyncpg.Record) -> HostRecord:
    return HostRecord(
        view=HostView(
            name=r["name"],
            labels=dict(r["labels"]),
            capacity=Resources(r["cpu_millis"], r["memory_mib"]),
            state=_STATE[r["state"]],
            schedulable=r["schedulable"],
            drained=r["drained"],
        ),
        state_since=r["state_since"],
        last_heartbeat=r["last_heartbeat"],
        connected=r["connected"],
        revision=r["revision"],
    )
