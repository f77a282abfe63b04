"""The stuck detector: which objects are not converging, why, and what to do about it.

`judge_instance` and `judge_workload` are pure: from an object's desired and observed state,
its host and its deadline, they return a verdict from the closed set in `keel.stuck` (or
None). `StuckDetector` is the leader's periodic pass (a keyed reconcile run by
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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from controlplane.cache import FleetCache
from controlplane.fleet_index import FleetIndex, InstanceRecord, WorkloadEntry
from controlplane.metrics import Metrics
from controlplane.reconcile import ReconcileFailure, Result, Term, requeue_after
from controlplane.rollout import WorkloadPlan, plan_workload
from controlplane.status import StatusStore, StuckMark
from controlplane.store import Store, StuckState, WorkloadRow
from keel.model import Desired, HostState, Phase
from keel.stuck import IMMEDIATE, Reason

log = structlog.get_logger("keel.stuck")

# The one key of the stuck detector: every pass judges the whole fleet.
KEY = "fleet"

# A workload's deadline when its instance outlives it in the cache (never for long).
DEFAULT_DEADLINE_S = 120.0

# A desired change not converged after this long counts in keel_changes_slow_total (the SLO's
# threshold: 99% of changes converge within 60 s).
SLOW_AFTER_S = 60.0


class InstanceFacts(Protocol):
    """What the verdicts read of an instance (the cache's record, or the store's full row)."""

    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def desired(self) -> Desired: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def converged(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def agent_stuck(self) -> bool: ...
    @property
    def observed(self) -> bool: ...
    @property
    def stop_grace_ms(self) -> int: ...
    @property
    def desired_changed_at(self) -> datetime: ...
    @property
    def unconverged_since(self) -> datetime | None: ...


class HostFacts(Protocol):
    """What the verdicts read of a host (the cache's record, or the store's row)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> HostState: ...
    @property
    def state_since(self) -> datetime: ...
    @property
    def last_heartbeat(self) -> datetime | None: ...
    @property
    def connected(self) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    message: str


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _heartbeat(host: HostFacts, now: datetime) -> str:
    if host.last_heartbeat is None:
        return "no heartbeat ever"
    return f"last heartbeat {_ago((now - host.last_heartbeat).total_seconds())} ago"


def judge_instance(
    inst: InstanceFacts, host: HostFacts | None, *, deadline_s: float, now: datetime
) -> Verdict | None:
    """Why this instance is stuck, or None."""
    if host is not None and host.state is not HostState.READY:
        down_s = (now - host.state_since).total_seconds()
        if down_s > deadline_s and inst.desired is not Desired.REMOVED:
            return Verdict(
                Reason.HOST_UNREACHABLE,
                f"host {host.name} is {host.state.value} for {_ago(down_s)} "
                f"({_heartbeat(host, now)}); "
                f"its state is unknown. Service instances are replaced elsewhere after "
                f"--reschedule-after",
            )
    if inst.converged:
        return None
    agent_reason = inst.reason if inst.reason in Reason.__members__ else ""
    if inst.agent_stuck and agent_reason and Reason(agent_reason) in IMMEDIATE:
        return Verdict(Reason(agent_reason), inst.message)
    since = inst.unconverged_since or inst.desired_changed_at
    age_s = (now - since).total_seconds()
    if age_s <= deadline_s:
        return None
    if host is not None and host.state is not HostState.READY:
        # Its agent stopped heartbeating (frozen, or cut off with its stream still open):
        # that, not the instance, is why nothing was reported.
        down_s = (now - host.state_since).total_seconds()
        return Verdict(
            Reason.HOST_UNREACHABLE,
            f"host {host.name} is {host.state.value} for {_ago(down_s)} ({_heartbeat(host, now)}); "
            f"{inst.id} wants {inst.desired.value} for {_ago(age_s)} and was last observed "
            f"{inst.phase if inst.observed else 'never'}",
        )
    if host is not None and not host.connected:
        return Verdict(
            Reason.AGENT_DISCONNECTED,
            f"the agent of host {host.name} has no stream open to the control plane; "
            f"{inst.id} was last observed {inst.phase} and wants {inst.desired.value} "
            f"for {_ago(age_s)}",
        )
    if agent_reason:
        return Verdict(Reason(agent_reason), inst.message or f"reported {agent_reason}")
    if inst.desired is not Desired.RUNNING:
        return Verdict(
            Reason.STOP_TIMEOUT,
            f"asked to stop {_ago(age_s)} ago (stop grace {inst.stop_grace_ms} ms) "
            f"but still {inst.phase}",
        )
    if not inst.observed and inst.desired is Desired.RUNNING:
        where = f"host {host.name}" if host is not None else f"host {inst.host}"
        return Verdict(
            Reason.NOT_STARTED,
            f"placed on {where} {_ago(age_s)} ago and never reported by its agent, which is "
            f"connected; the agent may be overloaded or its reconcile loop stuck",
        )
    if inst.phase is Phase.RUNNING:
        return Verdict(
            Reason.HEALTH_CHECK_FAILING,
            f"running but not ready for {_ago(age_s)}"
            + (f": {inst.message}" if inst.message else ""),
        )
    return Verdict(
        Reason.START_FAILED,
        f"not running {_ago(age_s)} after it was placed (phase {inst.phase})"
        + (f": {inst.message}" if inst.message else ""),
    )


def workload_converged(row: WorkloadRow, plan: WorkloadPlan, own: Sequence[InstanceFacts]) -> bool:
    """Nothing left to do: no placement, removal or wait pending, every instance converged."""
    if plan.create or plan.remove or plan.unschedulable or plan.blocked:
        return False
    live = [i for i in own if i.desired is not Desired.REMOVED]
    return all(i.converged and i.generation == row.generation for i in live)


def judge_workload(
    row: WorkloadRow,
    plan: WorkloadPlan,
    own: Sequence[InstanceFacts],
    stuck_instances: set[str],
    *,
    now: datetime,
    failure: ReconcileFailure | None = None,
) -> Verdict | None:
    """Why this workload is stuck (its reconcile, placement or rollout), or None.

    Instance-level trouble is reported on the instances; the workload is stuck itself only
    when the control plane cannot reconcile it, cannot place instances, or a rollout cannot
    progress.
    """
    deadline_s = row.workload.deadline_ms / 1000
    if failure is not None and failure.permanent:
        return Verdict(
            Reason.RECONCILE_FAILING,
            f"the control plane cannot carry out this workload's changes, and retrying will "
            f"not help until the workload or its surroundings change: {failure.error}",
        )
    if failure is not None and failure.failing_for_s > deadline_s:
        return Verdict(
            Reason.RECONCILE_FAILING,
            f"the control plane has failed to reconcile this workload for longer than its "
            f"deadline ({_ago(deadline_s)}) and keeps retrying with back-off: {failure.error}",
        )
    if row.unconverged_since is None:
        return None
    age_s = (now - row.unconverged_since).total_seconds()
    if age_s <= deadline_s:
        return None
    if plan.unschedulable is not None:
        return Verdict(
            Reason.UNSCHEDULABLE,
            f"{plan.unschedulable.code.value}: {plan.unschedulable.message}",
        )
    live = [i for i in own if i.desired is not Desired.REMOVED]
    old = [i for i in live if i.generation != row.generation]
    if old or plan.blocked:
        waiting = sorted(i.id for i in live if i.id in stuck_instances)
        detail = plan.blocked or f"{len(old)} instance(s) of older generations remain"
        if waiting:
            detail += f"; waiting on stuck {', '.join(waiting)}"
        return Verdict(
            Reason.ROLLOUT_BLOCKED,
            f"generation {row.generation} not rolled out after {_ago(age_s)} "
            f"(max_unavailable {row.workload.max_unavailable}, "
            f"max_surge {row.workload.max_surge}): {detail}",
        )
    return None


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
        for entry in entries:
            w = entry.row
            own = list(entry.instances.values())
            plan = self._plan(entry, index)
            converged = workload_converged(w, plan, own)
            workloads_unconverged += not converged
            if converged == (w.unconverged_since is not None):
                unconverged[w.workload.name] = not converged
            verdict = judge_workload(
                w, plan, own, stuck_ids, now=now, failure=failures.get(w.workload.name)
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
