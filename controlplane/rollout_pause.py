"""Pausing and resuming a workload's rollout: `keelctl rollout pause|resume`, one transaction.

A paused rollout holds where it is (`controlplane.rollout`: nothing is removed or replaced for
being old; a scale change still works) and is never reported stuck for it
(`controlplane.verdicts`; past `--rollout-paused-after` it is shown as ROLLOUT_PAUSED). The
write sets `paused`, `paused_by` (the caller's token name) and `paused_at` (database time), or
clears them, and records RolloutPaused / RolloutResumed on `workload/NAME` with the actor and
the reason. Like `revision_store.RevisionStore.promote` it takes new workload versions and
NOTIFYs, so the leader's cache reads the row again and the workload controller plans with it.
Resuming a failed rollout (Keel's hold, or an operator's pause over it) sets its revision back
to PROGRESSING in the same transaction: the rollout controller judges it afresh, and it fails
again, with a new record, if it is still stuck.

Safe to repeat: pausing a paused rollout (or resuming one not paused) changes nothing and
records nothing. Neighbours: `rollouts_api` (the RPCs), `rollout_status` (their answer).
"""

from __future__ import annotations

import asyncpg

from controlplane import freeze, freeze_gate
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.idempotency import Once, once_in
from controlplane.rollout_judge import ACTOR
from controlplane.rollout_status import read_status
from controlplane.sql import WORKLOAD_CHANNEL, Conn, Database, record_event, workload_payload
from controlplane.workload_store import WorkloadRow, workload_row

# Who holds a failed rollout (`rollout_judge.ACTOR`: the rollout controller's pause).
HOLDER = ACTOR


async def set_paused(
    db: Database,
    name: str,
    *,
    paused: bool,
    actor: str,
    reason: str = "",
    once: Once[WorkloadRow] | None = None,
) -> WorkloadRow:
    """Pauses (`paused`) or resumes the workload's rollout; returns the workload. `once`: the
    request id's record, in the same transaction (`idempotency`)."""
    async with db.acquire() as conn, conn.transaction():
        return await once_in(
            conn, once, lambda: _set_paused(conn, name, paused=paused, actor=actor, reason=reason)
        )


async def _is_rollback(conn: Conn, workload: asyncpg.Record) -> bool:
    """Whether the workload's current revision returns to a spec that was fully ready."""
    return bool(
        await conn.fetchval(
            """SELECT same_as IS NOT NULL FROM workload_revision
               WHERE workload = $1 AND revision = $2""",
            workload["name"],
            workload["generation"],
        )
    )


async def _set_paused(
    conn: Conn, name: str, *, paused: bool, actor: str, reason: str
) -> WorkloadRow:
    current = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", name)
    if current is None:
        raise NotFound(f'workload "{name}" not found')
    # An operator's pause over the rollout controller's hold of a failed rollout takes it over:
    # the next revision lifts Keel's hold, never an operator's pause.
    takes_over = paused and current["paused"] and current["paused_by"] == HOLDER != actor
    if current["paused"] == paused and not takes_over:
        return workload_row(current)  # already so: nothing to change, nothing to record
    if current["deleting"] and paused:
        raise FailedPrecondition(
            f'workload "{name}" is being deleted; there is no rollout to pause'
        )
    # Frozen: resuming a pause that rolls a new spec further is a deploy, whoever paused it
    # (Keel's hold of a failed rollout too: the resume judges the revision again and rolls it).
    # Not so a rollback (an undo under the freeze must be able to finish) nor waiting canaries
    # (the resume rolls nothing; their promotion is gated on its own).
    freezes = [] if paused or current["deleting"] else await freeze.holding(conn)
    if freezes and not current["canary_pending"] and not await _is_rollback(conn, current):
        old = (await read_status(conn, name)).old_remaining
        freeze_gate.gate_resume(freezes, name, revision=current["generation"], old_instances=old)
    row = await conn.fetchrow(
        """UPDATE workload SET paused = $2,
                  paused_by = CASE WHEN $2 THEN $3 ELSE '' END,
                  paused_at = CASE WHEN $2 THEN now() END,
                  updated_at = now(),
                  version = nextval('workload_version'),
                  desired_version = nextval('workload_version')
           WHERE name = $1 RETURNING *""",
        name,
        paused,
        actor,
    )
    assert row is not None  # locked above
    revision = row["generation"]
    retried = ""
    if not paused:
        # A resume lets a failed (held) rollout go on: the revision is in progress again, and
        # the rollout controller judges it afresh (its progress clock starts now). Still stuck,
        # it fails again with a new record. Its state, the gauge and the status then agree.
        retried = (
            await conn.fetchval(
                """UPDATE workload_revision SET state = 'PROGRESSING', state_since = now()
                   WHERE workload = $1 AND revision = $2 AND state = 'FAILED'
                   RETURNING coalesce(failure->>'reason', 'FAILED')""",
                name,
                revision,
            )
            or ""
        )
    if takes_over:
        kind, what = "RolloutPaused", f"revision {revision}: Keel's hold taken over as a pause"
    elif paused:
        kind, what = "RolloutPaused", f"revision {revision}: rollout paused, it holds where it is"
    elif retried:
        kind, what = (
            "RolloutResumed",
            (
                f"revision {revision}: failed rollout ({retried}) resumed; it is judged again and "
                "fails again if still stuck"
            ),
        )
    else:
        kind, what = "RolloutResumed", f"revision {revision}: rollout resumed"
    await record_event(
        conn, f"workload/{name}", kind, what + (f": {reason}" if reason else ""), actor=actor
    )
    await conn.execute(
        "SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, workload_payload(name, row["version"])
    )
    return workload_row(row)
