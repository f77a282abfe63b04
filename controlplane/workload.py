"""The workload controller: one pass per workload key, run by `reconcile.Runner`.

Each pass takes the workload as it is now from the leader's cache (`cache.FleetCache.current`:
the cached entry, checked against the database's version of the workload, read again if it
moved), asks `rollout.plan_workload` (placement, rollout, scale, delete) with the cache's
hosts and per-host usage, and writes the plan in one fenced transaction (`store.apply_plan`,
checked against the leader's epoch). A pass costs what its workload has, not what the fleet
has. A plan whose read went stale before it was written (the workload's version or a host it
relied on moved) is refused by that transaction; the pass reads again and plans again.
Level-triggered: a NOTIFY or a report only means "look again" (the cache wakes the workload
once it has read what changed), and every workload is looked at again each resync period,
behind the fresh keys. A plan Postgres refuses for its data cannot succeed by retrying: that is
a `PermanentError`, and the stuck detector (`stuck`) reports the workload RECONCILE_FAILING at
once; any other failure is retried with back-off and reported once it outlasts the deadline.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from controlplane.cache import FleetCache
from controlplane.errors import InvalidArgument
from controlplane.fleet_index import HostSeen, WorkloadEntry
from controlplane.metrics import Metrics
from controlplane.reconcile import (
    DONE,
    IDLE,
    PermanentError,
    Result,
    TemporaryError,
    Term,
    requeue_after,
)
from controlplane.rollout import WorkloadPlan, plan_workload
from controlplane.settling import may_settle, settled_views
from controlplane.store import PlanResult, Store, WorkloadRow
from keel import tracing
from keel.model import Change, HostState

log = structlog.get_logger("keel.workload")

# How many times one pass plans again after its write was refused as stale before it gives up
# (a temporary error: the runner retries with back-off).
STALE_ATTEMPTS = 5


class WorkloadController:
    name = "workload"
    key_label = "workload"

    def __init__(self, store: Store, *, cache: FleetCache, metrics: Metrics) -> None:
        self._store = store
        self._cache = cache
        self._metrics = metrics

    async def keys(self) -> list[str]:
        return self._cache.index.workload_names()

    async def reconcile(self, name: str, *, term: Term) -> Result:
        for attempt in range(1, STALE_ATTEMPTS + 1):
            entry = await self._cache.current(name)
            if entry is None:
                return IDLE
            views = [i.view for i in entry.instances.values()]
            settle_in: float | None = None
            min_ready_ms = entry.row.workload.spec.min_ready_ms
            if may_settle(entry.view, views, min_ready_ms=min_ready_ms):
                views, settle_in = settled_views(
                    entry.view,
                    entry.instances.values(),
                    min_ready_ms=min_ready_ms,
                    now=await self._store.now(),
                )
            plan = plan_workload(entry.view, views, self._cache.hosts, self._cache.usage)
            bound = log.bind(workload=name, generation=entry.row.generation)
            wrote = False
            # Nothing left for later passes (nothing more to place, nothing unplaceable, no
            # rollout held by its budget): a change after this one starts its own clock.
            settles = not plan.more and plan.unschedulable is None and plan.blocked is None
            if plan.create or plan.remove:
                result = await self._write(entry, plan, epoch=term.epoch, settles=settles)
                if result.stale is not None:
                    self._metrics.count_stale_write(self.name)
                    bound.info("plan refused: made from a stale read; reading again",
                               stale=result.stale, hosts=list(result.stale_hosts),
                               attempt=attempt)  # fmt: skip
                    if result.stale_hosts:
                        await self._cache.refresh_placements(result.stale_hosts)
                    continue
                self._cache.apply(result.delta)
                # Counted at commit: the SLO's denominator.
                self._metrics.count_changes(Change.CREATE, len(result.created))
                self._metrics.count_changes(Change.REMOVE, result.removed)
                wrote = bool(result.created or result.removed)
                bound.info(
                    "workload reconciled",
                    created=result.created,
                    removed=sorted(plan.remove),
                    hosts=sorted(set(plan.create)),
                )
            elif (
                settles
                and entry.row.desired_pending
                and await self._store.settle_desired(
                    name, desired_version=entry.row.desired_version, epoch=term.epoch
                )
            ):
                self._cache.settled(name)
            if plan.unschedulable is not None:
                bound.info(
                    "instances unschedulable",
                    reason=plan.unschedulable.code,
                    detail=plan.unschedulable.message,
                )
            gone = entry.row.deleting and not entry.instances and not wrote
            if gone and await self._store.finish_deleted_workload(name, epoch=term.epoch):
                self._cache.deleted(name, version=entry.version)
                bound.info("workload deleted")
                wrote = True
            if plan.more and wrote:
                # Cut at the per-pass bound (rollout.MAX_CHANGES_PER_PASS): the rest goes to the
                # back of the fresh keys, so other workloads' changes are not held behind a huge
                # scale-up, and each transaction stays bounded.
                return requeue_after(0)
            if settle_in is not None:
                # A new instance becomes available to the rollout then: nothing else wakes it.
                return requeue_after(settle_in, idle=not wrote)
            return DONE if wrote else IDLE
        raise TemporaryError(
            f"workload {name} kept changing while it was planned ({STALE_ATTEMPTS} plans refused "
            "as stale); retrying"
        )

    async def _write(
        self,
        entry: WorkloadEntry[WorkloadRow],
        plan: WorkloadPlan,
        *,
        epoch: int | None,
        settles: bool,
    ) -> PlanResult:
        """Writes the plan over what it was made from: the workload's version, the state of
        every host it places on or whose instances' availability it counted, and the revision
        of every host it places on (so what those hosts hold is what it counted)."""
        row = entry.row
        hosts_read = hosts_seen(self._cache, entry, places=plan.create)
        # The writes carry out the operator's change: their span joins its trace.
        with tracing.tracer("keel.workload").start_as_current_span(
            "workload.apply_plan",
            context=tracing.context_from_traceparent(row.trace_context),
            attributes={"keel.workload": row.workload.name, "keel.generation": row.generation},
        ):
            try:
                return await self._store.apply_plan(
                    row,
                    create_on=plan.create,
                    remove=plan.remove,
                    epoch=epoch,
                    version=entry.version,
                    hosts_read=hosts_read,
                    settles=settles,
                )
            except InvalidArgument as exc:
                # Postgres refuses this plan's data (`sql` translated its DataError): the
                # same plan fails every time.
                detail = str(exc).removeprefix("request: ")
                raise PermanentError(
                    f"the database refuses this workload's instances: {detail}"
                ) from exc


def hosts_seen(
    cache: FleetCache, entry: WorkloadEntry[WorkloadRow], *, places: Iterable[str]
) -> dict[str, HostSeen]:
    """What a plan for `entry` relied on of the hosts, for its write to check: the state and
    cordon of every host it places on or whose instances' availability it counted, and the
    revision of every host it places on (so what those hosts hold is what it counted)."""
    placed = set(places)
    relied = placed | {i.host for i in entry.instances.values() if i.view.live}
    seen = {}
    for name in relied:
        host = cache.host(name)
        if host is None:
            seen[name] = HostSeen(HostState.UNKNOWN, False)  # never as read: stale
        else:
            revision = host.revision if name in placed else None
            seen[name] = HostSeen(host.state, host.schedulable, revision)
    return seen
