"""The one reconcile runner: every controller's keys, passes and outcomes go through `Runner`.

A controller (`Controller`: the workload controller in `workload`, `liveness`, the stuck
detector in `stuck`) only says what one pass over one key does. Its `reconcile` returns `DONE`,
`IDLE` (done, and nothing was found to do) or `requeue_after(seconds)` (look at this key again
then: a per-key timer, for periodic passes and deadlines), or raises:
- `PermanentError`: retrying cannot help (the database refuses the data). Not retried; the
  failure is kept (`failures`) for the stuck detector, which reports the object stuck at once.
  A fresh change to the key, or the periodic resync, looks at it again.
- anything else (`TemporaryError` to say so explicitly): retried with per-key exponential
  back-off, jittered, capped (`retry_base_s`, `retry_max_s`; never later than the key's own
  period), and reported stuck once it has failed past the object's deadline.
- cancellation or `NotLeader` (deposed): the key is handed back to the queue and the error
  propagates, so the runner stops and whoever leads next looks at the key again.

The runner owns the work queue (`workqueue.WorkQueue`: fresh keys before resync keys), the
periodic resync (`Controller.keys`), the span (none for an idle pass, so an idle fleet writes
no traces), the metrics (`keel_reconcile_*`, `keel_workqueue_depth`,
`keel_workqueue_oldest_seconds`) and the log line. Like kopf's `TemporaryError` and
`PermanentError` and controller-runtime's single `reconcileHandler`. `leader.Leadership` runs
one runner per controller while it leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog
from opentelemetry.trace import Status, StatusCode

from controlplane.cancelling import end_if_cancelled
from controlplane.errors import KeelError, NotLeader
from controlplane.metrics import Metrics
from controlplane.workqueue import WorkQueue
from keel import tracing

log = structlog.get_logger("keel.reconcile")
_tracer = tracing.tracer("keel.reconcile")

# A pass slower than this is logged: one pass is a few queries.
SLOW_PASS_S = 1.0
# The longest error text kept for the stuck message and the log line.
ERROR_TEXT_LIMIT = 500


@dataclass(frozen=True)
class Result:
    """How a pass ended: look again after `requeue_after_s` (None: only when something changes),
    and whether it was idle (found nothing to do: it makes no span)."""

    requeue_after_s: float | None = None
    idle: bool = False


DONE = Result()
IDLE = Result(idle=True)


def requeue_after(seconds: float, *, idle: bool = False) -> Result:
    return Result(requeue_after_s=max(0.0, seconds), idle=idle)


class TemporaryError(KeelError):
    """The reconcile failed for now; it is retried with back-off."""


class PermanentError(KeelError):
    """The reconcile cannot succeed as things are; it is not retried until the object changes."""


@dataclass(frozen=True)
class Term:
    """The leadership term a pass runs in: its epoch (checked by every write) and its start."""

    epoch: int | None
    started_at: float
    clock: Callable[[], float] = time.monotonic

    def age_s(self) -> float:
        return max(0.0, self.clock() - self.started_at)


@dataclass(frozen=True)
class ReconcileFailure:
    """A key whose passes keep failing: since when (as a duration), how often, the last error."""

    error: str
    attempts: int
    failing_for_s: float
    permanent: bool


class Controller(Protocol):
    # The `controller` label of the metrics and the log field naming the key.
    @property
    def name(self) -> str: ...
    @property
    def key_label(self) -> str: ...

    async def keys(self) -> Iterable[str]:
        """Every key this controller looks after (the term start and the periodic resync)."""
        ...

    async def reconcile(self, key: str, *, term: Term) -> Result: ...


def describe(exc: BaseException) -> str:
    """The error as a person reads it: its message (a Keel error's docstring when it has none),
    first line only, never a class name."""
    text = str(exc).strip()
    if not text and isinstance(exc, KeelError):
        text = (type(exc).__doc__ or "").strip()
    if not text and isinstance(exc, TimeoutError):
        text = "timed out"
    if not text and isinstance(exc, ConnectionError):
        text = "the connection was lost"
    if not text:
        text = "an unexpected error; the control plane's log has the details"
    return text.split("\n", 1)[0][:ERROR_TEXT_LIMIT]


def backoff_s(attempts: int, *, base_s: float, max_s: float, rng: Callable[[], float]) -> float:
    """Delay before retry number `attempts` (1 = the first): base * 2^(attempts-1), capped,
    then jittered into [half, full] so keys failing together do not retry together."""
    full = min(base_s * 2.0 ** max(0, attempts - 1), max_s)
    return full * (0.5 + rng() / 2)


@dataclass
class _Failing:
    first_at: float
    attempts: int
    error: str
    permanent: bool


class Runner:
    """Runs one controller: its queue, its resync, and the one outcome handler."""

    def __init__(
        self,
        controller: Controller,
        *,
        metrics: Metrics,
        retry_base_s: float,
        retry_max_s: float,
        resync_period_s: float | None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._controller = controller
        self._metrics = metrics
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._resync_period_s = resync_period_s
        self._clock = clock
        self._rng = rng
        self.queue = WorkQueue(clock=clock)
        self._failing: dict[str, _Failing] = {}
        # The period a key last asked for: a failed periodic pass is retried no later.
        self._period: dict[str, float] = {}
        self._resync_wanted = asyncio.Event()
        self._leading = False
        # A follower's queue waits for no one: its gauges read 0 until it leads.
        metrics.track_queue_depth(self.name, lambda: len(self.queue) if self._leading else 0)
        metrics.track_queue_oldest(self.name, lambda: self.queue.oldest_s() if self._leading else 0)

    @property
    def name(self) -> str:
        return self._controller.name

    def add(self, key: str) -> None:
        """Something about `key` changed: it goes ahead of the resync keys."""
        self.queue.add(key)

    def resync_now(self) -> None:
        """Queue every key behind the fresh ones now, not at the next period."""
        self._resync_wanted.set()

    def failures(self) -> dict[str, ReconcileFailure]:
        """The keys whose last pass failed, and since when they have been failing."""
        now = self._clock()
        return {
            key: ReconcileFailure(f.error, f.attempts, max(0.0, now - f.first_at), f.permanent)
            for key, f in self._failing.items()
        }

    def close(self) -> None:
        self.queue.close()

    async def run(self, epoch: int | None) -> None:
        """Processes keys for one leadership term until cancelled or deposed (NotLeader)."""
        term = Term(epoch=epoch, started_at=self._clock(), clock=self._clock)
        # A failing streak does not span the time this replica did not lead.
        self._failing.clear()
        self._leading = True
        self._resync_wanted.set()  # a term starts by looking at everything
        tasks = [
            asyncio.create_task(self._work(term), name=f"controller-{self.name}"),
            asyncio.create_task(self._resync(), name=f"controller-{self.name}-resync"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # a deposed worker's NotLeader propagates from here
        finally:
            self._leading = False
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resync(self) -> None:
        """Queues every key behind the fresh ones at the term's start, every resync period and
        on `resync_now`; level-triggered passes make a lost notification harmless."""
        failures = 0
        while True:
            wait_s = self._resync_period_s
            self._resync_wanted.clear()
            try:
                keys = list(await self._controller.keys())
            except NotLeader:
                raise
            except Exception as exc:
                failures += 1
                wait_s = backoff_s(
                    failures,
                    base_s=self._retry_base_s,
                    max_s=min(self._retry_max_s, wait_s or self._retry_max_s),
                    rng=self._rng,
                )
                log.warning("listing keys to resync failed; will retry", controller=self.name,
                            error=describe(exc), retry_in_s=round(wait_s, 3))  # fmt: skip
            else:
                failures = 0
                for key in keys:
                    self.queue.add_resync(key)
            end_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._resync_wanted.wait()

    async def _work(self, term: Term) -> None:
        # One worker: passes of one controller never race each other.
        while True:
            key = await self.queue.get()
            await self.process(key, term=term)
            end_if_cancelled()  # a cancel the pass swallowed (see `cancelling`)

    async def process(self, key: str, *, term: Term) -> None:
        """One pass over `key` and its outcome: the key's next turn, metrics, span, log line."""
        bound = log.bind(controller=self.name, **{self._controller.key_label: key})
        started = self._clock()
        with _tracer.start_as_current_span(
            f"reconcile {self.name}", attributes={f"keel.{self._controller.key_label}": key}
        ) as span:
            try:
                result = await self._controller.reconcile(key, term=term)
            except BaseException as exc:
                if not isinstance(exc, Exception) or isinstance(exc, NotLeader):
                    # Cancelled or deposed mid-pass: hand the key back, so the next term
                    # (the queue outlives it) processes it again.
                    self.queue.release(key)
                    raise
                elapsed = self._clock() - started
                self._metrics.observe_reconcile(self.name, ok=False, seconds=elapsed)
                error = describe(exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, error))
                failing = self._failed(key, error, permanent=isinstance(exc, PermanentError))
                # The class name is for whoever debugs the control plane: logs only.
                bound = bound.bind(error=error, error_type=type(exc).__name__)
                if failing.permanent:
                    self.queue.done(key)
                    bound.error("reconcile failed; not retried until the object changes",
                                attempts=failing.attempts)  # fmt: skip
                    return
                delay = backoff_s(
                    failing.attempts,
                    base_s=self._retry_base_s,
                    max_s=min(self._retry_max_s, self._period.get(key, self._retry_max_s)),
                    rng=self._rng,
                )
                self.queue.done(key, after_s=delay)
                self._metrics.count_retry(self.name)
                bound.warning("reconcile failed; will retry", retry_in_s=round(delay, 3),
                              attempts=failing.attempts)  # fmt: skip
                return
            elapsed = self._clock() - started
            self._metrics.observe_reconcile(self.name, ok=True, seconds=elapsed)
            if self._failing.pop(key, None) is not None:
                bound.info("reconcile succeeded again")
            if result.requeue_after_s:
                self._period[key] = result.requeue_after_s
            else:
                # None, or 0 ("more to do, at once"): no period that would cap a retry's
                # back-off (a cap of 0 would retry a failing key in a busy loop).
                self._period.pop(key, None)
            self.queue.done(key, after_s=result.requeue_after_s)
            if result.idle:
                tracing.discard(span)
            if elapsed > SLOW_PASS_S:
                bound.info("slow reconcile", seconds=round(elapsed, 3))

    def _failed(self, key: str, error: str, *, permanent: bool) -> _Failing:
        failing = self._failing.get(key)
        if failing is None:
            failing = self._failing[key] = _Failing(self._clock(), 0, error, permanent)
        failing.attempts += 1
        failing.error = error
        failing.permanent = permanent
        return failing
