"""A workload's revisions in Postgres: the history of its spec changes, and rollbacks.

Every apply that changes a workload's spec is kept as a revision (`workload_store` writes it,
in the apply's transaction): its spec as stored (secrets sealed), who applied it, when and why
(`--reason`), and how its rollout went (`state`, `completed_at`, `failure`). A rollback applies
an earlier revision's spec again through the same apply (`roll_back`): that is a new revision
whose `same_as` names the earlier one, and the instances already running that spec stay current
(`WorkloadRow.spec_generations`), so only the others are replaced. Only a spec that was once
fully ready (`completed_at`) is a rollback, which a freeze lets through and which runs no
canary: an earlier spec that crashed or was never promoted, applied again, is a new rollout
(its instances still running are kept all the same).

Neighbours: `store.Store` inherits these queries; the rollout RPCs (`fleet`) and the rollout
controller read and write through them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from controlplane import freeze
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.idempotency import Once, once_in
from controlplane.sql import (
    WORKLOAD_CHANNEL,
    Conn,
    check_epoch,
    decode_each,
    record_event,
    workload_payload,
)
from controlplane.workload_store import WorkloadRow, WorkloadStore, workload_row
from keel.model import WorkloadSpec


@dataclass(frozen=True)
class RevisionRow:
    workload: str
    number: int
    spec: WorkloadSpec
    actor: str
    reason: str
    created_at: datetime
    same_as: int | None
    state: str
    state_since: datetime
    completed_at: datetime | None
    promoted_at: datetime | None
    promoted_by: str
    # Why it failed (reason, message, evidence, runbook, next command), or None.
    failure: dict[str, Any] | None


def revision_row(r: asyncpg.Record) -> RevisionRow:
    return RevisionRow(
        workload=r["workload"],
        number=r["revision"],
        spec=WorkloadSpec.from_json(r["spec"]),
        actor=r["actor"],
        reason=r["reason"],
        created_at=r["created_at"],
        same_as=r["same_as"],
        state=r["state"],
        state_since=r["state_since"],
        completed_at=r["completed_at"],
        promoted_at=r["promoted_at"],
        promoted_by=r["promoted_by"],
        failure=r["failure"],
    )


class RevisionStore(WorkloadStore):
    """Revision queries over the shared pool (a base of `store.Store`)."""

    async def revisions(self, name: str) -> list[RevisionRow]:
        """The workload's revisions, newest first. NotFound when there is no such workload."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if await conn.fetchval("SELECT 1 FROM workload WHERE name = $1", name) is None:
                raise NotFound(f'workload "{name}" not found')
            rows = await conn.fetch(
                "SELECT * FROM workload_revision WHERE workload = $1 ORDER BY revision DESC",
                name,
            )
        return decode_each(rows, revision_row, what="revision")

    async def held_failures(self, holder: str) -> dict[str, dict[str, Any]]:
        """Each workload held by `holder` (the rollout controller's hold of a failed rollout),
        with its current revision's failure record. Read by the stuck detector only while the
        leader's cache shows a workload so held."""
        rows = await self.pool.fetch(
            """SELECT w.name, r.failure FROM workload w
               JOIN workload_revision r ON r.workload = w.name AND r.revision = w.generation
               WHERE w.paused AND w.paused_by = $1 AND r.state = 'FAILED'
                 AND r.failure IS NOT NULL""",
            holder,
        )
        return {r["name"]: dict(r["failure"]) for r in rows}

    async def roll_back(
        self,
        name: str,
        *,
        to_revision: int | None,
        actor: str,
        reason: str = "",
        once: Once[tuple[WorkloadRow, int]] | None = None,
    ) -> tuple[WorkloadRow, int]:
        """Applies an earlier revision's spec again, as a new revision. Returns the workload
        and the revision whose spec it applied.

        `to_revision` None: the newest revision that was fully ready (`completed_at`) and
        runs another spec than the current one, or else the newest with another spec. The
        workload's replicas, budgets and policy stay as they are: only what runs goes back.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(
                conn,
                once,
                lambda: self._roll_back(
                    conn, name, to_revision=to_revision, actor=actor, reason=reason
                ),
            )

    async def _roll_back(
        self,
        conn: Conn,
        name: str,
        *,
        to_revision: int | None,
        actor: str,
        reason: str,
        always_rollback: bool = False,
    ) -> tuple[WorkloadRow, int]:
        """Applies the spec of `to_revision` (None: the newest fully ready revision with another
        spec, else the newest with another spec) again. It is a rollback (not frozen, no
        canary) if that spec was once fully ready, or `always_rollback` (an abort); otherwise
        a new rollout of an old spec."""
        current = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", name)
        if current is None:
            raise NotFound(f'workload "{name}" not found')
        if current["deleting"]:
            raise FailedPrecondition(f'workload "{name}" is being deleted; nothing to roll back')
        if to_revision is not None:
            target = await conn.fetchrow(
                "SELECT * FROM workload_revision WHERE workload = $1 AND revision = $2",
                name,
                to_revision,
            )
            if target is None:
                raise NotFound(
                    f'workload "{name}" has no revision {to_revision}; see `keelctl rollout '
                    f"history {name}`"
                )
            if target["spec"] == current["spec"]:
                raise FailedPrecondition(
                    f'workload "{name}" already runs the spec of revision {to_revision} '
                    f"(revision {current['generation']}); nothing to roll back"
                )
        else:
            target = await conn.fetchrow(
                """SELECT * FROM workload_revision
                   WHERE workload = $1 AND spec <> $2::jsonb
                   ORDER BY completed_at IS NULL, revision DESC LIMIT 1""",
                name,
                current["spec"],
            )
            if target is None:
                raise FailedPrecondition(
                    f'workload "{name}" has no earlier revision with another spec to return '
                    f"to; see `keelctl rollout history {name}`"
                )
        row = workload_row(current)
        back = replace(row.workload, spec=WorkloadSpec.from_json(target["spec"]))
        why = reason or f"roll back to revision {target['revision']}"
        applied, _ = await self._apply(
            conn,
            back,
            actor=actor,
            reason=why,
            trace_context="",
            rollback_to=int(target["revision"]),
            always_rollback=always_rollback,
        )
        return applied, int(target["revision"])

    async def promote(
        self,
        name: str,
        *,
        actor: str,
        revision: int | None = None,
        epoch: int | None = None,
        reason: str = "",
        once: Once[WorkloadRow] | None = None,
    ) -> WorkloadRow:
        """Lets the current revision's canary rollout continue (`keelctl rollout promote`, or
        the rollout controller for `auto_promote`: then `revision` is the one it judged and
        `epoch` its leadership, and a revision applied since is not promoted).

        FailedPrecondition when no canary waits; a write like an apply's (new versions and a
        NOTIFY), so the leader's cache reads it and the workload controller plans again. What
        should run changes now: the convergence clock of the instances the rollout goes on to
        replace starts at the promotion, not at the apply the canaries waited after.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            return await once_in(
                conn,
                once,
                lambda: self._promote(conn, name, actor=actor, revision=revision, reason=reason),
            )

    async def _promote(
        self, conn: Conn, name: str, *, actor: str, revision: int | None, reason: str
    ) -> WorkloadRow:
        current = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", name)
        if current is None:
            raise NotFound(f'workload "{name}" not found')
        number = current["generation"]
        if not current["canary_pending"] or (revision is not None and revision != number):
            raise FailedPrecondition(
                f'workload "{name}" has no canary awaiting promotion (revision {number}); '
                f"see `keelctl rollout status {name}`"
            )
        # A promotion rolls the new spec to every instance: a deploy, held by a freeze (the
        # canaries keep running; auto_promote waits for the freeze to lift).
        freezes = await freeze.holding(conn)
        if freezes:
            raise FailedPrecondition(
                f'workload "{name}": deploys are frozen '
                f"({freeze.summary(freezes)}); promoting revision {number} "
                f"would roll it to every instance, so it waits: its canaries keep running. "
                f"`keelctl rollout abort {name}` removes them, or lift the freeze (`keelctl "
                f"freeze --status`)"
            )
        row = await conn.fetchrow(
            """UPDATE workload SET canary_pending = false, updated_at = now(),
                      version = nextval('workload_version'),
                      desired_version = nextval('workload_version'),
                      desired_changed_at = CASE WHEN desired_pending THEN desired_changed_at
                                                ELSE clock_timestamp() END,
                      desired_pending = true
               WHERE name = $1 RETURNING *""",
            name,
        )
        assert row is not None  # locked above
        await conn.execute(
            """UPDATE workload_revision SET promoted_at = now(), promoted_by = $3,
                      state = 'PROGRESSING', state_since = now()
               WHERE workload = $1 AND revision = $2""",
            name,
            number,
            actor,
        )
        await record_event(
            conn,
            f"workload/{name}",
            "RolloutPromoted",
            f"revision {number}: canaries promoted, the rollout continues"
            + (f": {reason}" if reason else ""),
            actor=actor,
        )
        await conn.execute(
            "SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, workload_payload(name, row["version"])
        )
        return workload_row(row)
