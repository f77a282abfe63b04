"""The stuck detector: which objects are not converging, why, and what to do about it.

The verdicts are pure (`controlplane.verdicts`): from an object's desired and observed state,
its host and its deadline, a reason from the closed set in `keel.stuck` (or None).
`StuckDetector` is the leader's periodic pass (a keyed reconcile run by
`reconcile.Runner`, requeued every interval): it reads the fleet from the leader's cache
(`controlplane.cache`: no fleet-wide query), judges every instance that can be stuck (not
converged, marked stuck, or on a host that is not READY: the cache keeps that set as changes
arrive), plans each workload that changed against the cache's per-host usage (so each plan
costs what its workload has), records the verdicts that changed (with StuckDetected /
StuckCleared events) and refreshes the backlog, slow-change and stuck gauges. What it records
it also applies to the cache.

An object is stuck once it has been unconverged past its workload's deadline; terminal states
the agent sees for itself (START_FAILED, CRASH_LOOP) are stuck at once. A workload whose
reconcile keeps failing (the workload runner's `failures`) is RECONCILE_FAILING past its
deadline, or at once for a permanent error; this is the one place that verdict is recorded.
A failed rollout that Keel holds is ROLLOUT_FAILED at once, with its revision's failure record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import structlog

from controlplane.cache import FleetCache
from controlplane.fleet_index import FleetIndex, InstanceRecord, WorkloadEntry
from controlplane.metrics import Metrics
from controlplane.reconcile import ReconcileFailure, Result, Term, requeue_after
from controlplane.rollout import WorkloadPlan, plan_workload
from controlplane.rollout_judge import ACTOR as HOLDER
from controlplane.status import StatusStore, StuckMark
from controlplane.store import Store, StuckState, WorkloadRow
from controlplane.verdicts import (
    PAUSED_AFTER_S,
    Verdict,
    held_by_keel,
    judge_instance,
    judge_workload,
    may_be_stuck,
    surely_unconverged,
    workload_converged,
)
from keel.model import HostState
from keel.stuck import Reason

log = structlog.get_logger("keel.stuck")

# The one key of the stuck detector: every pass judges the whole fleet.
KEY = "fleet"

# A workload's deadline when its instance outlives it in the cache (never for long).
DEFAULT_DEADLINE_S = 120.0

# A desired change not converged after this long counts in keel_changes_slow_total (the SLO's
# threshold: 99% of changes converge within 60 s).
SLOW_AFTER_S = 60.0


class StuckDetector:
    """The leader's periodic pass over the fleet: stuck verdicts, backlog and slow changes."""

    name = "stuck"
    key_label = "pass"

    def __init__(
        self,
        store: Store,
        status: StatusStore,
        *,
        cache: FleetCache,
        metrics: Metrics,
        interval_s: float,
        reconcile_failures: Callable[[], Mapping[str, ReconcileFailure]] = dict,
        slow_after_s: float = SLOW_AFTER_S,
        drains_blocked: Callable[[], int] = lambda: 0,
        canary_waiting_after_s: float = 3600.0,
        rollout_paused_after_s: float = PAUSED_AFTER_S,
    ) -> None:
        self._store = store
        self._status = status
        self._cache = cache
        self._metrics = metrics
        self._interval_s = interval_s
        self._failures = reconcile_failures
        self._slow_after_s = slow_after_s
        # The drain controller judges its own operations (`drainer`): how many are
        # DRAIN_BLOCKED now, counted with the rest.
        self._drains_blocked = drains_blocked
        self._canary_waiting_after_s = canary_waiting_after_s
        # A rollout paused longer than this is shown as ROLLOUT_PAUSED (never ROLLOUT_BLOCKED).
        self._paused_after_s = rollout_paused_after_s
        # Each workload's last plan, with the cache entry and host generation it was made
        # from: see `_plan`.
        self._plans: dict[str, tuple[WorkloadEntry[WorkloadRow], int, WorkloadPlan]] = {}

    async def keys(self) -> list[str]:
        return [KEY]

    async def reconcile(self, key: str, *, term: Term) -> Result:
        """Judges the fleet; idle (no span) when it recorded nothing."""
        wrote = await self.detect()
        return requeue_after(self._interval_s, idle=not wrote)

    async def detect(self) -> bool:
        """One pass; True when it recorded something (a verdict, a backlog stamp, a slow change)."""
        failures = self._failures()
        now = await self._store.now()
        index = self._cache.index
        entries = list(index.workloads())

        marks: list[StuckMark] = []
        owners: dict[str, str] = {}  # instance id -> workload, for the marks recorded
        stuck_now: Counter[str] = Counter()
        stuck_ids: set[str] = set()
        deadlines = {e.view.name: e.row.workload.deadline_ms / 1000 for e in entries}
        for i in _judged(index):
            deadline_s = deadlines.get(i.workload, DEFAULT_DEADLINE_S)
            verdict = judge_instance(i, index.host(i.host), deadline_s=deadline_s, now=now)
            mark = _mark("instance", i.id, i.stuck, verdict)
            if mark:
                marks += mark
                owners[i.id] = i.workload
            if verdict is not None:
                stuck_now[verdict.reason.value] += 1
                stuck_ids.add(i.id)

        unconverged: dict[str, bool] = {}
        workloads_unconverged = 0
        # When each waiting canary's revision was applied: read only while any waits.
        canaries = await self._store.waiting_since() if any(e.view.canary for e in entries) else {}
        # The failure records of the rollouts Keel holds: read only while one is held.
        held = (
            await self._store.held_failures(HOLDER)
            if any(held_by_keel(e.row) for e in entries)
            else {}
        )
        for entry in entries:
            w = entry.row
            own = list(entry.instances.values())
            # A plan only where its answer matters: placing a workload's instances costs what
            # the hosts are, and mid-burst hundreds of workloads wait to be placed.
            plan = None if surely_unconverged(entry.view, own) else self._plan(entry, index)
            converged = plan is not None and workload_converged(w, plan, own)
            workloads_unconverged += not converged
            if converged == (w.unconverged_since is not None):
                unconverged[w.workload.name] = not converged
            failure = failures.get(w.workload.name)
            verdict = None
            after_s = self._paused_after_s
            if may_be_stuck(w, now=now, failure=failure, paused_after_s=after_s):
                plan = plan or self._plan(entry, index)
                verdict = judge_workload(
                    w,
                    plan,
                    own,
                    stuck_ids,
                    now=now,
                    failure=failure,
                    canary_since=canaries.get(w.workload.name) if entry.view.canary else None,
                    canary_waiting_after_s=self._canary_waiting_after_s,
                    paused_after_s=after_s,
                    rollout_failure=held.get(w.workload.name),
                )
            marks += _mark("workload", w.workload.name, w.stuck, verdict)
            if verdict is not None:
                stuck_now[verdict.reason.value] += 1
        # Forget the plans of workloads gone (a memo holds its entry).
        listed = {e.view.name for e in entries}
        self._plans = {n: m for n, m in self._plans.items() if n in listed}

        self._cache.unconverged_recorded(await self._status.record_unconverged(unconverged))
        recorded = await self._status.mark_stuck(marks)
        self._cache.stuck_recorded(recorded, instance_workloads=owners)
        for m in marks:
            # Only the first line: a CRASH_LOOP message carries the workload's stderr, which
            # belongs in the instance's record, not in the control plane's log.
            log.bind(**{m.kind: m.name}).info(
                "stuck detected" if m.reason else "stuck cleared",
                reason=m.reason,
                detail=m.message.strip().split("\n", 1)[0][:200],
            )
        slow = await self._status.count_slow(threshold_s=self._slow_after_s)
        for change, n in slow.items():
            self._metrics.count_slow(change, n)
        backlog = await self._status.backlog()
        self._metrics.set_backlog(backlog.instances, workloads_unconverged, backlog.oldest_change_s)
        self._metrics.set_stuck({**stuck_now, Reason.DRAIN_BLOCKED.value: self._drains_blocked()})
        self._metrics.set_hosts(
            Counter((h.state.value, h.schedulable) for h in index.host_records())
        )
        return bool(marks or unconverged or any(slow.values()))

    def _plan(
        self, entry: WorkloadEntry[WorkloadRow], index: FleetIndex[WorkloadRow]
    ) -> WorkloadPlan:
        """The workload's plan now. Entries are never changed in place, so one that is the
        same object as at the last pass, with no host changed since (`hosts_generation`),
        plans the same again, unless that plan placed or tried to place instances (what the
        hosts hold entered it then). Most workloads are at rest: a pass costs a lookup each."""
        name = entry.view.name
        memo = self._plans.get(name)
        if memo is not None and memo[0] is entry and memo[1] == index.hosts_generation:
            return memo[2]
        plan = plan_workload(
            entry.view, [i.view for i in entry.instances.values()], index.hosts, index.usage
        )
        if not plan.create and plan.unschedulable is None:
            self._plans[name] = (entry, index.hosts_generation, plan)
        else:
            self._plans.pop(name, None)
        return plan


def _judged(index: FleetIndex[WorkloadRow]) -> list[InstanceRecord]:
    """The instances that can have or lose a verdict: those not converged or marked stuck, and
    the live ones on hosts that are not READY. Any other is converged on a READY host and
    unmarked, which `judge_instance` leaves alone: a pass costs what is wrong, not the fleet."""
    judged = {i.id: i for i in index.needing_attention()}
    for host in index.host_records():
        if host.state is not HostState.READY:
            judged.update((i.id, i) for i in index.live_on_host(host.name))
    return list(judged.values())


def _mark(
    kind: str, name: str, current: StuckState | None, verdict: Verdict | None
) -> list[StuckMark]:
    """The change to record, if the verdict differs from what is recorded."""
    if verdict is None:
        return [] if current is None else [StuckMark(kind, name, "", "")]
    if current is not None and (current.reason, current.message) == (
        verdict.reason.value,
        verdict.message,
    ):
        return []
    return [StuckMark(kind, name, verdict.reason.value, verdict.message)]
