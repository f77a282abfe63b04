"""The drain controller: carries drain operations out, one pass per operation, run by
`reconcile.Runner` on the leader.

Each pass reads the operation (its record decides what is left to do), takes the drained hosts'
workloads and all their instances from the leader's cache (`cache.FleetCache`: the workloads
with instances on those hosts, no fleet-wide read), asks the pure planner (`drain.plan_step`)
for the next step and writes it: replacements and stops through `store.apply_plan`, each in one
transaction fenced by the leader epoch, the workload's version and the hosts the plan relied on,
and refused once the operation is no longer RUNNING (a cancel waits for a write under way, and
every later write sees it); daemons through `store.mark_drained`. Then it records the progress
(moved, remaining, blocked, every blocker with since when, the ETA from
`drain_plan.plan_drain`) in the operation.

Level-triggered and durable: the operation lives in Postgres, and a replacement names the
instance it replaces, so a pass after a restart or on a new leader finds the moves under way
where the last one left them and never starts one twice. At the deadline the operation ends
FAILED with its blockers and its hosts left cordoned, or with `on_deadline: force` stops what
remains and ends once it is gone; either way the decision is an event with the operation's
actor. Nothing is SUCCEEDED before every instance it moves has left the hosts (the agents
confirmed the stops).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from controlplane.cache import FleetCache
from controlplane.drain import DrainFleet, MoveKind, Options, Step, plan_step
from controlplane.drain_metrics import Running
from controlplane.drain_plan import Timing, plan_drain, timing_of
from controlplane.drain_progress import (
    age,
    failed_text,
    progress_of,
    stuck_event,
    worth_writing,
)
from controlplane.errors import NotFound
from controlplane.metrics import Metrics
from controlplane.operation_store import guard_running
from controlplane.operations import (
    OnDeadline,
    OperationRow,
    OperationState,
    Progress,
)
from controlplane.plan_checks import Stale
from controlplane.plan_write import PlanWrite
from controlplane.reconcile import IDLE, Result, Term, requeue_after
from controlplane.store import Store
from controlplane.workload import hosts_seen
from keel.model import Change
from keel.spec import format_duration

log = structlog.get_logger("keel.drainer")

# How often a drain reads its workloads' observed start-to-ready times again (for its ETA).
OBSERVED_REFRESH_S = 10.0


@dataclass(frozen=True)
class DrainTimings:
    """The settings a drain waits by (`--drain-interval`, `--drain-replacement-timeout`,
    `--drain-stop-slack`, `--drain-blocked-after`)."""

    interval_s: float = 1.0
    replacement_timeout_s: float = 60.0
    stop_slack_s: float = 10.0
    blocked_after_s: float = 60.0


class DrainController:
    name = "drain"
    key_label = "operation"

    def __init__(
        self, store: Store, *, cache: FleetCache, metrics: Metrics, timings: DrainTimings
    ) -> None:
        self._store = store
        self._cache = cache
        self._metrics = metrics
        self._timings = timings
        # The workloads each running drain moved instances of at its last pass: a change to
        # one of them wakes the drain (`involving`).
        self._involved: dict[str, set[str]] = {}
        # Each running drain's figures at its last pass (keel_drain_* gauges, DRAIN_BLOCKED).
        self._running: dict[str, Running] = {}
        # Workloads' observed start-to-ready times for the ETA, and when they were read.
        self._observed: dict[str, float] = {}
        self._observed_at = -OBSERVED_REFRESH_S

    async def keys(self) -> list[str]:
        active = await self._store.active_operations()
        await self._count_operations()
        ids = {op.id for op in active}
        for gone in set(self._running) - ids:
            self._forget(gone)
        return sorted(ids)

    def blocked(self) -> int:
        """Running drains blocked past `--drain-blocked-after`: stuck, DRAIN_BLOCKED."""
        after = self._timings.blocked_after_s
        return sum(1 for d in self._running.values() if d.blocked_s >= after)

    def _forget(self, op_id: str) -> None:
        self._involved.pop(op_id, None)
        self._running.pop(op_id, None)
        self._metrics.drain.set_running(self._running.values())

    def involving(self, workload: str) -> list[str]:
        """The running drains that move instances of `workload`."""
        return [op for op, names in self._involved.items() if workload in names]

    async def reconcile(self, op_id: str, *, term: Term) -> Result:
        try:
            op: OperationRow | None = await self._store.get_operation(op_id)
        except NotFound:
            op = None
        if op is None or not op.state.active:
            self._forget(op_id)
            return IDLE
        bound = log.bind(operation=op.id, hosts=list(op.hosts))
        if op.state is OperationState.PENDING:
            op = await self._store.update_operation(
                op.id,
                epoch=term.epoch,
                state=OperationState.RUNNING,
                event=("DrainStarted", f"moving everything off {', '.join(op.hosts)}"),
                actor=op.actor,
            )
            if op is None:
                return IDLE
            bound.info("drain started")
            await self._count_operations()
        now = await self._store.now()
        draining = {h for o in await self._store.active_operations() for h in o.hosts}
        fleet = self._fleet(op, draining)
        options = self._options(op)
        step = plan_step(fleet, options, now=now)
        if not step.done and now >= op.deadline_at and not op.forced:
            deadline = format_duration(op.params.deadline_ms)
            if op.params.on_deadline is OnDeadline.FAIL:
                progress, _ = await self._progress(op, step, fleet, options, now, eta=False)
                message = failed_text(deadline, progress)
                await self._store.update_operation(
                    op.id,
                    epoch=term.epoch,
                    state=OperationState.FAILED,
                    progress=progress,
                    message=message,
                    event=("DrainFailed", message),
                    actor=op.actor,
                    hosts=op.hosts,
                )
                bound.warning("drain failed at its deadline", remaining=step.remaining,
                              blockers=len(step.blockers))  # fmt: skip
                await self._finished(op, "failed", now)
                return IDLE
            message = (
                f"the deadline ({deadline}) passed with {step.remaining} instance(s) left: "
                "stopping them now, budget or not (on_deadline: force)"
            )
            forced = await self._store.update_operation(
                op.id, epoch=term.epoch, forced=True, event=("DrainForced", message),
                actor=op.actor,
            )  # fmt: skip
            if forced is None:
                return IDLE
            op = forced
            bound.warning("drain forced at its deadline", remaining=step.remaining)
            options = self._options(op)
            step = plan_step(fleet, options, now=now)
        if step.done:
            await self._succeed(op, step, fleet, options, now, epoch=term.epoch)
            bound.info("drain succeeded", moved=op.progress.moved)
            await self._finished(op, "forced" if op.forced else "succeeded", now)
            return IDLE
        wrote = await self._write(op, step, epoch=term.epoch)
        progress, blocked_since = await self._progress(op, step, fleet, options, now, eta=True)
        event = stuck_event(op.progress, progress, now=now, since=blocked_since)
        if worth_writing(op.progress, progress) or blocked_since != op.blocked_since:
            await self._store.update_operation(
                op.id,
                epoch=term.epoch,
                progress=progress,
                blocked_since=blocked_since,
                event=event,
                actor="keel-controlplane",
            )
        self._running[op.id] = Running(
            remaining=progress.remaining,
            blocked=progress.blocked,
            eta_s=progress.eta_s,
            blocked_s=age(now, blocked_since),
            overdue_s=age(now, op.deadline_at),
        )
        self._metrics.drain.set_running(self._running.values())
        return requeue_after(0 if wrote else self._timings.interval_s)

    async def _progress(
        self,
        op: OperationRow,
        step: Step,
        fleet: DrainFleet,
        options: Options,
        now: datetime,
        *,
        eta: bool,
    ) -> tuple[Progress, datetime | None]:
        eta_s = None
        if eta:
            timings = await self._timing(list(fleet.workloads))
            eta_s = plan_drain(fleet, options, now=now, timings=timings).eta_s
        return progress_of(
            op, step, now=now, eta_s=eta_s, blocked_after_s=self._timings.blocked_after_s
        )

    async def _finished(self, op: OperationRow, result: str, now: datetime) -> None:
        started = op.started_at or op.created_at
        self._metrics.drain.observe_finished(result, age(now, started))
        self._forget(op.id)
        await self._count_operations()

    async def _count_operations(self) -> None:
        """keel_operations now, not only at the next resync (it changes when one starts or
        ends)."""
        self._metrics.drain.set_operations(await self._store.operation_counts())

    # -- reading ----------------------------------------------------------------------------

    def _fleet(self, op: OperationRow, draining: set[str]) -> DrainFleet:
        index = self._cache.index
        names = {name for host in op.hosts for name in index.workloads_on(host)}
        self._involved[op.id] = names
        workloads = {}
        instances = {}
        for name in sorted(names):
            entry = index.workload(name)
            if entry is not None:
                workloads[name] = entry.view
                instances[name] = list(entry.instances.values())
        return DrainFleet(
            targets=frozenset(op.hosts),
            hosts=self._cache.hosts,
            draining=draining,
            workloads=workloads,
            instances=instances,
            usage=self._cache.usage,
        )

    def _options(self, op: OperationRow) -> Options:
        return Options(
            max_parallel=op.params.max_parallel or None,
            ignore_daemons=op.params.ignore_daemons,
            force=op.forced,
            replacement_timeout_s=self._timings.replacement_timeout_s,
            stop_slack_s=self._timings.stop_slack_s,
        )

    async def _timing(self, names: Sequence[str]) -> dict[str, Timing]:
        """Each workload's start and stop times (`drain_plan.timing_of`): its observed
        start-to-ready time, read again every OBSERVED_REFRESH_S, else its spec's."""
        if time.monotonic() - self._observed_at >= OBSERVED_REFRESH_S:
            self._observed.update(await self._store.observed_start_s(names))
            self._observed_at = time.monotonic()
        out = {}
        for name in names:
            entry = self._cache.index.workload(name)
            if entry is not None:
                out[name] = timing_of(
                    entry.row.workload.spec, observed_start_s=self._observed.get(name)
                )
        return out

    # -- writing ----------------------------------------------------------------------------

    async def _write(self, op: OperationRow, step: Step, *, epoch: int | None) -> bool:
        """Writes the step, every workload in one transaction (each in a savepoint: one made
        from a stale read is refused alone); True if anything was written."""
        creates: dict[str, list[tuple[str, str]]] = {}
        removes: dict[str, list[str]] = {}
        for start in step.starts:
            creates.setdefault(start.workload, []).append((start.host, start.replaces))
        for stop in step.stops:
            removes.setdefault(stop.workload, []).append(stop.instance)
        plans: list[PlanWrite] = []
        for name in sorted(set(creates) | set(removes)):
            entry = self._cache.index.workload(name)
            if entry is None:
                continue
            places = [host for host, _ in creates.get(name, ())]
            plans.append(
                PlanWrite(
                    entry.row,
                    create_on=places,
                    remove=removes.get(name, []),
                    version=entry.version,
                    hosts_read=hosts_seen(self._cache, entry, places=places),
                    replaces=[replaces for _, replaces in creates.get(name, ())],
                    events=_move_events(op.id, name, creates.get(name, ()), step),
                    actor=op.actor,
                )
            )
        results = await self._store.apply_plans(
            plans, epoch=epoch, guard=lambda conn: guard_running(conn, op.id)
        )
        wrote = False
        for plan, result in zip(plans, results, strict=True):
            name, gone = plan.workload.workload.name, plan.remove
            if result.stale is not None:
                self._metrics.count_stale_write(self.name)
                self._metrics.drain.count_moves("stale")
                log.info("drain step refused: made from a stale read; reading again",
                         operation=op.id, workload=name, stale=result.stale)  # fmt: skip
                await self._cache.refresh([name])
                if result.stale_hosts:
                    await self._cache.refresh_placements(result.stale_hosts)
                wrote = True  # look again at once
                continue
            self._cache.apply(result.delta)
            self._metrics.count_changes(Change.CREATE, len(result.created))
            self._metrics.count_changes(Change.REMOVE, result.removed)
            for stop in step.stops:
                if stop.workload == name:
                    self._metrics.drain.count_moves(_MOVE_RESULT[stop.kind])
            wrote = wrote or bool(result.created or result.removed)
            log.info("drain moved", operation=op.id, workload=name, started=result.created,
                     stopping=gone)  # fmt: skip
        if step.evict_daemons:
            try:
                await self._store.mark_drained(op.id, step.evict_daemons, epoch=epoch)
            except Stale:
                return wrote  # cancelled meanwhile: the next pass sees it
            await self._cache.refresh_hosts(step.evict_daemons)
            self._metrics.drain.count_moves("daemon", len(step.evict_daemons))
            wrote = True
        return wrote

    async def _succeed(
        self,
        op: OperationRow,
        step: Step,
        fleet: DrainFleet,
        options: Options,
        now: datetime,
        *,
        epoch: int | None,
    ) -> None:
        progress, _ = await self._progress(op, step, fleet, options, now, eta=False)
        started = op.started_at or op.created_at
        took = format_duration(round(max(0.0, (now - started).total_seconds()) * 1000))
        message = f"{progress.moved} instance(s) moved off {', '.join(op.hosts)} in {took}"
        if op.forced:
            message += " (forced at the deadline: some were stopped without a replacement)"
        message += "; the hosts stay cordoned until `keelctl uncordon`"
        await self._store.update_operation(
            op.id,
            epoch=epoch,
            state=OperationState.SUCCEEDED,
            progress=dataclasses.replace(progress, eta_s=0.0),
            blocked_since=None,
            message=message,
            event=("DrainSucceeded", message),
            actor=op.actor,
        )


def _move_events(
    op_id: str, name: str, creates: Sequence[tuple[str, str]], step: Step
) -> list[tuple[str, str, str]]:
    """The DrainMove events of one workload's moves in a step (recorded with its write)."""
    return [
        (f"instance/{replaces}", "DrainMove", f"drain {op_id}: replacement starting on {host}")
        for host, replaces in creates
    ] + [
        (
            f"instance/{stop.instance}",
            "DrainMove",
            f"drain {op_id}: stopping ({stop.kind.value}; {name} {stop.ready} ready "
            f"after it, at least {stop.floor} must stay)",
        )
        for stop in step.stops
        if stop.workload == name
    ]


_MOVE_RESULT = {
    MoveKind.MAKE_BEFORE_BREAK: "replaced",
    MoveKind.STOP_BEFORE_START: "stopped_first",
    MoveKind.FORCE: "forced",
    MoveKind.DAEMON: "daemon",
}
