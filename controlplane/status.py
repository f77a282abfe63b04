"""Observed state in Postgres: agent reports, convergence, stuck marks, backlog and events.

Neighbours: `store` owns desired state (workloads, plans, hosts) and the row types this module
reads; `reports` batches agent reports into `write_reports`; the stuck controller
(`controlplane.stuck`) decides and calls `mark_stuck` / `record_unconverged`; the metrics it
exports come from `backlog`, `count_slow` and the convergence list `write_reports` returns.

Convergence is timed in database time: from the desired change's `desired_changed_at` (when
the change became desired: the operator's write of its workload, or the fencing decision; see
`instance_store.change_clock`) to the report that shows it converged (`now()` of the report's
transaction), so clocks of control-plane replicas and agents do not enter into it, and time
waiting in the control plane's own queue counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from controlplane.sql import WORKLOAD_CHANNEL, Database, record_event
from controlplane.store import Report
from keel.model import Change, Desired, change_of, converged


@dataclass(frozen=True)
class ReportOutcome:
    """What a report batch changed: workloads to look at again, and changes that converged."""

    workloads: set[str] = field(default_factory=set)
    converged: list[tuple[str, float]] = field(default_factory=list)  # (change, seconds)


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


class StatusStore:
    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self.pool = Database.of(pool)  # asyncpg's errors become Keel's there

    async def write_reports(self, reports: Sequence[Report]) -> ReportOutcome:
        """Writes a batch of agent reports in one transaction (one statement per kind of write).

        An agent can only report on its own host's instances. A report confirming a tombstone
        deletes the row. Returns the workloads whose instances changed phase, readiness or
        existence (their controllers should look again) and the desired changes that this
        batch saw converge, with how long each took.
        """
        if not reports:
            return ReportOutcome()
        # The last report per instance wins within a batch.
        latest: dict[str, Report] = {}
        for r in reports:
            latest[r.instance_id] = r
        batch = list(latest.values())
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock the rows first (in id order) and read them as they are now: a plan that
            # tombstones one of them either committed before (we see REMOVED) or waits for us.
            before = {
                r["id"]: r
                for r in await conn.fetch(
                    """SELECT id, host, workload, desired, phase, ready, converged_at,
                              extract(epoch FROM now() - desired_changed_at)::float8 AS age
                       FROM instance WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE""",
                    [r.instance_id for r in batch],
                )
            }
            # An agent can only report on its own host's instances.
            batch = [r for r in batch if (b := before.get(r.instance_id)) and b["host"] == r.host]
            now_converged = [
                converged(Desired(before[r.instance_id]["desired"]), r.phase, r.ready)
                for r in batch
            ]
            await conn.execute(
                """UPDATE instance i SET phase = u.phase, pid = u.pid,
                          restart_count = u.restart_count, last_exit = u.last_exit,
                          reason = u.reason, message = u.message, ports = u.ports::jsonb,
                          ready = u.ready, started_at = u.started_at, observed_at = now(),
                          agent_stuck = u.agent_stuck,
                          converged_at = CASE WHEN i.converged_at IS NULL AND u.converged
                                              THEN now() ELSE i.converged_at END,
                          unconverged_since = CASE WHEN u.converged THEN NULL
                                                   ELSE coalesce(i.unconverged_since, now()) END
                   FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::bool[],
                               $10::timestamptz[], $11::bool[], $12::bool[])
                        AS u(id, phase, pid, restart_count, last_exit, reason, message, ports,
                             ready, started_at, agent_stuck, converged)
                   WHERE i.id = u.id""",
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
            )
            workloads: set[str] = set()
            done: list[tuple[str, float]] = []
            for r, ok in zip(batch, now_converged, strict=True):
                b = before[r.instance_id]
                if (b["phase"], b["ready"]) != (r.phase, r.ready):
                    workloads.add(b["workload"])
                if ok and b["converged_at"] is None:
                    done.append((change_of(Desired(b["desired"])), max(0.0, b["age"])))
            removed = [(r.instance_id, r.host) for r in batch if r.removed]
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
            for name in sorted(workloads):
                await conn.execute("SELECT pg_notify($1, $2)", WORKLOAD_CHANNEL, name)
            return ReportOutcome(workloads=workloads, converged=done)

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

    async def record_unconverged(self, since: dict[str, bool]) -> None:
        """Stamps (True) or clears (False) workloads' unconverged_since, where it changes."""
        if not since:
            return
        await self.pool.execute(
            """UPDATE workload w SET unconverged_since = CASE
                   WHEN u.unconverged THEN coalesce(w.unconverged_since, now()) ELSE NULL END
               FROM unnest($1::text[], $2::bool[]) AS u(name, unconverged)
               WHERE w.name = u.name
                 AND (w.unconverged_since IS NULL) = u.unconverged""",
            list(since),
            list(since.values()),
        )

    async def mark_stuck(self, marks: Sequence[StuckMark]) -> None:
        """Records stuck verdicts (reason '' clears), each with a StuckDetected/Cleared event.

        A verdict whose reason is unchanged only refreshes the message; `since` stays.
        """
        if not marks:
            return
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
                       RETURNING t.{key} AS name, o.stuck_reason AS was, u.reason, u.message""",
                    [m.name for m in subset],
                    [m.reason for m in subset],
                    [m.message for m in subset],
                )
                for r in rows:
                    if r["reason"] == r["was"]:
                        continue  # only the message moved
                    obj = f"{table}/{r['name']}"
                    if r["reason"]:
                        # The summary line: a CRASH_LOOP message goes on with stderr.
                        summary = r["message"].strip().split("\n", 1)[0][:300]
                        await record_event(conn, obj, "StuckDetected", f"{r['reason']}: {summary}")
                    else:
                        await record_event(conn, obj, "StuckCleared", f"was {r['was']}")

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
