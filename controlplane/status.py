"""Observed state in Postgres: agent reports, convergence, stuck marks, backlog and events.

Neighbours: `store` owns desired state (workloads, plans, hosts) and the row types this module
reads; `reports` batches agent reports into `write_reports`; the stuck controller
(`controlplane.stuck`) decides and calls `mark_stuck` / `record_unconverged`; the metrics it
exports come from `backlog`, `count_slow` and the convergence list `write_reports` returns.

Convergence is timed in database time: from the desired change's `desired_changed_at` (when
the change became desired: the operator's write of its workload, or the fencing decision; see
`plan_write.change_clock`) to the report that shows it converged (`now()` of the report's
transaction), so clocks of control-plane replicas and agents do not enter into it, and time
waiting in the control plane's own queue counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from controlplane.fleet_index import Delta, InstanceRecord
from controlplane.records import INSTANCE_COLUMNS, instance_record
from controlplane.sql import (
    WORKLOAD_CHANNEL,
    Database,
    Versions,
    bump_versions,
    decode_each,
    notify,
    record_event,
    workload_payload,
)
from controlplane.store import Report
from controlplane.view import StuckState
from controlplane.workload_store import stuck_state
from keel.model import Change, Desired, Phase, change_of, converged


@dataclass(frozen=True)
class ReportOutcome:
    """What a report batch changed: workloads to look at again, changes that converged, and the
    batch's writes as the leader's cache applies them (one per workload that changed)."""

    workloads: set[str] = field(default_factory=set)
    converged: list[tuple[str, float]] = field(default_factory=list)  # (change, seconds)
    deltas: list[Delta] = field(default_factory=list)


@dataclass(frozen=True)
class Backlog:
    instances: int  # instances not converged now
    oldest_change_s: float  # age of the oldest desired change not yet converged (0: none)


@dataclass(frozen=True)
class StuckMark:
    """A stuck verdict to record: reason '' clears it."""

    kind: str  # instance | workload
    name: str
    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    object: str
    kind: str
    actor: str
    message: str


def _cached_fields(r: asyncpg.Record | Report) -> tuple[object, ...]:
    """What the leader's cache holds of an instance that a report can change."""
    if isinstance(r, Report):
        return (str(r.phase), r.ready, r.reason, r.message, r.agent_stuck, True)
    return (r["phase"], r["ready"], r["reason"], r["message"], r["agent_stuck"], r["observed"])


def _serving(phase: str, ready: bool) -> bool:
    return phase == Phase.RUNNING and ready


def _readiness_events(
    batch: Sequence[Report], before: dict[str, asyncpg.Record]
) -> tuple[list[str], list[str], list[str]]:
    """Each instance that starts or stops serving (RUNNING and ready) goes into the history, in
    the batch's own UPDATE statement (objects, kinds, messages): what served at every moment
    can be rebuilt from the events in order, and a drain's or rollout's budget checked after
    the fact, not on its controller's word."""
    turned = [
        r
        for r in batch
        if _serving(r.phase, r.ready) != _serving((b := before[r.instance_id])["phase"], b["ready"])
    ]
    return (
        [f"instance/{r.instance_id}" for r in turned],
        ["InstanceReady" if _serving(r.phase, r.ready) else "InstanceNotReady" for r in turned],
        [f"{r.phase} on {r.host}" + (f" (pid {r.pid})" if r.pid else "") for r in turned],
    )


def _deltas(
    versions: Sequence[Versions],
    updated: Sequence[asyncpg.Record],
    gone: Sequence[asyncpg.Record],
) -> list[Delta]:
    """The batch's writes per workload that took a new version, as the cache applies them."""
    upserts: dict[str, list[InstanceRecord]] = {}
    for rec in decode_each(updated, instance_record, what="instance"):
        upserts.setdefault(rec.workload, []).append(rec)
    deletes: dict[str, list[str]] = {}
    for g in gone:
        deletes.setdefault(g["workload"], []).append(g["id"])
    deltas = []
    for v in versions:
        deleted = deletes.get(v.workload, [])
        deltas.append(
            Delta(
                v.workload,
                from_version=v.was,
                to_version=v.version,
                # Deleted rows were updated first: the deletion is what stands.
                upserts=tuple(i for i in upserts.get(v.workload, ()) if i.id not in deleted),
                deletes=tuple(deleted),
            )
        )
    return deltas


class StatusStore:
    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self.pool = Database.of(pool)  # asyncpg's errors become Keel's there

    async def write_reports(self, reports: Sequence[Report]) -> ReportOutcome:
        """Writes a batch of agent reports in one transaction (one statement per kind of write).

        An agent can only report on its own host's instances. A report confirming a tombstone
        deletes the row. Returns the workloads whose instances changed what the leader's cache
        holds of them (phase, readiness, reason, message, the agent's stuck verdict, a first
        report, or existence): each takes a new version and is notified with it, so their
        controllers look again and a plan made before this batch is refused. Also returns the
        desired changes that this batch saw converge, with how long each took.
        """
        if not reports:
            return ReportOutcome()
        # The last report per instance wins within a batch.
        latest: dict[str, Report] = {}
        for r in reports:
            latest[r.instance_id] = r
        batch = list(latest.values())
        ids = [r.instance_id for r in batch]
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock order (see `sql`): the workloads first, in name order, as plans and fencing
            # take them, then the instances. An instance's workload never changes, so it can be
            # read before the locks.
            # Two statements by primary key: as one (a semi-join), a prepared statement's generic
            # plan scans every workload.
            names = await conn.fetch(
                "SELECT DISTINCT workload FROM instance WHERE id = ANY($1::text[])", ids
            )
            await conn.execute(
                """SELECT 1 FROM workload WHERE name = ANY($1::text[])
                   ORDER BY name FOR NO KEY UPDATE""",
                [r["workload"] for r in names],
            )
            # Then the rows (in id order), read as they are now: a plan that tombstones one of
            # them either committed before (we see REMOVED) or waits for us.
            before = {
                r["id"]: r
                for r in await conn.fetch(
                    """SELECT id, host, workload, desired, phase, ready, converged_at, reason,
                              message, agent_stuck, observed_at IS NOT NULL AS observed,
                              extract(epoch FROM now() - desired_changed_at)::float8 AS age
                       FROM instance WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE""",
                    ids,
                )
            }
            # An agent can only report on its own host's instances.
            batch = [r for r in batch if (b := before.get(r.instance_id)) and b["host"] == r.host]
            now_converged = [
                converged(Desired(before[r.instance_id]["desired"]), r.phase, r.ready)
                for r in batch
            ]
            # RETURNING what the cache holds of each row (`records`); the report's columns
            # are named apart (u.r_*) so that those names are the instance's. The readiness
            # events go in with it (a CTE), not as a statement of their own: one round trip
            # less in every batch's transaction, which holds the instances' row locks.
            updated = await conn.fetch(
                f"""WITH readiness AS (
                       INSERT INTO event (object, kind, message)
                       SELECT * FROM unnest($13::text[], $14::text[], $15::text[]))
                   UPDATE instance i SET phase = u.r_phase, pid = u.r_pid,
                          restart_count = u.r_restarts, last_exit = u.r_last_exit,
                          reason = u.r_reason, message = u.r_message, ports = u.r_ports::jsonb,
                          ready = u.r_ready, started_at = u.r_started_at, observed_at = now(),
                          agent_stuck = u.r_agent_stuck,
                          converged_at = CASE WHEN i.converged_at IS NULL AND u.r_converged
                                              THEN now() ELSE i.converged_at END,
                          unconverged_since = CASE WHEN u.r_converged THEN NULL
                                                   ELSE coalesce(i.unconverged_since, now()) END
                   FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::bool[],
                               $10::timestamptz[], $11::bool[], $12::bool[])
                        AS u(r_id, r_phase, r_pid, r_restarts, r_last_exit, r_reason, r_message,
                             r_ports, r_ready, r_started_at, r_agent_stuck, r_converged)
                   WHERE i.id = u.r_id
                   RETURNING {INSTANCE_COLUMNS}""",
                [r.instance_id for r in batch],
                [r.phase for r in batch],
                [r.pid for r in batch],
                [r.restart_count for r in batch],
                [r.last_exit for r in batch],
                [r.reason for r in batch],
                [r.message for r in batch],
                [json.dumps(r.ports) for r in batch],
                [r.ready for r in batch],
                [r.started_at for r in batch],
                [r.agent_stuck for r in batch],
                now_converged,
                *_readiness_events(batch, before),
            )
            workloads: set[str] = set()
            cached: set[str] = set()  # workloads whose cached instances changed
            done: list[tuple[str, float]] = []
            for r, ok in zip(batch, now_converged, strict=True):
                b = before[r.instance_id]
                if (b["phase"], b["ready"]) != (r.phase, r.ready):
                    workloads.add(b["workload"])
                if _cached_fields(b) != _cached_fields(r):
                    cached.add(b["workload"])
                if ok and b["converged_at"] is None:
                    done.append((change_of(Desired(b["desired"])), max(0.0, b["age"])))
            removed = [(r.instance_id, r.host) for r in batch if r.removed]
            gone: list[asyncpg.Record] = []
            if removed:
                gone = await conn.fetch(
                    """DELETE FROM instance i USING unnest($1::text[], $2::text[]) AS u(id, host)
                       WHERE i.id = u.id AND i.host = u.host AND i.desired = 'REMOVED'
                       RETURNING i.id, i.workload, i.stuck_reason,
                                 extract(epoch FROM now() - i.desired_changed_at)::float8
                                     AS seconds""",
                    [i for i, _ in removed],
                    [h for _, h in removed],
                )
                workloads |= {r["workload"] for r in gone}
                done += [(Change.REMOVE, max(0.0, r["seconds"])) for r in gone]
                for g in gone:
                    if g["stuck_reason"]:
                        # The history shows every detection ends, removal included.
                        await record_event(
                            conn,
                            f"instance/{g['id']}",
                            "StuckCleared",
                            f"was {g['stuck_reason']}; the instance was removed",
                        )
            cached |= {r["workload"] for r in gone}
            versions = await bump_versions(conn, sorted(cached), desired=False)
            await notify(
                conn, WORKLOAD_CHANNEL, [workload_payload(v.workload, v.version) for v in versions]
            )
        deltas = _deltas(versions, updated, gone)
        return ReportOutcome(workloads=workloads, converged=done, deltas=deltas)

    async def count_slow(self, *, threshold_s: float) -> dict[str, int]:
        """Marks desired changes unconverged for longer than the threshold, once each.

        Returns how many of each change kind passed the threshold since the last call, so
        keel_changes_slow_total counts changes that never converge too.
        """
        rows = await self.pool.fetch(
            """UPDATE instance SET slow_counted = true
               WHERE converged_at IS NULL AND NOT slow_counted
                 AND desired_changed_at < now() - make_interval(secs => $1)
               RETURNING desired""",
            threshold_s,
        )
        counts: dict[str, int] = {}
        for r in rows:
            change = change_of(Desired(r["desired"]))
            counts[change] = counts.get(change, 0) + 1
        return counts

    async def backlog(self) -> Backlog:
        row = await self.pool.fetchrow(
            # unconverged_since is set by every desired change and by every report that
            # `keel.model.converged` judges unconverged, and cleared by one it judges
            # converged: counting it restates no rule.
            """SELECT count(*) FILTER (WHERE unconverged_since IS NOT NULL)::int AS instances,
                      coalesce(extract(epoch FROM now() - min(desired_changed_at)
                                       FILTER (WHERE converged_at IS NULL)), 0)::float8 AS oldest
               FROM instance"""
        )
        assert row is not None
        return Backlog(instances=row["instances"], oldest_change_s=max(0.0, row["oldest"]))

    async def record_unconverged(self, since: dict[str, bool]) -> dict[str, datetime | None]:
        """Stamps (True) or clears (False) workloads' unconverged_since, where it changes;
        returns every named workload's value now, changed or not (a caller whose copy was
        behind is corrected rather than asking again and again)."""
        if not since:
            return {}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE workload w SET unconverged_since = CASE
                       WHEN u.unconverged THEN coalesce(w.unconverged_since, now()) ELSE NULL END
                   FROM unnest($1::text[], $2::bool[]) AS u(name, unconverged)
                   WHERE w.name = u.name
                     AND (w.unconverged_since IS NULL) = u.unconverged""",
                list(since),
                list(since.values()),
            )
            rows = await conn.fetch(
                "SELECT name, unconverged_since FROM workload WHERE name = ANY($1::text[])",
                list(since),
            )
        return {r["name"]: r["unconverged_since"] for r in rows}

    async def mark_stuck(
        self, marks: Sequence[StuckMark]
    ) -> dict[tuple[str, str], StuckState | None]:
        """Records stuck verdicts (reason '' clears), each with a StuckDetected/Cleared event.

        A verdict whose reason is unchanged only refreshes the message; `since` stays. Returns
        what is recorded now for each (kind, name) marked, changed or not (a caller whose copy
        was behind is corrected rather than marking again and again).
        """
        recorded: dict[tuple[str, str], StuckState | None] = {}
        if not marks:
            return recorded
        async with self.pool.acquire() as conn, conn.transaction():
            for table in ("instance", "workload"):
                key = "id" if table == "instance" else "name"
                subset = [m for m in marks if m.kind == table]
                if not subset:
                    continue
                # table and key are fixed names above, never input.
                rows = await conn.fetch(
                    f"""UPDATE {table} t SET
                           stuck_since = CASE WHEN u.reason = '' THEN NULL
                                              WHEN t.stuck_reason = u.reason THEN t.stuck_since
                                              ELSE now() END,
                           stuck_reason = u.reason, stuck_message = u.message
                       FROM {table} o,
                            unnest($1::text[], $2::text[], $3::text[]) AS u(name, reason, message)
                       WHERE t.{key} = u.name AND o.{key} = t.{key}
                         AND (o.stuck_reason, o.stuck_message)
                             IS DISTINCT FROM (u.reason, u.message)
                       RETURNING t.{key} AS name, o.stuck_reason AS was, u.reason, u.message,
                                 t.stuck_since""",
                    [m.name for m in subset],
                    [m.reason for m in subset],
                    [m.message for m in subset],
                )
                for r in rows:
                    recorded[(table, r["name"])] = (
                        StuckState(r["reason"], r["stuck_since"], r["message"])
                        if r["reason"]
                        else None
                    )
                    if r["reason"] == r["was"]:
                        continue  # only the message moved
                    obj = f"{table}/{r['name']}"
                    if r["reason"]:
                        # The summary line: a CRASH_LOOP message goes on with stderr.
                        summary = r["message"].strip().split("\n", 1)[0][:300]
                        await record_event(conn, obj, "StuckDetected", f"{r['reason']}: {summary}")
                    else:
                        await record_event(conn, obj, "StuckCleared", f"was {r['was']}")
                unchanged = [m.name for m in subset if (table, m.name) not in recorded]
                if unchanged:
                    # table and key are fixed names above, never input.
                    for r in await conn.fetch(
                        f"""SELECT {key} AS name, stuck_reason, stuck_since, stuck_message
                            FROM {table} WHERE {key} = ANY($1::text[])""",
                        unchanged,
                    ):
                        recorded[(table, r["name"])] = stuck_state(r)
        return recorded

    async def list_events(self, *, obj: str | None, limit: int) -> list[Event]:
        """The newest `limit` events, oldest first; a workload also matches its instances."""
        # Instance ids are WORKLOAD-GENERATION-HEX; workload names are DNS labels, so this
        # pattern needs no escaping and does not match workload "web-1"'s instances for "web".
        pattern = None
        if obj and obj.startswith("workload/"):
            pattern = "^instance/" + obj.removeprefix("workload/") + "-[0-9]+-[0-9a-f]+$"
        rows = await self.pool.fetch(
            """SELECT * FROM (
                   SELECT * FROM event
                   WHERE $1::text IS NULL OR object = $1
                      OR ($2::text IS NOT NULL AND object ~ $2)
                   ORDER BY id DESC LIMIT $3) AS newest
               ORDER BY id""",
            obj or None,
            pattern,
            limit,
        )
        return [
            Event(r["id"], r["at"], r["object"], r["kind"], r["actor"], r["message"]) for r in rows
        ]
