"""The controllers, run by the one replica that holds leadership.

- workload controller: for each workload key, reads desired and observed state fresh from the
  store, asks `rollout.plan_workload` (placement, rollout, scale, delete) and writes the plan
  in one fenced transaction. Level-triggered: a NOTIFY or a report only means "look again",
  and every workload is looked at again each resync period.
- liveness: judges hosts by their heartbeats (database time) and fences service instances of
  hosts that stay unreachable past --reschedule-after, so they are replaced elsewhere.

Leadership is a Postgres advisory lock held on a dedicated connection plus an epoch in the
`leader` row that every controller transaction checks (`sql.check_epoch`). Losing the
connection stops the controllers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import asyncpg
import structlog
from opentelemetry.trace import Status, StatusCode

from controlplane.errors import NotFound, NotLeader
from controlplane.metrics import Metrics
from controlplane.rollout import plan_workload
from controlplane.settings import Settings
from controlplane.store import Store
from controlplane.stuck import StuckDetector
from controlplane.view import host_view, instance_view, workload_view
from controlplane.workqueue import WorkQueue
from keel import tracing
from keel.model import Kind

log = structlog.get_logger("keel.controllers")
_tracer = tracing.tracer("keel.controllers")

_LEADER_LOCK_KEY = 0x6B65656C_6C656164  # "keellead"
ALL = "*"


class WorkloadController:
    def __init__(self, store: Store, *, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self.queue = WorkQueue(base_s=settings.retry_base_s, max_s=settings.retry_max_s)
        metrics.track_queue_depth("workload", lambda: len(self.queue))

    def enqueue(self, name: str) -> None:
        self.queue.add(name)

    async def run(self, epoch: int) -> None:
        """Processes keys until cancelled; one worker, so placements never race each other.

        The one outcome handler: each pass (the ALL fan-out included) is a span, and its
        result becomes the retry with back-off, the reconcile metrics and the log line here.
        """
        while True:
            key = await self.queue.get()
            started = time.monotonic()
            with _tracer.start_as_current_span(
                "reconcile workload", attributes={"keel.workload": key}
            ) as span:
                try:
                    if key == ALL:
                        for name in await self._store.workload_names():
                            self.queue.add(name)
                    else:
                        await self.reconcile(key, epoch=epoch)
                except BaseException as exc:
                    if not isinstance(exc, Exception) or isinstance(exc, NotLeader):
                        # Cancelled or deposed mid-pass: hand the key back, so the next
                        # term (the queue outlives it) processes it again.
                        self.queue.release(key)
                        raise
                    elapsed = time.monotonic() - started
                    self._metrics.observe_reconcile("workload", ok=False, seconds=elapsed)
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    delay = self.queue.done(key, ok=False)
                    if delay is not None:
                        self._metrics.count_retry("workload")
                    log.warning(
                        "reconcile failed; will retry",
                        workload=key,
                        error=str(exc),
                        retry_in_s=round(delay or 0, 3),
                        retries=self.queue.retries(key),
                    )
                else:
                    elapsed = time.monotonic() - started
                    self._metrics.observe_reconcile("workload", ok=True, seconds=elapsed)
                    self.queue.done(key, ok=True)
                    if elapsed > 1.0:
                        log.info("slow reconcile", workload=key, seconds=round(elapsed, 3))

    async def reconcile(self, name: str, *, epoch: int | None) -> None:
        try:
            row = await self._store.get_workload(name)
        except NotFound:
            return
        instances = await self._store.list_instances()
        hosts = await self._store.list_hosts()
        plan = plan_workload(
            workload_view(row),
            [instance_view(i) for i in instances],
            [host_view(h) for h in hosts],
        )
        bound = log.bind(workload=name, generation=row.generation)
        if plan.create or plan.remove:
            # The writes carry out the operator's change: their span joins its trace.
            with tracing.tracer("keel.controllers").start_as_current_span(
                "workload.apply_plan",
                context=tracing.context_from_traceparent(row.trace_context),
                attributes={"keel.workload": name, "keel.generation": row.generation},
            ):
                result = await self._store.apply_plan(
                    row, create_on=plan.create, remove=plan.remove, epoch=epoch
                )
            # Counted at commit: the SLO's denominator.
            self._metrics.count_changes("create", len(result.created))
            self._metrics.count_changes("remove", result.removed)
            bound.info(
                "workload reconciled",
                created=result.created,
                removed=sorted(plan.remove),
                hosts=sorted(set(plan.create)),
            )
            if plan.more:
                # Cut at the per-pass bound: the rest waits at the back of the queue, so other
                # workloads' fresh changes are not held behind a huge scale-up.
                self.enqueue(name)
        if plan.unschedulable is not None:
            bound.info(
                "instances unschedulable",
                reason=plan.unschedulable.code,
                detail=plan.unschedulable.message,
            )
        gone = not any(i.workload == name for i in instances)
        if row.deleting and gone and await self._store.finish_deleted_workload(name, epoch=epoch):
            bound.info("workload deleted")


class LivenessController:
    def __init__(
        self,
        store: Store,
        *,
        settings: Settings,
        workloads: WorkloadController,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._settings = settings
        self._workloads = workloads

    async def run(self, epoch: int) -> None:
        """Judges every interval; a failed pass is logged, counted and retried at the next."""
        # A new leader gives agents one grace period to reconnect before judging them.
        await asyncio.sleep(self._settings.liveness_grace_s)
        while True:
            started = time.monotonic()
            with _tracer.start_as_current_span("reconcile liveness") as span:
                try:
                    await self.judge(epoch=epoch)
                except NotLeader:
                    raise
                except Exception as exc:
                    elapsed = time.monotonic() - started
                    self._metrics.observe_reconcile("liveness", ok=False, seconds=elapsed)
                    self._metrics.count_retry("liveness")
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    log.warning(
                        "liveness pass failed; will retry",
                        error=str(exc),
                        retry_in_s=self._settings.liveness_interval_s,
                    )
                else:
                    elapsed = time.monotonic() - started
                    self._metrics.observe_reconcile("liveness", ok=True, seconds=elapsed)
            await asyncio.sleep(self._settings.liveness_interval_s)

    async def judge(self, *, epoch: int | None) -> None:
        s = self._settings
        for host, state in await self._store.judge_liveness(
            grace_s=s.liveness_grace_s, unknown_after_s=s.unknown_after_s
        ):
            log.warning("host stopped heartbeating", host=host, state=state)
        for host in await self._store.hosts_to_fence(after_s=s.reschedule_after_s):
            n = await self._store.fence_host(host, [Kind.SERVICE], epoch=epoch)
            self._metrics.count_changes("remove", n)
            if n:
                log.warning("fenced instances of an unreachable host", host=host, instances=n)
                self._workloads.enqueue(ALL)


class Leadership:
    """Campaigns for leadership and runs the controllers while it holds it."""

    def __init__(
        self,
        store: Store,
        *,
        database_url: str,
        settings: Settings,
        workloads: WorkloadController,
        liveness: LivenessController,
        stuck: StuckDetector,
    ) -> None:
        self._stuck = stuck
        self._store = store
        self._url = database_url
        self._settings = settings
        self._workloads = workloads
        self._liveness = liveness
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.epoch: int | None = None

    async def run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=10)
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK_KEY):
                    self.epoch = await self._store.take_leadership(conn, self.holder)
                    log.info("leadership acquired", epoch=self.epoch, holder=self.holder)
                    await self._lead(conn, self.epoch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leadership lost or unavailable", error=str(exc))
            finally:
                self.epoch = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(self._settings.leader_retry_s)

    async def _lead(self, conn: asyncpg.Connection, epoch: int) -> None:
        self._workloads.enqueue(ALL)
        tasks = [
            asyncio.create_task(self._workloads.run(epoch), name="controller-workload"),
            asyncio.create_task(self._liveness.run(epoch), name="controller-liveness"),
            asyncio.create_task(self._stuck.run(), name="controller-stuck"),
            asyncio.create_task(self._resync(), name="controller-resync"),
            asyncio.create_task(self._watch(conn), name="leader-watch"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    raise exc
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resync_period_s)
            self._workloads.enqueue(ALL)

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Ends (and so stops the controllers) when the lock's connection is gone."""
        while True:
            await asyncio.sleep(1.0)
            await conn.fetchval("SELECT 1", timeout=5)
