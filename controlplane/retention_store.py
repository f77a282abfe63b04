"""The retention queries: delete, in bounded batches, the rows Keel no longer needs.

Three kinds of row only ever accumulate: events (the audit history), operations that ended
(SUCCEEDED, FAILED, CANCELLED) and confirmed tombstones. A tombstone is an instance row marked
REMOVED; the agent's removal confirmation deletes it at once (`status.StatusStore.
write_reports`), so the only tombstones left are those whose agent reported them STOPPED and
then went away before it confirmed the removal (a drained host powered off, say). They still
hold their workload back (a deleting workload is dropped only once its instances are gone), so
they go too once old. A tombstone not yet reported stopped is never pruned: its process may
still run, and the liveness rules count it (`liveness`).

Each batch is one short transaction over at most `batch` rows, fenced by the leader epoch, so a
prune never holds a long lock and a deposed leader prunes nothing. Neighbours: `retention` (the
controller that calls this), `sql` (epoch, versions, NOTIFY).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from controlplane.growth_metrics import EVENT, OPERATION, TOMBSTONE
from controlplane.sql import (
    WORKLOAD_CHANNEL,
    Database,
    bump_versions,
    check_epoch,
    notify,
    workload_payload,
)

# The oldest `batch` events by id (the primary key: no index on `at` to keep up on every
# write), those among them past the retention. Ids follow time: an event's `at` is its
# transaction's start, so one out of order is out by that transaction's length, not by days. A
# batch that finds a recent event among the oldest ends the pass, and reads no more than
# `batch` rows however long the history is.
_PRUNE_EVENTS = """
DELETE FROM event WHERE id IN (
    SELECT id FROM (SELECT id, at FROM event ORDER BY id LIMIT $2) oldest WHERE at < $1)
"""

_PRUNE_OPERATIONS = """
DELETE FROM operation WHERE id IN (
    SELECT id FROM operation
    WHERE state NOT IN ('PENDING', 'RUNNING') AND finished_at < $1
    ORDER BY finished_at LIMIT $2)
"""

# Stopped as the agent saw it after the removal became desired (a report from before the
# tombstone says nothing about it). A scan of the instance table, once per prune interval. Read
# without a lock, then deleted (the rule checked again) once their workloads are locked: the
# lock order of `sql` (workloads before instances), the order a report batch takes them in too.
_TOMBSTONE_RULE = """desired = 'REMOVED' AND phase = 'STOPPED'
      AND observed_at >= desired_changed_at AND desired_changed_at < $1"""

_OLD_TOMBSTONES = f"""
SELECT id, workload FROM instance WHERE {_TOMBSTONE_RULE} ORDER BY id LIMIT $2
"""

_DELETE_TOMBSTONES = f"""
DELETE FROM instance WHERE id = ANY($2::text[]) AND {_TOMBSTONE_RULE}
RETURNING workload
"""


class RetentionStore:
    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self.pool = Database.of(pool)

    async def prune_batch(
        self, table: str, *, before: datetime, batch: int, epoch: int | None
    ) -> int:
        """Deletes at most `batch` rows of `table` (one of `TABLES`) older than `before`;
        returns how many."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            if table == EVENT:
                return _count(await conn.execute(_PRUNE_EVENTS, before, batch))
            if table == OPERATION:
                return _count(await conn.execute(_PRUNE_OPERATIONS, before, batch))
            if table != TOMBSTONE:
                raise ValueError(f"no retention rule for table {table!r}")
            found = await conn.fetch(_OLD_TOMBSTONES, before, batch)
            if not found:
                return 0
            await conn.execute(
                """SELECT 1 FROM workload WHERE name = ANY($1::text[])
                   ORDER BY name FOR NO KEY UPDATE""",
                sorted({r["workload"] for r in found}),
            )
            rows = await conn.fetch(_DELETE_TOMBSTONES, before, [r["id"] for r in found])
            # The leader's cache holds these instances: their workloads take a new version
            # and are notified, so the cache reads them again (a deleting workload whose last
            # tombstone went is then dropped by its controller).
            workloads = sorted({r["workload"] for r in rows})
            versions = await bump_versions(conn, workloads, desired=False)
            await notify(
                conn, WORKLOAD_CHANNEL, [workload_payload(v.workload, v.version) for v in versions]
            )
            return len(rows)


async def count_gone(db: Database, *, gone_after_s: float) -> int:
    """How many hosts are gone (`liveness.gone`: not READY for longer than `gone_after_s`)."""
    n: int = await db.fetchval(
        """SELECT count(*) FROM host
           WHERE state <> 'READY' AND state_since < now() - make_interval(secs => $1)""",
        gone_after_s,
    )
    return n


def _count(status: str) -> int:
    """The row count of a command tag such as 'DELETE 12'."""
    return int(status.rsplit(" ", 1)[-1])
