"""The executor: one loop that plans (`agent.planner`) and acts through a driver.

It wakes when the desired set changes (`apply_assignments`, called by `agent.sync`), when a
process exits (a watcher per process), when a health result changes, and every
--probe-interval. Each pass reads desired and actual afresh (level-triggered), performs the
planned actions (starts and stops are per-instance tasks, so one slow stop holds nothing else
up), persists local state (`agent.state`), and hands every desired instance's status to the
one outcome handler (`agent.outcome`: convergence, metrics, reports, span). On open it adopts
the processes a previous agent left running.

The decisions are pure, elsewhere: what to do (`agent.planner`), when to restart
(`agent.restart`), what to report and whether it is stuck (`agent.status`, `agent.stuck`).
The reconciler keeps the live facts they need (`agent.live`) and starts and stops processes
through `agent.startstop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from agent import logread, restart, secretenv
from agent.errors import StateError
from agent.health import HealthMonitor, Prober, probe
from agent.live import Live, actual_of, probe_targets
from agent.metrics import AgentMetrics
from agent.outcome import Outbox, Outcomes, StatusSink
from agent.planner import (
    Action,
    Actual,
    ConfirmRemoved,
    Forget,
    RecordExit,
    Start,
    Stop,
    Transition,
    plan,
    self_fences,
)
from agent.runtime.base import Driver, Handle
from agent.settings import Settings
from agent.startstop import halt, launch
from agent.state import Assignment, InstanceRecord, LocalState, StateStore
from agent.status import InstanceReport, removal_confirmed, status_of
from agent.tasks import TaskGroup
from keel.model import Desired
from keel.redact import Redactor
from keel.stuck import STDERR_TAIL_BYTES

log = structlog.get_logger("agent.reconciler")

# On shutdown, a start or stop under way gets this long to finish before it is cancelled.
_SHUTDOWN_WAIT_S = 5.0
# A probe gets at least this long even when tests shorten --probe-interval below it.
_PROBE_TIMEOUT_MIN_S = 1.0


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
        self._outcomes = Outcomes(host=settings.host, metrics=self.metrics, sink=sink or Outbox())
        self._driver = driver
        self._settings = settings
        self._policy = restart.Policy.of(settings)
        self._clock = clock
        self.state = LocalState()
        self._live: dict[str, Live] = {}
        self._wake = asyncio.Event()
        self._tasks = TaskGroup()
        self._health_task: asyncio.Task[Any] | None = None
        self._log = log.bind(host=settings.host)
        # The revision of the desired set whose unwanted processes were all stopped at the end
        # of a pass: what heartbeats say the agent has acted on.
        self._acted_revision = 0
        # When the control plane last recorded this host alive, as far as the agent knows
        # (epoch s: the sending of its last acknowledged heartbeat or answered Hello); kept in
        # the state dir (`StateStore.save_contact`) so a restarted agent still counts
        # on_disconnect.stop_after from it. None: never.
        self._contact_at: float | None = None
        self._health = HealthMonitor(
            targets=lambda: probe_targets(self._live, self.state, host=settings.host),
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

    @property
    def acted_revision(self) -> int:
        """The last revision acted on: no process runs that its desired set does not want
        running (a host comes back READY only by a heartbeat at its current revision)."""
        return self._acted_revision

    def heard(self, at: float) -> None:
        """The control plane recorded this host alive at `at` or later (epoch s): the
        on_disconnect clock starts over from there."""
        if self._contact_at is None or at > self._contact_at:
            self._contact_at = at
            try:
                self._store.save_contact(at)
            except StateError as e:
                # Kept in memory all the same; a restart would count from an older contact,
                # which stops a self-fencing workload sooner, never later.
                self._log.warning("cannot keep the contact time", error=str(e))

    @property
    def self_fencing(self) -> bool:
        """True while a desired instance may stop itself when cut off (on_disconnect)."""
        return any(self_fences(a) for a in self.state.desired.values())

    def cut_off_s(self, now: float) -> float | None:
        """How long the control plane has not recorded this host alive (None: never did)."""
        contact = self._contact_at
        return None if contact is None else max(0.0, now - contact)

    def wake(self) -> None:
        self._wake.set()

    def knows(self, instance_id: str) -> bool:
        """True if the instance is desired on this host or still has local state here."""
        return instance_id in self.state.desired or instance_id in self.state.instances

    async def redactor(self, instance_id: str) -> tuple[Redactor, list[str]]:
        """What to take out of the instance's output before it leaves the host, and the
        secret_env variables whose value is not known (`agent.secretenv.redactor`)."""
        live = self._live.get(instance_id)
        assignment = self.state.desired.get(instance_id)
        return await asyncio.to_thread(
            secretenv.redactor,
            assignment.spec if assignment is not None else None,
            live.secrets if live is not None else Redactor(),
        )

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
        self.state, changed = self.state.with_desired(
            full=full, revision=revision, assignments=assignments
        )
        for a in changed:
            self._outcomes.desired_changed(a.instance_id, a.desired, at=now)
        self._log.info(
            "desired state received", full=full, revision=revision, count=len(assignments)
        )
        self.wake()

    def full_report(self) -> list[InstanceReport]:
        """Every desired instance's status (sent after Hello); marks them all as reported."""
        return self._outcomes.full_report(self._statuses(self._clock()))

    # Lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load local state and adopt the processes a previous agent started."""
        self.state = await asyncio.to_thread(self._store.load)
        self._contact_at = await asyncio.to_thread(self._store.load_contact)
        now = self._clock()
        for iid, record in self.state.instances.items():
            if record.pid is None:
                continue
            handle = self._driver.adopt(iid, record.pid, record.start_time or 0.0)
            live = self._live[iid] = Live.adopted(handle, now=now)
            ilog = self._log.bind(instance=iid, workload=record.workload, pid=record.pid)
            if handle is None:
                ilog.info("process exited while the agent was away")
            else:
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
        revision = self.state.revision
        try:
            actual = {iid: self._actual_of(iid) for iid in self.state.instances}
            actions = plan(
                self.state.desired,
                {k: v for k, v in actual.items() if v is not None},
                now=now,
                settings=self._settings,
                cut_off_s=self.cut_off_s(now),
            )
            retries = sum(1 for a in actions if isinstance(a, Start) and a.retry)
            for action in actions:
                await self._execute(action, now)
            await self._driver.maintain()
            ok = await self._persist()
            if not self._unwanted_running():
                self._acted_revision = max(self._acted_revision, revision)
        finally:
            # The one place a pass's outcome goes: metrics, convergence, reports, its span.
            self._outcomes.pass_done(
                self._statuses(self._clock()),
                {iid: a.desired for iid, a in self.state.desired.items()},
                actions=len(actions),
                ok=ok,
                retries=retries,
                revision=self.state.revision,
                started_ns=started_ns,
                now=self._clock(),
            )

    def _unwanted_running(self) -> bool:
        """A process runs, starts or stops that the desired set does not want running."""
        for iid, live in self._live.items():
            a = self.state.desired.get(iid)
            if a is not None and a.desired is Desired.RUNNING:
                continue
            if live.transition is not None or (live.handle is not None and live.exited is None):
                return True
        return False

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
        return actual_of(
            record,
            self._live.get(iid) or Live(),
            self.state.desired.get(iid),
            probed=self._health.result(iid),
            failing_since=self._health.failing_since(iid),
        )

    async def _execute(self, action: Action, now: float) -> None:
        iid = action.instance_id
        live = self._live.setdefault(iid, Live())
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
                record.exited(
                    action.last_exit,
                    at=action.at,
                    backoff_s=action.backoff_s,
                    next_start_at=action.next_start_at,
                    crash_streak=action.crash_streak,
                    crash_loop_since=action.crash_loop_since,
                )
            )
            live.process_gone()
            if action.next_start_at is not None:
                tail = await asyncio.to_thread(
                    logread.stderr_tail, self._settings.log_dir, iid, STDERR_TAIL_BYTES
                )
                redactor, unknown = await self.redactor(iid)
                live.stderr_tail = (
                    redactor.text(tail) if not unknown else secretenv.withheld(unknown)
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
            live.stopping(now)
            live.task = self._tasks.spawn(
                f"stop {iid}", self._stop(iid, live.handle, action.grace_s, action.why)
            )
        elif isinstance(action, ConfirmRemoved):
            if not self._outcomes.confirm_removed(removal_confirmed(iid, record)):
                return  # confirm once the control plane can hear it; the tombstone stays
            ilog.info("removal confirmed")
            await self._forget(iid, drop_desired=True)
        elif isinstance(action, Forget):
            ilog.info("orphan stopped and forgotten")
            await self._forget(iid, drop_desired=False)

    def _put(self, record: InstanceRecord) -> None:
        self.state = self.state.with_record(record)

    async def _forget(self, iid: str, *, drop_desired: bool) -> None:
        self.state = self.state.without(iid, drop_desired=drop_desired)
        live = self._live.pop(iid, None)
        if live is not None and live.watcher is not None:
            live.watcher.cancel()
        self._outcomes.forget(iid)
        self._health.forget(iid)
        await self._driver.forget(iid)

    # Per-instance tasks --------------------------------------------------------------------

    async def _start(self, action: Start) -> None:
        a = action.assignment
        iid = a.instance_id
        ilog = self._log.bind(instance=iid, workload=a.workload)
        live = self._live.setdefault(iid, Live())
        try:
            record = self.state.instances.get(iid) or InstanceRecord(iid, a.workload)
            result = await launch(
                action, record, driver=self._driver, host=self._settings.host, log=ilog
            )
            now = self._clock()
            current = self.state.instances.get(iid, record)
            handle = result.handle
            if handle is None:
                retry = restart.after_start_failure(current, at=now, policy=self._policy)
                ilog.warning("start failed", error=result.error, retry_in_s=retry.backoff_s)
                self._put(
                    current.start_failed(
                        result.error,
                        ports=result.ports,
                        since=retry.failing_since,
                        backoff_s=retry.backoff_s,
                        next_start_at=retry.next_start_at,
                    )
                )
            else:
                self._put(
                    current.started(
                        handle.pid,
                        handle.start_time,
                        ports=result.ports,
                        at=now,
                        restart=action.restart,
                        stop_grace_s=a.spec.stop_grace_ms / 1000.0,
                    )
                )
                live.process_gone()
                live.handle = handle
                live.secrets = result.secrets
                self.metrics.started(restart=action.restart)
                self._health.forget(iid)  # a new process: its health is not known yet
                live.watcher = self._tasks.spawn(f"watch {iid}", self._watch(iid, handle))
                ilog.info("started", pid=handle.pid, ports=result.ports, restart=action.restart)
            # Persist before anything else: a pid not on disk is a process a restarted
            # agent could not adopt.
            await self._persist()
        finally:
            live.transition, live.task = None, None
            self.wake()

    async def _stop(self, iid: str, handle: Handle, grace_s: float, why: str) -> None:
        live = self._live.setdefault(iid, Live())
        live.stopping(self._clock())
        record = self.state.instances.get(iid)
        ilog = self._log.bind(
            instance=iid, workload=record.workload if record else None, pid=handle.pid
        )
        try:
            result = await halt(
                self._driver,
                handle,
                grace_s=grace_s,
                why=why,
                log=ilog,
                stopping_for=lambda: live.stopping_for(self._clock()),
            )
            record = self.state.instances.get(iid)
            if record is not None:
                self._put(record.stopped(result.describe(), at=self._clock()))
            live.process_gone()
            if live.watcher is not None:
                live.watcher.cancel()
            await self._persist()
        finally:
            live.transition, live.task = None, None
            self.wake()

    async def _watch(self, iid: str, handle: Handle) -> None:
        result = await self._driver.wait(handle)
        live = self._live.get(iid)
        if live is None or live.handle != handle or live.transition is Transition.STOPPING:
            return  # a stop we asked for: `_stop` records it
        live.exited, live.exited_at = result, self._clock()
        self.wake()

    # Outputs ----------------------------------------------------------------------------------

    async def _persist(self) -> bool:
        """Save local state if it changed; False if it could not be saved (retried later)."""
        try:
            await self._store.save_if_changed(self.state)
        except StateError as e:
            self._log.error("cannot persist local state; will retry", error=str(e))
            return False
        return True
