"""The store: Keel's state in Postgres, as named queries, behind one object.

`Store` is what callers hold: it inherits the workload queries (`workload_store`), the
instance and plan queries (`instance_store`), the host queries (`hosts`, with cordon and
uncordon: `cordon_store`; fencing: `fencing`), the operations (`operation_store`), the
leader's cache's reads (`cache_store`) and the operator's paged reads (`listing`), and adds
database time and leadership. Neighbours: `fleet`
(operator RPCs) and `sync` (agent streams) call it; the leader's cache (`cache`) reads the
fleet through it, and the workload controller (`workload`) writes its plans back through it;
observed state (reports, stuck marks, events) lives in `status`. The row types are
re-exported here so callers import them from one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane.cache_store import CacheStore
from controlplane.canary_store import CanaryStore
from controlplane.cordon_store import CordonResult, CordonStore
from controlplane.fencing import FencingStore
from controlplane.hosts import HostRow
from controlplane.instance_store import InstanceRow, InstanceStore, PlanResult
from controlplane.listing import InstanceStatusRow, ListingStore, Tally
from controlplane.operation_store import OperationStore
from controlplane.revision_store import RevisionStore
from controlplane.rollout_store import RolloutStore
from controlplane.sql import (
    HOST_CHANNEL,
    OPERATION_CHANNEL,
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    create_pool,
)
from controlplane.view import StuckState
from controlplane.workload_store import WorkloadRow
from keel.model import Phase

__all__ = [
    "HOST_CHANNEL",
    "OPERATION_CHANNEL",
    "WORKLOAD_CHANNEL",
    "CordonResult",
    "HostRow",
    "InstanceRow",
    "InstanceStatusRow",
    "PlanResult",
    "Report",
    "Store",
    "StuckState",
    "Tally",
    "WorkloadRow",
    "create_pool",
]


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


class Store(
    CanaryStore,
    RolloutStore,
    RevisionStore,
    InstanceStore,
    CordonStore,
    FencingStore,
    OperationStore,
    CacheStore,
    ListingStore,
):
    """Postgres-backed desired and observed state. One instance per process, sharing a pool."""

    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self.pool = Database.of(pool)  # asyncpg's errors become Keel's there

    async def now(self) -> datetime:
        """Database time: the one clock every replica and report is judged by."""
        value: datetime = await self.pool.fetchval("SELECT now()")
        return value

    # -- leadership ---------------------------------------------------------------------

    async def take_leadership(self, conn: Conn, holder: str) -> int:
        row = await conn.fetchrow(
            "UPDATE leader SET epoch = epoch + 1, holder = $1, acquired_at = now() RETURNING epoch",
            holder,
        )
        assert row is not None
        return int(row["epoch"])
