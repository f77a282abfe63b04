"""The rollout controller's writes: a revision complete, a revision failed (held, or rolled back
to the last revision that was fully ready), and the lifting of Keel's own hold.

Every write is fenced twice: by the leader's epoch (`sql.check_epoch`: a deposed leader writes
nothing) and by the revision still being the workload's current one in the state it was judged
in (the workload row locked first), so an apply, a rollback or a promotion made meanwhile wins
and the controller judges again. Neighbours: `controlplane.rollouts` (the controller) decides
with `controlplane.rollout_judge`; the rollback itself is `revision_store`'s (`_roll_back`, in
this transaction); `store.Store` inherits these queries.

The hold: a failed rollout without auto_rollback pauses the workload as `keel/rollout`, so the
workload controller replaces no more old instances by the failing revision (a paused rollout
holds where it is: what the budget let go down before the failure stays down, nothing more),
while instances of another spec remain (a first rollout has nothing to keep). The hold lasts
while that revision is current and failed: an apply of another spec, an undo, or `keelctl
rollout resume` ends it (`lift_hold`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.revision_store import RevisionStore
from controlplane.rollout_judge import ACTOR, RUNBOOK, Fail, State, next_command
from controlplane.sql import WORKLOAD_CHANNEL, Conn, check_epoch, record_event, workload_payload

# The most of one instance's message a failure record keeps (a CRASH_LOOP message carries up
# to keel.stuck.STDERR_TAIL_BYTES of stderr).
MESSAGE_LIMIT = 6000
# The most of the first stderr line an event carries.
EVENT_DETAIL_LIMIT = 200


@dataclass(frozen=True)
class CurrentRevision:
    """The current revision's row as the controller judges it. The controller keeps it between
    passes (`controlplane.rollouts`): what moves it is a write that also takes the workload a
    new `desired_version` (an apply, undo, abort, promote), or one of the controller's own."""

    state: str
    since: datetime
    actor: str
    same_as: int | None


@dataclass(frozen=True)
class Failed:
    """A failure as written: the revision rolled back to (and the new revision), or held."""

    record: dict[str, Any]
    rolled_back_to: int | None = None
    new_revision: int | None = None


class RolloutStore(RevisionStore):
    """The rollout controller's queries (a base of `store.Store`)."""

    async def current_revision(self, name: str, revision: int) -> CurrentRevision | None:
        row = await self.pool.fetchrow(
            """SELECT state, state_since, actor, same_as FROM workload_revision
               WHERE workload = $1 AND revision = $2""",
            name,
            revision,
        )
        if row is None:
            return None
        return CurrentRevision(row["state"], row["state_since"], row["actor"], row["same_as"])

    async def complete_revision(
        self, name: str, revision: int, *, ready: int, epoch: int | None
    ) -> bool:
        """The revision is fully ready: COMPLETE (first time: completed_at), with an event.
        False when it is no longer current or was already complete."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            if not await _current(conn, name, revision):
                return False
            done = await conn.fetchrow(
                """UPDATE workload_revision
                   SET state = 'COMPLETE', state_since = now(),
                       completed_at = coalesce(completed_at, now())
                   WHERE workload = $1 AND revision = $2
                     AND state IN ('PROGRESSING', 'FAILED')
                   RETURNING same_as""",
                name,
                revision,
            )
            if done is None:
                return False
            what = f"revision {revision} complete: {ready} {_plural(ready, 'instance')} ready"
            if done["same_as"] is not None:
                what += f" (the spec of revision {done['same_as']})"
            await record_event(conn, f"workload/{name}", "RolloutComplete", what, actor=ACTOR)
        return True

    async def fail_revision(
        self,
        name: str,
        revision: int,
        fail: Fail,
        *,
        judged_in: str,
        epoch: int | None,
    ) -> Failed | None:
        """Writes the failure record on the revision and acts on it: with `fail.roll_back` and
        a revision that was fully ready to return to, the rollback (the failed revision ends
        ROLLED_BACK); else FAILED, and the workload held. None when the revision is no longer
        current or no longer in the state it was judged in (`judged_in`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            workload = await _current(conn, name, revision)
            if workload is None:
                return None
            state = await conn.fetchval(
                """SELECT state FROM workload_revision WHERE workload = $1 AND revision = $2
                   FOR UPDATE""",
                name,
                revision,
            )
            if state != judged_in:
                return None
            record = await _record(conn, name, fail)
            target = None
            if fail.roll_back:
                target = await conn.fetchval(
                    """SELECT revision FROM workload_revision
                       WHERE workload = $1 AND spec <> $2::jsonb AND completed_at IS NOT NULL
                       ORDER BY revision DESC LIMIT 1""",
                    name,
                    workload["spec"],
                )
            if target is None:
                return await self._hold(conn, name, revision, fail, record)
            # ROLLED_BACK before the rollback's apply, which would mark it SUPERSEDED.
            await _write_failure(conn, name, revision, State.ROLLED_BACK, record)
            why = f"revision {revision} failed: {fail.reason}"
            applied, to = await self._roll_back(
                conn, name, to_revision=None, actor=ACTOR, reason=why
            )
            record = {
                **record,
                "rolled_back_to": to,
                "next_command": next_command(name, fail, rolled_back=True),
            }
            await _write_failure(conn, name, revision, State.ROLLED_BACK, record)
            await record_event(
                conn,
                f"workload/{name}",
                "RolloutRolledBack",
                f"{_summary(record)}; rolled back to revision {to} (as revision "
                f"{applied.generation}); the record: keelctl rollout history {name}",
                actor=ACTOR,
            )
            return Failed(record, rolled_back_to=to, new_revision=applied.generation)

    async def _hold(
        self, conn: Conn, name: str, revision: int, fail: Fail, record: dict[str, Any]
    ) -> Failed:
        await _write_failure(conn, name, revision, State.FAILED, record)
        # Paused as keel/rollout, unless an operator paused it already or no instance of
        # another spec is left to keep (a first rollout: a pause would protect nothing and
        # hold back its placements); a write like a pause's (new versions and a NOTIFY), so
        # the leader's cache reads it and the workload controller holds.
        held = await conn.fetchrow(
            """UPDATE workload w SET paused = true, paused_by = $2, paused_at = now(),
                      updated_at = now(), version = nextval('workload_version'),
                      desired_version = nextval('workload_version')
               WHERE name = $1 AND NOT paused
                 AND EXISTS (SELECT 1 FROM instance i
                             WHERE i.workload = w.name AND i.desired <> 'REMOVED'
                               AND NOT i.generation = ANY (w.spec_generations))
               RETURNING version""",
            name,
            ACTOR,
        )
        if held is not None:
            await conn.execute(
                "SELECT pg_notify($1, $2)",
                WORKLOAD_CHANNEL,
                workload_payload(name, held["version"]),
            )
        how = "the rollout holds (paused as keel/rollout)" if held is not None else "it stays"
        why = "" if not fail.roll_back else " (auto_rollback: no earlier revision was fully ready)"
        await record_event(
            conn,
            f"workload/{name}",
            "RolloutFailed",
            f"{_summary(record)}; {how}{why}; next: {record['next_command']}",
            actor=ACTOR,
        )
        return Failed(record)

    async def lift_hold(self, name: str, *, epoch: int | None) -> bool:
        """Ends Keel's own hold once the revision it held is no longer current and failed (an
        apply, an undo): the new revision rolls. True when it did."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            row = await conn.fetchrow(
                """UPDATE workload w SET paused = false, paused_by = '', paused_at = NULL,
                          updated_at = now(), version = nextval('workload_version'),
                          desired_version = nextval('workload_version')
                   WHERE name = $1 AND paused AND paused_by = $2
                     AND NOT EXISTS (SELECT 1 FROM workload_revision r
                                     WHERE r.workload = w.name AND r.revision = w.generation
                                       AND r.state = 'FAILED')
                   RETURNING version, generation""",
                name,
                ACTOR,
            )
            if row is None:
                return False
            await record_event(
                conn,
                f"workload/{name}",
                "RolloutResumed",
                f"revision {row['generation']} replaces the failed one: Keel's hold is lifted",
                actor=ACTOR,
            )
            await conn.execute(
                "SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, workload_payload(name, row["version"])
            )
        return True


async def _current(conn: Conn, name: str, revision: int) -> Any:
    """The workload row, locked, if `revision` is still its current one (else None)."""
    row = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", name)
    if row is None or row["deleting"] or row["generation"] != revision:
        return None
    return row


async def _record(conn: Conn, name: str, fail: Fail) -> dict[str, Any]:
    """The stuck-style record: reason, message, evidence (each instance's host, stuck reason,
    last exit and message as the agent last reported them), runbook, next command, when."""
    ids = [m.id for m in fail.evidence]
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, host, last_exit, message FROM instance WHERE id = ANY($1::text[])", ids
        )
    }
    evidence = []
    for m in fail.evidence:
        r = rows.get(m.id)
        message = (r["message"] if r is not None and r["message"] else m.message) or ""
        evidence.append(
            {
                "instance": m.id,
                "host": m.host,
                "reason": m.stuck,
                "last_exit": r["last_exit"] if r is not None else "",
                "message": message[-MESSAGE_LIMIT:],
            }
        )
    at: datetime = await conn.fetchval("SELECT now()")
    return {
        "reason": fail.reason,
        "message": fail.message,
        "evidence": evidence,
        "runbook": RUNBOOK,
        "next_command": next_command(name, fail, rolled_back=False),
        "at": at.isoformat(),
        "rolled_back_to": 0,
    }


async def _write_failure(
    conn: Conn, name: str, revision: int, state: State, record: dict[str, Any]
) -> None:
    await conn.execute(
        """UPDATE workload_revision SET state = $3, state_since = now(), failure = $4
           WHERE workload = $1 AND revision = $2""",
        name,
        revision,
        state.value,
        record,
    )


def _summary(record: dict[str, Any]) -> str:
    """The event's line: the reason and message, and the last line of the first stderr."""
    text = f"{record['reason']}: {record['message']}"
    for e in record["evidence"][:1]:
        lines = [line for line in str(e["message"]).splitlines() if line.strip()]
        if "stderr" in str(e["message"]) and lines:
            text += f" (stderr: {lines[-1].strip()[:EVENT_DETAIL_LIMIT]})"
    return text


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
