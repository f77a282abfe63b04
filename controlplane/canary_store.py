"""Canaries in Postgres: aborting a canary rollout, and which canaries wait for promotion.

A workload whose new revision has `rollout.canary` waits with `canary_pending` set
(`workload_store` sets it at the apply; `revision_store.promote` clears it). `abort` returns to
the fully ready revision whose instances the canaries ran beside, as `revision_store.roll_back`
does (a new revision with that spec: those instances stay current and keep running, and the
workload controller removes the canaries), and ends the canary revision ABORTED with a
RolloutAborted event naming the actor and the reason. `waiting_since` is what the stuck
detector reads to tell a canary forgotten past `--canary-waiting-after`
(`verdicts.judge_workload`).

Neighbours: `store.Store` inherits these queries; `canary_api` (PromoteRollout, AbortRollout)
and `stuck` call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from controlplane.errors import FailedPrecondition, NotFound
from controlplane.idempotency import Once, once_in
from controlplane.revision_store import RevisionStore
from controlplane.sql import Conn, record_event
from controlplane.workload_store import WorkloadRow


@dataclass(frozen=True)
class Aborted:
    """An aborted canary rollout: the workload now, the revision aborted and the one whose spec
    runs again."""

    row: WorkloadRow
    aborted: int
    to_revision: int


class CanaryStore(RevisionStore):
    """Canary queries over the shared pool (a base of `store.Store`)."""

    async def abort(
        self, name: str, *, actor: str, reason: str = "", once: Once[Aborted] | None = None
    ) -> Aborted:
        """Removes the canaries of the revision awaiting promotion and returns to the revision
        they ran beside. FailedPrecondition when no canary waits; NotFound for no workload."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(
                conn, once, lambda: self._abort(conn, name, actor=actor, reason=reason)
            )

    async def _abort(self, conn: Conn, name: str, *, actor: str, reason: str) -> Aborted:
        current = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", name)
        if current is None:
            raise NotFound(f'workload "{name}" not found')
        number = current["generation"]
        if current["deleting"] or not current["canary_pending"]:
            raise FailedPrecondition(
                f'workload "{name}" has no canary awaiting promotion (revision {number}); '
                f"nothing to abort: see `keelctl rollout status {name}`"
            )
        # The revision the canaries ran beside: the newest fully ready one whose instances
        # still run (a revision row for it, with another spec). Not merely the newest old
        # instance's: that may be a canary this revision superseded, never promoted. Without
        # one (the old instances are all gone, or older than the revision history)
        # roll_back's own choice: the newest revision that was fully ready with another spec.
        beside = await conn.fetchval(
            """SELECT r.revision FROM workload_revision r
               WHERE r.workload = $1 AND r.spec <> $2::jsonb AND r.completed_at IS NOT NULL
                 AND r.revision IN (
                     SELECT generation FROM instance
                     WHERE workload = $1 AND desired <> 'REMOVED'
                       AND NOT (generation = ANY($3::bigint[])))
               ORDER BY r.revision DESC LIMIT 1""",
            name,
            current["spec"],
            list(current["spec_generations"]),
        )
        why = reason or f"abort the canaries of revision {number}"
        row, to_revision = await self._roll_back(
            conn, name, to_revision=beside, actor=actor, reason=why, always_rollback=True
        )
        await conn.execute(
            """UPDATE workload_revision SET state = 'ABORTED', state_since = now()
               WHERE workload = $1 AND revision = $2""",
            name,
            number,
        )
        await record_event(
            conn,
            f"workload/{name}",
            "RolloutAborted",
            f"revision {number}: canaries aborted and removed; back on the spec of revision "
            f"{to_revision} as revision {row.generation}" + (f": {reason}" if reason else ""),
            actor=actor,
        )
        return Aborted(row, number, to_revision)

    async def waiting_since(self) -> dict[str, datetime]:
        """Each workload whose canaries await promotion, with when its revision was applied."""
        rows = await self.pool.fetch(
            """SELECT w.name, r.created_at FROM workload w
               JOIN workload_revision r ON r.workload = w.name AND r.revision = w.generation
               WHERE w.canary_pending"""
        )
        return {r["name"]: r["created_at"] for r in rows}
