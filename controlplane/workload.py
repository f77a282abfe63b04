"""The workload controller: one pass per workload key, run by `reconcile.Runner`.

Each pass reads desired and observed state fresh from the store, asks `rollout.plan_workload`
(placement, rollout, scale, delete) and writes the plan in one fenced transaction
(`store.apply_plan`, checked against the leader's epoch). Level-triggered: a NOTIFY or a report
only means "look again" (`enqueue`), and every workload is looked at again each resync period,
behind the fresh keys. A plan Postgres refuses for its data cannot succeed by retrying: that is
a `PermanentError`, and the stuck detector (`stuck`) reports the workload RECONCILE_FAILING at
once; any other failure is retried with back-off and reported once it outlasts the deadline.
"""

from __future__ import annotations

import structlog

from controlplane.errors import InvalidArgument, NotFound
from controlplane.metrics import Metrics
from controlplane.reconcile import DONE, IDLE, PermanentError, Result, Runner, Term, requeue_after
from controlplane.rollout import plan_workload
from controlplane.rowviews import host_view, workload_view
from controlplane.store import Store
from keel import tracing
from keel.model import Change

log = structlog.get_logger("keel.workload")

# The NOTIFY payload that means "look at every workload again" (a host joined or changed
# state): it names no changed workload, so it asks for a resync, not for fresh keys.
ALL = "*"


def enqueue(runner: Runner, name: str) -> None:
    """Wakes the workload controller for a NOTIFY or a report about `name` (or ALL)."""
    if name == ALL:
        runner.resync_now()
    else:
        runner.add(name)


class WorkloadController:
    name = "workload"
    key_label = "workload"

    def __init__(self, store: Store, *, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def keys(self) -> list[str]:
        return await self._store.workload_names()

    async def reconcile(self, name: str, *, term: Term) -> Result:
        epoch = term.epoch
        try:
            row = await self._store.get_workload(name)
        except NotFound:
            return IDLE
        instances = await self._store.planning_views()
        hosts = await self._store.list_hosts()
        plan = plan_workload(workload_view(row), instances, [host_view(h) for h in hosts])
        bound = log.bind(workload=name, generation=row.generation)
        wrote = False
        if plan.create or plan.remove:
            # The writes carry out the operator's change: their span joins its trace.
            with tracing.tracer("keel.workload").start_as_current_span(
                "workload.apply_plan",
                context=tracing.context_from_traceparent(row.trace_context),
                attributes={"keel.workload": name, "keel.generation": row.generation},
            ):
                try:
                    result = await self._store.apply_plan(
                        row, create_on=plan.create, remove=plan.remove, epoch=epoch
                    )
                except InvalidArgument as exc:
                    # Postgres refuses this plan's data (`sql` translated its DataError): the
                    # same plan fails every time.
                    detail = str(exc).removeprefix("request: ")
                    raise PermanentError(
                        f"the database refuses this workload's instances: {detail}"
                    ) from exc
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
        if plan.unschedulable is not None:
            bound.info(
                "instances unschedulable",
                reason=plan.unschedulable.code,
                detail=plan.unschedulable.message,
            )
        gone = not any(i.workload == name for i in instances)
        if row.deleting and gone and await self._store.finish_deleted_workload(name, epoch=epoch):
            bound.info("workload deleted")
            wrote = True
        if plan.more and wrote:
            # Cut at the per-pass bound (rollout.MAX_CHANGES_PER_PASS): the rest goes to the
            # back of the fresh keys, so other workloads' changes are not held behind a huge
            # scale-up, and each transaction stays bounded.
            return requeue_after(0)
        return DONE if wrote else IDLE
