"""Workloads in Postgres: the operator's desired state, as named queries.

Neighbours: `store.Store` inherits these queries (with `instance_store` and `hosts`), so callers
hold one store; `fleet` (operator RPCs) applies and deletes through it, and the workload
controller (`controllers`) reads workloads to plan and drops deleted ones once their instances
are gone (`instance_store` writes the plans). Each desired change ends with NOTIFY on
`WORKLOAD_CHANNEL`, delivered at commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane import freeze_gate
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.idempotency import Once, once_in
from controlplane.sql import (
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    check_epoch,
    decode_each,
    record_event,
    workload_payload,
)
from controlplane.view import StuckState
from keel.model import Kind, RolloutPolicy, Workload, WorkloadSpec


@dataclass(frozen=True)
class WorkloadRow:
    workload: Workload
    generation: int
    deleting: bool
    created_at: datetime
    updated_at: datetime
    stuck: StuckState | None = None
    unconverged_since: datetime | None = None
    trace_context: str = ""
    # When its desired state last changed (see `WorkloadStore`): the convergence clock of
    # every instance and tombstone a plan writes for it starts here.
    desired_changed_at: datetime | None = None
    # Taken anew by every write to its desired state or its instances (migration 0006): a
    # plan made from this row is written only while it is still the workload's version.
    version: int = 0
    # Taken anew only by writes that change what should run (not by reports): a plan that only
    # creates instances is checked against it.
    desired_version: int = 0
    # Its last desired change still waits for a plan that carries it out in full (migration
    # 0007): a change meanwhile keeps `desired_changed_at`.
    desired_pending: bool = False
    # The generations whose spec is the current one (migration 0012): their instances are
    # current, so a rollback to an earlier spec keeps the instances that already run it.
    spec_generations: frozenset[int] = frozenset()
    # A paused rollout holds where it is (`keelctl rollout pause`).
    paused: bool = False
    paused_by: str = ""
    paused_at: datetime | None = None
    # The current revision's canaries wait to be promoted (`rollout.canary`).
    canary_pending: bool = False

    def is_current(self, generation: int) -> bool:
        """Whether an instance of `generation` runs the current spec."""
        return generation == self.generation or generation in self.spec_generations


def stuck_state(r: asyncpg.Record) -> StuckState | None:
    if not r["stuck_reason"]:
        return None
    return StuckState(r["stuck_reason"], r["stuck_since"], r["stuck_message"])


def workload_row(r: asyncpg.Record) -> WorkloadRow:
    return WorkloadRow(
        workload=Workload(
            name=r["name"],
            kind=Kind(r["kind"]),
            replicas=r["replicas"],
            max_unavailable=r["max_unavailable"],
            max_surge=r["max_surge"],
            selector=dict(r["selector"]),
            deadline_ms=r["deadline_ms"],
            spec=WorkloadSpec.from_json(r["spec"]),
            rollout=RolloutPolicy.from_json(r["rollout"]),
        ),
        generation=r["generation"],
        deleting=r["deleting"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        stuck=stuck_state(r),
        unconverged_since=r["unconverged_since"],
        trace_context=r["trace_context"],
        desired_changed_at=r["desired_changed_at"],
        version=r["version"],
        desired_version=r["desired_version"],
        desired_pending=r["desired_pending"],
        spec_generations=frozenset(r["spec_generations"]),
        paused=r["paused"],
        paused_by=r["paused_by"],
        paused_at=r["paused_at"],
        canary_pending=r["canary_pending"],
    )


# How many of a workload's newest revisions `keelctl rollout history` keeps (older ones stay
# while instances of them remain, and the newest fully ready one stays for undo).
REVISION_HISTORY = 10

# Fields an apply changes in place (no new generation); kind is checked apart.
_IN_PLACE_FIELDS = ("kind", "replicas", "max_unavailable", "max_surge", "selector", "deadline_ms")
# The in-place fields that change which instances should run (with the spec): a change to
# them restarts the workload's convergence clock. The budgets and the deadline only change
# how, or how patiently, the same desired state is reached.
_DESIRED_FIELDS = ("replicas", "selector")


class WorkloadStore:
    """Workload queries over the shared pool (a base of `store.Store`).

    `desired_changed_at` is stamped (clock_timestamp(): as close to the commit as a statement
    gets) by the writes that change what should run: a create, an apply that changes the
    spec, replicas or selector, a delete; and by fencing (`fencing.FencingStore.fence_host`).
    An apply or fencing while the last change is still `desired_pending` (no plan has carried
    it out in full yet) keeps the earlier time: what was wanted then is still waiting. A
    delete restarts the clock: what it asks for (removals) is new.
    Every write here that changes the row takes a new `version` and `desired_version` (see
    `sql.bump_versions`).
    """

    pool: Database

    async def apply_workload(
        self,
        w: Workload,
        *,
        actor: str = "",
        reason: str = "",
        trace_context: str = "",
        override_freeze: bool = False,
        once: Once[tuple[WorkloadRow, str]] | None = None,
    ) -> tuple[WorkloadRow, str]:
        """Creates or updates a workload. Returns it and `created`, `configured` or `unchanged`.

        The generation moves only when the spec (what runs) changes, and each such change is
        a new revision (`workload_revision`) kept with its spec, actor and `reason`;
        replicas, budgets, selector, deadline and rollout policy are updated in place, like a
        Deployment's pod template. A spec equal to an earlier revision's is a rollback to it:
        the instances already running that spec stay current (`spec_generations`). `once`:
        the request id's record, in the same transaction (`idempotency`). While deploys are
        frozen, a new spec (not a rollback) is refused unless `override_freeze` (`freeze_gate`).
        """
        freeze_gate.check_override(override_freeze, reason)
        if w.spec.plain_secrets():
            # A guard, not a path: FleetApi seals before it calls. Never store one in clear.
            raise ValueError("a secret_env value reached the store unsealed")
        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(
                conn,
                once,
                lambda: self._apply(
                    conn,
                    w,
                    actor=actor,
                    reason=reason,
                    trace_context=trace_context,
                    override_freeze=override_freeze,
                ),
            )

    async def _apply(
        self,
        conn: Conn,
        w: Workload,
        *,
        actor: str,
        reason: str,
        trace_context: str,
        override_freeze: bool = False,
        rollback_to: int | None = None,
        always_rollback: bool = False,
    ) -> tuple[WorkloadRow, str]:
        """`rollback_to`: the revision an undo or an abort returns to, which `same_as` names
        if it was fully ready (the record and the history then agree on the number).
        `always_rollback`: an abort's, a rollback even if that revision was never fully ready
        (removing canaries must never start new ones, nor wait for a freeze)."""
        spec = w.spec.to_json()
        old = await conn.fetchrow("SELECT * FROM workload WHERE name = $1 FOR UPDATE", w.name)
        row = None
        same_as: int | None = None
        if old is None:
            # FOR UPDATE locks nothing for a name not yet there: two first applies of one
            # name race to this INSERT. The loser inserts nothing, then waits on the
            # winner's row and applies as an update on top of it.
            row = await conn.fetchrow(
                """INSERT INTO workload (name, kind, replicas, max_unavailable, max_surge,
                                         selector, deadline_ms, spec, trace_context,
                                         desired_changed_at, desired_pending, rollout,
                                         spec_generations)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp(), true, $10,
                           ARRAY[1::bigint])
                   ON CONFLICT (name) DO NOTHING
                   RETURNING *""",
                w.name,
                w.kind.value,
                w.replicas,
                w.max_unavailable,
                w.max_surge,
                w.selector,
                w.deadline_ms,
                spec,
                trace_context,
                w.rollout.to_json(),
            )
            result = "created"
            if row is None:
                old = await conn.fetchrow(
                    "SELECT * FROM workload WHERE name = $1 FOR UPDATE", w.name
                )
            else:
                # A new workload deploys a new spec: frozen like a change (refused after the
                # INSERT, whose row the refusal rolls back).
                await freeze_gate.gate(
                    conn, w.name, override=override_freeze, reason=reason, actor=actor
                )
                await _record_revision(conn, row, actor=actor, reason=reason, same_as=None)
        if old is None and row is None:
            raise FailedPrecondition(
                f'workload "{w.name}" was created and removed while this apply ran; apply again'
            )
        if old is not None and row is None:
            if old["deleting"]:
                raise FailedPrecondition(
                    f'workload "{w.name}" is being deleted; wait until `keelctl get '
                    f"workloads` no longer lists it, then apply again"
                )
            new_values = {
                "kind": w.kind.value,
                "replicas": w.replicas,
                "max_unavailable": w.max_unavailable,
                "max_surge": w.max_surge,
                "selector": w.selector,
                "deadline_ms": w.deadline_ms,
            }
            if old["kind"] != w.kind.value:
                raise FailedPrecondition(
                    f'workload "{w.name}" is a {old["kind"]}; kind cannot change — delete it '
                    f"and apply it again as a {w.kind.value}"
                )
            spec_changed = old["spec"] != spec
            policy_changed = RolloutPolicy.from_json(old["rollout"]) != w.rollout
            if (
                not spec_changed
                and not policy_changed
                and all(old[k] == new_values[k] for k in _IN_PLACE_FIELDS)
            ):
                return workload_row(old), "unchanged"
            desired_changed = spec_changed or any(old[k] != new_values[k] for k in _DESIRED_FIELDS)
            generations = list(old["spec_generations"])
            # A policy that no longer has canaries lets waiting ones go on as replicas.
            canary = old["canary_pending"] and w.rollout.canary > 0
            if spec_changed:
                same = await conn.fetch(
                    """SELECT revision, completed_at IS NOT NULL AS completed
                       FROM workload_revision
                       WHERE workload = $1 AND spec = $2::jsonb ORDER BY revision""",
                    w.name,
                    spec,
                )
                # Instances of an earlier revision with this spec are current again whatever
                # became of it; but only a spec that was once fully ready is a rollback (not
                # frozen, no canary): one that crashed or was never promoted is a new rollout.
                completed = [r["revision"] for r in same if r["completed"]]
                if rollback_to in completed or (always_rollback and rollback_to is not None):
                    same_as = rollback_to
                else:
                    same_as = completed[0] if completed else None
                if same_as is None:  # a rollback is never frozen
                    await freeze_gate.gate(
                        conn, w.name, override=override_freeze, reason=reason, actor=actor
                    )
                generations = [r["revision"] for r in same] + [old["generation"] + 1]
                # A rollback returns to a spec that ran before: no canary. A first rollout
                # has nothing to run beside.
                canary = (
                    w.rollout.canary > 0
                    and same_as is None
                    and await conn.fetchval(
                        """SELECT EXISTS (SELECT 1 FROM instance
                                          WHERE workload = $1 AND desired <> 'REMOVED')""",
                        w.name,
                    )
                )
            row = await conn.fetchrow(
                """UPDATE workload SET replicas = $2, max_unavailable = $3, max_surge = $4,
                          selector = $5, deadline_ms = $6, spec = $7,
                          generation = generation + $8::int, updated_at = now(),
                          trace_context = $9, version = nextval('workload_version'),
                          desired_version = nextval('workload_version'),
                          desired_changed_at = CASE WHEN $10 AND NOT desired_pending
                                                    THEN clock_timestamp()
                                                    ELSE desired_changed_at END,
                          desired_pending = desired_pending OR $10,
                          rollout = $11, spec_generations = $12, canary_pending = $13
                   WHERE name = $1 RETURNING *""",
                w.name,
                w.replicas,
                w.max_unavailable,
                w.max_surge,
                w.selector,
                w.deadline_ms,
                spec,
                1 if spec_changed else 0,
                trace_context,
                desired_changed,
                w.rollout.to_json(),
                generations,
                canary,
            )
            if spec_changed and row is not None:
                await _record_revision(conn, row, actor=actor, reason=reason, same_as=same_as)
            elif old["canary_pending"] and not canary:
                await conn.execute(
                    """UPDATE workload_revision SET state = 'PROGRESSING', state_since = now(),
                              promoted_at = now(), promoted_by = $3
                       WHERE workload = $1 AND revision = $2 AND state = 'AWAITING_PROMOTION'""",
                    w.name,
                    old["generation"],
                    actor,
                )
            result = "configured"
        assert row is not None
        message = f"{result}, generation {row['generation']}, replicas {w.replicas}"
        if same_as is not None:
            message += f", the spec of revision {same_as} (a rollback: its instances are kept)"
        if reason:
            message += f": {reason}"
        await record_event(conn, f"workload/{w.name}", "WorkloadApplied", message, actor=actor)
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            WORKLOAD_CHANNEL,
            workload_payload(w.name, row["version"]),
        )
        return workload_row(row), result

    async def get_workload(self, name: str) -> WorkloadRow:
        row = await self.pool.fetchrow("SELECT * FROM workload WHERE name = $1", name)
        if row is None:
            raise NotFound(f'workload "{name}" not found')
        return workload_row(row)

    async def list_workloads(self) -> list[WorkloadRow]:
        rows = await self.pool.fetch("SELECT * FROM workload ORDER BY name")
        return decode_each(rows, workload_row, what="workload")

    async def workload_names(self) -> list[str]:
        return [r["name"] for r in await self.pool.fetch("SELECT name FROM workload")]

    async def delete_workload(
        self, name: str, *, actor: str = "", once: Once[WorkloadRow] | None = None
    ) -> WorkloadRow:
        """Marks the workload deleting; the controller removes its instances, then the row."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(conn, once, lambda: self._delete(conn, name, actor=actor))

    async def _delete(self, conn: Conn, name: str, *, actor: str) -> WorkloadRow:
        row = await conn.fetchrow(
            # A second delete changes nothing the first did not: the clock stays.
            """UPDATE workload SET deleting = true, updated_at = now(),
                      desired_changed_at = CASE WHEN deleting THEN desired_changed_at
                                                ELSE clock_timestamp() END,
                      desired_pending = true,
                      version = CASE WHEN deleting THEN version
                                     ELSE nextval('workload_version') END,
                      desired_version = CASE WHEN deleting THEN desired_version
                                             ELSE nextval('workload_version') END
               WHERE name = $1 RETURNING *""",
            name,
        )
        if row is None:
            raise NotFound(f'workload "{name}" not found')
        await record_event(conn, f"workload/{name}", "WorkloadDeleted", "deleting", actor=actor)
        await conn.execute(
            "SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, workload_payload(name, row["version"])
        )
        return workload_row(row)

    async def finish_deleted_workload(self, name: str, *, epoch: int | None) -> bool:
        """Drops a deleting workload whose instances are all gone. True when it did."""
        async with self.pool.acquire() as conn, conn.transaction():
            await check_epoch(conn, epoch)
            status = await conn.execute(
                """DELETE FROM workload w WHERE name = $1 AND deleting
                   AND NOT EXISTS (SELECT 1 FROM instance WHERE workload = w.name)""",
                name,
            )
            if status.endswith(" 1"):
                await record_event(
                    conn, f"workload/{name}", "WorkloadGone", "every instance removed"
                )
                return True
            return False


async def _record_revision(
    conn: Conn, row: asyncpg.Record, *, actor: str, reason: str, same_as: int | None
) -> None:
    """Keeps the workload's new spec as its revision `row.generation`; the revision it
    replaces, if still rolling out, is superseded; revisions past the history are pruned."""
    await conn.execute(
        """UPDATE workload_revision SET state = 'SUPERSEDED', state_since = now()
           WHERE workload = $1 AND revision < $2
             AND state IN ('PROGRESSING', 'AWAITING_PROMOTION')""",
        row["name"],
        row["generation"],
    )
    await conn.execute(
        """INSERT INTO workload_revision (workload, revision, spec, actor, reason, same_as,
                                          state)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        row["name"],
        row["generation"],
        row["spec"],
        actor,
        reason,
        same_as,
        "AWAITING_PROMOTION" if row["canary_pending"] else "PROGRESSING",
    )
    # Like a Deployment's revisionHistoryLimit: the newest REVISION_HISTORY revisions, and
    # older ones only while instances of them remain (whose spec a rollback must still find:
    # `spec_generations`) or when it is the newest that was fully ready (undo's default).
    await conn.execute(
        """DELETE FROM workload_revision r
           WHERE r.workload = $1 AND r.revision <= $2::bigint - $3::int
             AND NOT EXISTS (SELECT 1 FROM instance i
                             WHERE i.workload = r.workload AND i.generation = r.revision)
             AND r.revision <> COALESCE(
                 (SELECT max(c.revision) FROM workload_revision c
                  WHERE c.workload = $1 AND c.completed_at IS NOT NULL AND c.revision < $2::bigint),
                 0)""",
        row["name"],
        row["generation"],
        REVISION_HISTORY,
    )
