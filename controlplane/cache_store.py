"""The reads that fill the leader's cache (`controlplane.cache`): every host, every workload
with its instances (the full list), or only the named ones (what a notification names).

Only the columns the cache holds are read (`controlplane.records`), so no instance's JSON spec
is decoded. `store.Store` inherits these queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.fleet_index import HostRecord, InstanceRecord
from controlplane.records import HOST_COLUMNS, INSTANCE_COLUMNS, host_record, instance_record
from controlplane.rowviews import workload_view
from controlplane.scheduler import HostUsage, usage_of
from controlplane.sql import Database, decode_each
from controlplane.view import InstanceView, WorkloadView
from controlplane.workload_store import WorkloadRow, workload_row
from keel.model import Desired, Phase, Resources


@dataclass(frozen=True)
class WorkloadRead:
    """A workload and all its instances, from one snapshot."""

    row: WorkloadRow
    view: WorkloadView
    instances: list[InstanceRecord]


class CacheStore:
    """The cache's reads over the shared pool (a base of `store.Store`)."""

    pool: Database

    async def read_hosts(self, names: Sequence[str] | None = None) -> list[HostRecord]:
        """The named hosts (None: every host) as the cache holds them."""
        if names is None:
            rows = await self.pool.fetch(f"SELECT {HOST_COLUMNS} FROM host")
        else:
            rows = await self.pool.fetch(
                f"SELECT {HOST_COLUMNS} FROM host WHERE name = ANY($1::text[])", list(names)
            )
        return decode_each(rows, host_record, what="host")

    async def read_workloads(self, names: Sequence[str] | None = None) -> list[WorkloadRead]:
        """The named workloads (None: every one) with their instances, read in one snapshot so
        each workload's instances are exactly those of the version read with it. A name not
        found is left out (deleted)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if names is None:
                workloads = await conn.fetch("SELECT * FROM workload")
                instances = await conn.fetch(f"SELECT {INSTANCE_COLUMNS} FROM instance")
            else:
                # Two statements, not one with "$1 IS NULL OR": a prepared statement's generic
                # plan could not use the index for that. By workload (an index leads with it):
                # the cost is what those workloads have, not what the fleet has.
                workloads = await conn.fetch(
                    "SELECT * FROM workload WHERE name = ANY($1::text[])", list(names)
                )
                instances = await conn.fetch(
                    f"SELECT {INSTANCE_COLUMNS} FROM instance WHERE workload = ANY($1::text[])",
                    [r["name"] for r in workloads],
                )
        by_workload: dict[str, list[InstanceRecord]] = {}
        for inst in decode_each(instances, instance_record, what="instance"):
            by_workload.setdefault(inst.workload, []).append(inst)
        reads = []
        for row in decode_each(workloads, workload_row, what="workload"):
            name = row.workload.name
            reads.append(WorkloadRead(row, workload_view(row), by_workload.get(name, [])))
        return reads

    async def workloads_on(self, hosts: Sequence[str]) -> list[str]:
        """The workloads with instances on the hosts (by host: the instance_host_revision
        index), so what those hosts hold can be read again."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT workload FROM instance WHERE host = ANY($1::text[])", list(hosts)
        )
        return sorted(r["workload"] for r in rows)

    async def read_usage(self) -> dict[str, HostUsage]:
        """What every host's instances hold, summed from scratch: for a dry run answered by a
        replica that does not lead (and so holds no cache), once per request."""
        rows = await self.pool.fetch(
            "SELECT host, desired, phase, cpu_millis, memory_mib FROM instance"
        )
        return usage_of(
            InstanceView(
                id="",
                workload="",
                generation=0,
                host=r["host"],
                desired=Desired(r["desired"]),
                resources=Resources(r["cpu_millis"], r["memory_mib"]),
                phase=Phase(r["phase"]),
                ready=False,
            )
            for r in rows
        )

    async def observed_start_s(self, workloads: Sequence[str]) -> dict[str, float]:
        """Each workload's observed start-to-ready time: the median, over its instances running
        now, of placement to first converged (by workload: the instance_workload index). A
        workload with none has no entry (a drain's estimate falls back to its min_ready)."""
        rows = await self.pool.fetch(
            """SELECT workload, percentile_cont(0.5) WITHIN GROUP (
                          ORDER BY extract(epoch FROM converged_at - created_at)) AS s
               FROM instance
               WHERE workload = ANY($1::text[]) AND desired = 'RUNNING'
                 AND converged_at IS NOT NULL
               GROUP BY workload""",
            list(workloads),
        )
        return {r["workload"]: max(0.0, float(r["s"])) for r in rows if r["s"] is not None}

    async def workload_versions(self) -> dict[str, int]:
        """Every workload's version: what a resync compares the cache with."""
        rows = await self.pool.fetch("SELECT name, version FROM workload")
        return {r["name"]: int(r["version"]) for r in rows}

    async def workload_version(self, name: str) -> int | None:
        """The workload's version now (None: it does not exist): one indexed lookup, so a
        reconcile can tell whether what the cache holds is current before it plans."""
        value = await self.pool.fetchval("SELECT version FROM workload WHERE name = $1", name)
        return None if value is None else int(value)
