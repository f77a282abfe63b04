"""The executor: one loop that plans (`agent.planner`) and acts through a driver.

It wakes when the desired set changes (`apply_assignments`, called by `agent.sync`), when a
process exits (a watcher per process), when a health result changes, and on a periodic tick
(--probe-interval). Every pass reads desired and actual afresh (level-triggered), performs the
planned actions (starts and stops run as per-instance tasks, so one slow stop holds nothing
else up), persists local state (`agent.state`) and sends the status reports that changed to
the sink (the sync client). On open it adopts the processes a previous agent left running.

After every pass one outcome handler (`_pass_done`) computes every desired instance's status,
feeds the convergence tracker (`agent.convergence`) and the metrics (`agent.metrics`), and
sends the changed reports. Stuck verdicts are the planner's (`status_of`); the reconciler
supplies the live facts they need (how long probes have failed, the stderr tail at an exit,
since when a stop is under way). A pass that acted is a root span "agent.reconcile"; a start
whose assignment carries the operator's trace context is a span "agent.start_instance" in
that trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from agent import logread
from agent.backoff import next_crash_delay
from agent.convergence import ConvergenceTracker
from agent.errors import StartFailed, StateError
from agent.health import HealthMonitor, Prober, Target, probe
from agent.metrics import AgentMetrics, PassOutcome
from agent.planner import (
    Action,
    Actual,
    ConfirmRemoved,
    Forget,
    InstanceReport,
    RecordExit,
    Start,
    Stop,
    Transition,
    plan,
    status_of,
)
from agent.runtime.base import Driver, ExitInfo, Handle, instance_env
from agent.settings import Settings
from agent.state import Assignment, InstanceRecord, LocalState, StateStore
from agent.tasks import TaskGroup
from keel import tracing
from keel.model import Desired, Phase, converged
from keel.stuck import STDERR_TAIL_BYTES

log = structlog.get_logger("agent.reconciler")
_tracer = tracing.tracer("keel.agent")

# On shutdown, a start or stop under way gets this long to finish before it is cancelled.
_SHUTDOWN_WAIT_S = 5.0
# A probe gets at least this long even when tests shorten --probe-interval below it.
_PROBE_TIMEOUT_MIN_S = 1.0


class StatusSink(Protocol):
    """Where status reports go (the sync client); reports are dropped while disconnected."""

    @property
    def connected(self) -> bool: ...

    def report(self, reports: Sequence[InstanceReport]) -> None: ...


class _Disconnected:
    connected = False

    def report(self, reports: Sequence[InstanceReport]) -> None:
        return None


@dataclass
class _Live:
    """In-memory facts about one instance that local state does not need to keep."""

    handle: Handle | None = None
    exited: ExitInfo | None = None
    exited_at: float | None = None
    transition: Transition | None = None
    task: asyncio.Task[Any] | None = None
    watcher: asyncio.Task[Any] | None = None
    stopping_since: float | None = None  # the first stop of the current process began
    stderr_tail: str = ""  # the end of stderr at the last exit (CRASH_LOOP's message)


class Reconciler:
    def __init__(
        self,
        store: StateStore,
        *,
        driver: Driver,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        prober: Prober = probe,
        sink: StatusSink | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._store = store
        self.metrics = metrics or AgentMetrics()
        self._convergence = ConvergenceTracker()
        self._driver = driver
        self._settings = settings
        self._clock = clock
        self.sink: StatusSink = sink or _Disconnected()
        self.state = LocalState()
        self._saved: LocalState | None = None
        self._live: dict[str, _Live] = {}
        self._reported: dict[str, InstanceReport] = {}
        self._wake = asyncio.Event()
        self._tasks = TaskGroup()
        self._save_lock = asyncio.Lock()
        self._health_task: asyncio.Task[Any] | None = None
        self._log = log.bind(host=settings.host)
        self._health = HealthMonitor(
            targets=self._probe_targets,
            on_change=self.wake,
            prober=prober,
            interval_s=settings.probe_interval_s,
            timeout_s=max(settings.probe_interval_s, _PROBE_TIMEOUT_MIN_S),
            clock=clock,
        )

    # Inputs --------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self.state.revision

    def wake(self) -> None:
        self._wake.set()

    def knows(self, instance_id: str) -> bool:
        """True if the instance is desired on this host or still has local state here."""
        return instance_id in self.state.desired or instance_id in self.state.instances

    def apply_assignments(
        self, *, full: bool, revision: int, assignments: Sequence[Assignment]
    ) -> None:
        """Take a desired set from the control plane: a full set replaces, changes merge."""
        if not full and not assignments:
            # The control plane's periodic "nothing changed": only the revision may move.
            if revision != self.state.revision:
                self.state = replace(self.state, revision=revision)
            return
        now = self._clock()
        before = self.state.desired
        desired = {} if full else dict(before)
        for a in assignments:
            old = before.get(a.instance_id)
            if old is None or old.desired is not a.desired:
                self._convergence.changed(a.instance_id, a.desired, at=now)
            desired[a.instance_id] = a
        self.state = replace(self.state, revision=revision, desired=desired)
        self._log.info(
            "desired state received", full=full, revision=revision, count=len(assignments)
        )
        self.wake()

    def full_report(self) -> list[InstanceReport]:
        """Every desired instance's status (sent after Hello); marks them all as reported."""
        reports = list(self._statuses(self._clock()).values())
        self._reported = {r.instance_id: r for r in reports}
        return reports

    # Lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load local state and adopt the processes a previous agent started."""
        self.state = await asyncio.to_thread(self._store.load)
        self._saved = self.state
        now = self._clock()
        for iid, record in self.state.instances.items():
            if record.pid is None:
                continue
            live = self._live.setdefault(iid, _Live())
            handle = self._driver.adopt(iid, record.pid, record.start_time or 0.0)
            ilog = self._log.bind(instance=iid, workload=record.workload, pid=record.pid)
            if handle is None:
                # Gone, or the pid now belongs to another process: not ours to touch.
                live.exited, live.exited_at = ExitInfo(), now
                ilog.info("process exited while the agent was away")
            else:
                live.handle = handle
                live.watcher = self._tasks.spawn(f"watch {iid}", self._watch(iid, handle))
                ilog.info("adopted running process", restart_count=record.restart_count)

    async def run(self) -> None:
        """Reconcile until cancelled; supervise with `TaskGroup.loop`."""
        if self._health_task is None or self._health_task.done():
            self._health_task = self._tasks.loop("health", self._health.run)
        while True:
            self._wake.clear()
            await self.reconcile_once()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that races the wake-up, and the reconciler would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.probe_interval_s):
                    await self._wake.wait()

    async def stop_all(self) -> None:
        """Stop every running instance (each bounded by its grace); used on agent exit."""
        jobs = []
        for iid, live in list(self._live.items()):
            if live.task is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(_SHUTDOWN_WAIT_S):
                        await asyncio.shield(live.task)
            if live.handle is not None and live.exited is None:
                record = self.state.instances[iid]
                jobs.append(self._stop(iid, live.handle, record.stop_grace_s, "agent exiting"))
        await asyncio.gather(*jobs, return_exceptions=True)
        await self._persist()

    async def close(self) -> None:
        """Let starts and stops under way finish (bounded), cancel the rest, persist."""
        pending = [live.task for live in self._live.values() if live.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=_SHUTDOWN_WAIT_S)
        await self._tasks.close()
        await self._persist()

    # One pass --------------------------------------------------------------------------------

    async def reconcile_once(self) -> None:
        now = self._clock()
        started_ns = time.time_ns()
        actions: list[Action] = []
        retries = 0
        ok = False
        try:
            actual = {iid: self._actual_of(iid) for iid in self.state.instances}
            actions = plan(
                self.state.desired,
                {k: v for k, v in actual.items() if v is not None},
                now=now,
                settings=self._settings,
            )
            # Counted before acting: a retried start may succeed before the pass ends.
            retries = sum(
                1
                for a in actions
                if isinstance(a, Start)
                and (r := self.state.instances.get(a.instance_id)) is not None
                and r.start_error
            )
            for action in actions:
                await self._execute(action, now)
            await self._driver.maintain()
            ok = await self._persist()
        finally:
            self._pass_done(actions, ok=ok, retries=retries, started_ns=started_ns)

    def _pass_done(
        self, actions: Sequence[Action], *, ok: bool, retries: int, started_ns: int
    ) -> None:
        """The one place a pass's outcome goes: metrics, convergence, reports, its span."""
        now = self._clock()
        reports = self._statuses(now)
        matching = {iid: _matches(self.state.desired[iid].desired, r) for iid, r in reports.items()}
        converged = self._convergence.observe(matching, now=now)
        for c in converged:
            self._log.debug(
                "converged", instance=c.instance_id, change=c.change, seconds=round(c.seconds, 3)
            )
        self.metrics.pass_done(
            PassOutcome(
                ok=ok,
                retries=retries,
                converged=converged,
                unconverged=self._convergence.unconverged,
                oldest_unconverged_s=self._convergence.oldest_age(now),
                phases=Counter(r.phase for r in reports.values()),
                stuck=Counter(r.stuck.reason for r in reports.values() if r.stuck is not None),
                revision=self.state.revision,
            )
        )
        self._report_changes(reports)
        if actions:
            # Only passes that did something: an idle agent ticks every probe interval.
            span = _tracer.start_span(
                "agent.reconcile",
                context=otel_context.Context(),
                start_time=started_ns,
                attributes={
                    "keel.host": self._settings.host,
                    "keel.actions": len(actions),
                    "keel.converged": len(converged),
                },
            )
            if not ok:
                span.set_status(Status(StatusCode.ERROR, "reconcile pass failed"))
            span.end()

    def _statuses(self, now: float) -> dict[str, InstanceReport]:
        return {
            iid: status_of(
                a,
                self._actual_of(iid),
                now=now,
                host=self._settings.host,
                health_stuck_after_s=self._settings.health_stuck_after_s,
            )
            for iid, a in sorted(self.state.desired.items())
        }

    def _actual_of(self, iid: str) -> Actual | None:
        record = self.state.instances.get(iid)
        if record is None:
            return None
        live = self._live.get(iid) or _Live()
        assignment = self.state.desired.get(iid)
        checked = assignment is not None and assignment.spec.health is not None
        probed = self._health.result(iid)
        return Actual(
            record=record,
            running=live.handle is not None and live.exited is None,
            exited=live.exited,
            exited_at=live.exited_at,
            healthy=probed.ok if checked and probed is not None else not checked,
            health_message=(probed.message if probed else "no health result yet")
            if checked
            else "",
            unhealthy_since=self._health.failing_since(iid) if checked else None,
            transition=live.transition,
            stopping_since=live.stopping_since,
            stderr_tail=live.stderr_tail,
        )

    async def _execute(self, action: Action, now: float) -> None:
        iid = action.instance_id
        live = self._live.setdefault(iid, _Live())
        record = self.state.instances.get(iid)
        ilog = self._log.bind(instance=iid, workload=record.workload if record else None)
        if isinstance(action, RecordExit):
            assert record is not None
            ilog.warning(
                "process exited",
                last_exit=action.last_exit,
                restart_in_s=action.backoff_s if action.next_start_at else None,
                crash_streak=action.crash_streak,
            )
            if action.crash_loop_since is not None and record.crash_loop_since is None:
                ilog.warning("crash loop", restart_count=record.restart_count)
            self._put(
                replace(
                    record,
                    pid=None,
                    start_time=None,
                    last_exit=action.last_exit,
                    last_exit_at=action.at,
                    backoff_s=action.backoff_s,
                    next_start_at=action.next_start_at,
                    crash_streak=action.crash_streak,
                    crash_loop_since=action.crash_loop_since,
                )
            )
            live.handle, live.exited, live.exited_at = None, None, None
            live.stopping_since = None
            if action.next_start_at is not None:
                live.stderr_tail = await asyncio.to_thread(
                    logread.tail_text,
                    logread.stream_files(self._settings.log_dir, iid, "stderr"),
                    STDERR_TAIL_BYTES,
                )
        elif isinstance(action, Start):
            if record is None:
                # The record must exist while starting: the planner sees the transition
                # through it and so does not start the instance a second time.
                self._put(InstanceRecord(iid, action.assignment.workload))
            live.transition = Transition.STARTING
            live.task = self._tasks.spawn(f"start {iid}", self._start(action))
        elif isinstance(action, Stop):
            assert live.handle is not None
            live.transition = Transition.STOPPING
            if live.stopping_since is None:
                live.stopping_since = now
            live.task = self._tasks.spawn(
                f"stop {iid}", self._stop(iid, live.handle, action.grace_s, action.why)
            )
        elif isinstance(action, ConfirmRemoved):
            if not self.sink.connected:
                return  # confirm once the control plane can hear it; the tombstone stays
            report = InstanceReport(
                iid,
                Phase.STOPPED,
                removed=True,
                restart_count=record.restart_count if record else 0,
                last_exit=record.last_exit if record else "",
            )
            self.sink.report([report])
            ilog.info("removal confirmed")
            await self._forget(iid, drop_desired=True)
        elif isinstance(action, Forget):
            ilog.info("orphan stopped and forgotten")
            await self._forget(iid, drop_desired=False)

    def _put(self, record: InstanceRecord) -> None:
        self.state = replace(
            self.state, instances={**self.state.instances, record.instance_id: record}
        )

    async def _forget(self, iid: str, *, drop_desired: bool) -> None:
        instances = {k: v for k, v in self.state.instances.items() if k != iid}
        desired = self.state.desired
        if drop_desired:
            desired = {k: v for k, v in desired.items() if k != iid}
        self.state = replace(self.state, instances=instances, desired=desired)
        live = self._live.pop(iid, None)
        if live is not None and live.watcher is not None:
            live.watcher.cancel()
        self._reported.pop(iid, None)
        self._health.forget(iid)
        await self._driver.forget(iid)

    # Per-instance tasks --------------------------------------------------------------------

    async def _start(self, action: Start) -> None:
        a = action.assignment
        iid = a.instance_id
        ilog = self._log.bind(instance=iid, workload=a.workload)
        live = self._live.setdefault(iid, _Live())
        record = self.state.instances.get(iid) or InstanceRecord(iid, a.workload)
        try:
            ports = dict(record.ports)
            if set(ports) != set(a.spec.ports):
                ports = self._driver.allocate_ports(a.spec.ports)
            env = instance_env(
                a.spec, host=self._settings.host, workload=a.workload, instance_id=iid, ports=ports
            )
            span = None
            if a.trace_context and not action.restart:
                # The first start of an operator's change joins that operator's trace.
                span = _tracer.start_span(
                    "agent.start_instance",
                    context=tracing.context_from_traceparent(a.trace_context),
                    attributes={
                        "keel.instance": iid,
                        "keel.workload": a.workload,
                        "keel.host": self._settings.host,
                    },
                )
            try:
                handle = await self._driver.start(iid, a.spec, env=env, ports=ports)
            except StartFailed as e:
                error = f"{e} (command: {shlex.join(a.spec.command)})"
            except Exception as e:  # one handler for every failure: reported, retried
                ilog.exception("start failed unexpectedly")
                error = f"{type(e).__name__}: {e}"
            else:
                error = ""
            if span is not None:
                if error:
                    span.set_status(Status(StatusCode.ERROR, error))
                else:
                    span.set_attribute("keel.pid", handle.pid)
                span.end()
            now = self._clock()
            current = self.state.instances.get(iid, record)
            if error:
                delay = next_crash_delay(
                    current.backoff_s,
                    0.0,
                    base_s=self._settings.backoff_base_s,
                    max_s=self._settings.backoff_max_s,
                    reset_s=self._settings.backoff_reset_s,
                )
                ilog.warning("start failed", error=error, retry_in_s=delay)
                self._put(
                    replace(
                        current,
                        ports=ports,
                        start_error=error,
                        start_failed_since=current.start_failed_since or now,
                        backoff_s=delay,
                        next_start_at=now + delay,
                    )
                )
            else:
                self._put(
                    replace(
                        current,
                        pid=handle.pid,
                        start_time=handle.start_time,
                        ports=ports,
                        starts=current.starts + 1,
                        restart_count=current.restart_count + (1 if action.restart else 0),
                        started_at=now,
                        start_error="",
                        start_failed_since=None,
                        next_start_at=None,
                        stop_grace_s=a.spec.stop_grace_ms / 1000.0,
                    )
                )
                live.handle, live.exited, live.exited_at = handle, None, None
                live.stopping_since = None
                self.metrics.started(restart=action.restart)
                self._health.forget(iid)  # a new process: its health is not known yet
                live.watcher = self._tasks.spawn(f"watch {iid}", self._watch(iid, handle))
                ilog.info("started", pid=handle.pid, ports=ports, restart=action.restart)
            # Persist before anything else: a pid not on disk is a process a restarted
            # agent could not adopt.
            await self._persist()
        finally:
            live.transition, live.task = None, None
            self.wake()

    async def _stop(self, iid: str, handle: Handle, grace_s: float, why: str) -> None:
        live = self._live.setdefault(iid, _Live())
        live.transition = Transition.STOPPING
        if live.stopping_since is None:
            live.stopping_since = self._clock()
        record = self.state.instances.get(iid)
        ilog = self._log.bind(
            instance=iid, workload=record.workload if record else None, pid=handle.pid
        )
        ilog.info("stopping", why=why, grace_s=grace_s)
        try:
            try:
                result = await self._driver.stop(handle, grace_s=grace_s)
            except TimeoutError:
                # Survived SIGKILL: reported STOP_TIMEOUT (stuck) while it lasts; the next
                # pass stops it again.
                ilog.error("process survives SIGKILL", stopping_for_s=self._stopping_for(live))
                raise
            if self._stopping_for(live) > grace_s:
                ilog.warning(
                    "process outlived its stop grace and was killed",
                    exit=result.describe(),
                    grace_s=grace_s,
                )
            ilog.info("stopped", exit=result.describe())
            record = self.state.instances.get(iid)
            if record is not None:
                self._put(
                    replace(
                        record,
                        pid=None,
                        start_time=None,
                        last_exit=result.describe(),
                        last_exit_at=self._clock(),
                        next_start_at=None,
                    )
                )
            live.handle, live.exited, live.exited_at = None, None, None
            live.stopping_since = None
            if live.watcher is not None:
                live.watcher.cancel()
            await self._persist()
        finally:
            live.transition, live.task = None, None
            self.wake()

    def _stopping_for(self, live: _Live) -> float:
        return self._clock() - live.stopping_since if live.stopping_since is not None else 0.0

    async def _watch(self, iid: str, handle: Handle) -> None:
        result = await self._driver.wait(handle)
        live = self._live.get(iid)
        if live is None or live.handle != handle or live.transition is Transition.STOPPING:
            return  # a stop we asked for: `_stop` records it
        live.exited, live.exited_at = result, self._clock()
        self.wake()

    def _probe_targets(self) -> list[Target]:
        """Running instances with a health check, for the health monitor."""
        targets = []
        for iid, live in self._live.items():
            a = self.state.desired.get(iid)
            record = self.state.instances.get(iid)
            if a is None or a.spec.health is None or record is None:
                continue
            if live.handle is None or live.exited is not None or live.transition is not None:
                continue
            env = instance_env(
                a.spec,
                host=self._settings.host,
                workload=a.workload,
                instance_id=iid,
                ports=record.ports,
            )
            targets.append(Target(iid, a.spec.health, dict(record.ports), env, a.workload))
        return targets

    # Outputs ----------------------------------------------------------------------------------

    async def _persist(self) -> bool:
        """Save local state if it changed; False if it could not be saved (retried later)."""
        async with self._save_lock:
            snapshot = self.state
            if snapshot == self._saved:
                return True
            try:
                await self._store.save(snapshot)
            except StateError as e:
                self._log.error("cannot persist local state; will retry", error=str(e))
                return False
            self._saved = snapshot
            return True

    def _report_changes(self, reports: dict[str, InstanceReport]) -> None:
        if not self.sink.connected:
            return  # the full report after the next Hello covers everything
        changed = []
        for iid, report in reports.items():
            if self._reported.get(iid) != report:
                changed.append(report)
                self._reported[iid] = report
        if changed:
            self.sink.report(changed)


def _matches(desired: Desired, report: InstanceReport) -> bool:
    """Does the instance match its desired state (`keel.model.converged`; a tombstone
    matches once confirmed, i.e. gone from the desired set: see `agent.convergence`)?"""
    return converged(desired, report.phase, report.ready)
