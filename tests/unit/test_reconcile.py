"""The one reconcile runner: every outcome of a pass, the back-off, the failures the stuck
detector reads, fresh keys first, and no span for an idle pass. Real asyncio, no sleeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controlplane.errors import NotLeader
from controlplane.metrics import Metrics
from controlplane.reconcile import (
    DONE,
    IDLE,
    PermanentError,
    Result,
    Runner,
    TemporaryError,
    Term,
    backoff_s,
    describe,
    requeue_after,
)
from keel import tracing

Pass = Callable[[], Awaitable[Result]]


async def forever() -> Result:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@dataclass
class Script:
    """A controller whose passes do what the test says: the nth pass of a key runs
    passes[n] (a pass past the script blocks), and every pass is recorded."""

    passes: list[Pass] = field(default_factory=list)
    all_keys: list[str] = field(default_factory=list)
    name: str = "workload"
    key_label: str = "workload"
    seen: list[str] = field(default_factory=list)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def keys(self) -> list[str]:
        return list(self.all_keys)

    async def reconcile(self, key: str, *, term: Term) -> Result:
        n = sum(1 for k in self.seen if k == key)
        self.seen.append(key)
        async with self._progress:
            self._progress.notify_all()
        step = self.passes[n] if n < len(self.passes) else forever
        return await step()

    async def started(self, passes: int) -> None:
        """Waits (at most 5 s) until `passes` passes have started."""
        async with asyncio.timeout(5), self._progress:
            await self._progress.wait_for(lambda: len(self.seen) >= passes)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def runner(script: Script, **kwargs: object) -> Runner:
    options: dict[str, object] = {
        "metrics": Metrics(),
        "retry_base_s": 5.0,
        "retry_max_s": 30.0,
        "resync_period_s": None,
        "rng": lambda: 1.0,  # no jitter: the full delay
    }
    options.update(kwargs)
    return Runner(script, **options)  # type: ignore[arg-type]


def sample(r: Runner, name: str, **labels: str) -> float:
    value = r._metrics.registry.get_sample_value(name, {"controller": "workload", **labels})
    return value or 0.0


def returns(result: Result) -> Pass:
    async def step() -> Result:
        return result

    return step


def raises(exc: BaseException) -> Pass:
    async def step() -> Result:
        raise exc

    return step


@dataclass(frozen=True)
class Case:
    step: Pass
    ends_with: type[BaseException] | None  # what run() raises (None: it keeps running)
    result: str | None  # the keel_reconcile_total result counted (None: not counted)
    retries: int  # keel_reconcile_retries_total
    next_turn_s: float | None  # the key's timer (None: no timer)
    queued: bool  # handed straight back to the queue
    failure: bool | None  # None: no failure kept; else whether it is permanent


CASES = {
    "done is looked at again only when something changes": Case(
        returns(DONE), None, "success", 0, None, False, None
    ),
    "requeue_after sets the key's own timer": Case(
        returns(requeue_after(5)), None, "success", 0, 5, False, None
    ),
    "a temporary error is retried after the back-off": Case(
        raises(TemporaryError("the database is away")), None, "error", 1, 5, False, False
    ),
    "an unexpected error is temporary": Case(
        raises(ValueError("boom")), None, "error", 1, 5, False, False
    ),
    "a permanent error is not retried and is kept for the stuck detector": Case(
        raises(PermanentError("refused")), None, "error", 0, None, False, True
    ),
    "a deposed leader hands the key back and stops": Case(
        raises(NotLeader("deposed")), NotLeader, None, 0, None, True, None
    ),
    "a cancelled pass hands the key back and stops": Case(
        raises(asyncio.CancelledError()), asyncio.CancelledError, None, 0, None, True, None
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_runner_outcomes(case: Case) -> None:
    """Each way a pass can end becomes the key's next turn, the metrics and the failure."""
    script = Script(passes=[case.step])
    r = runner(script)
    r.queue.add("web")
    key = await r.queue.get()
    try:
        if case.ends_with is not None:
            with pytest.raises(case.ends_with):
                await r.process(key, term=Term(epoch=7, started_at=0.0))
        else:
            await r.process(key, term=Term(epoch=7, started_at=0.0))
        assert script.seen == ["web"]
        for result in ("success", "error"):
            counted = sample(r, "keel_reconcile_total", result=result)
            assert counted == (1 if result == case.result else 0), result
        assert sample(r, "keel_reconcile_retries_total") == case.retries
        waiting = r.queue.waiting("web")
        if case.next_turn_s is None:
            assert waiting is None
        else:
            assert waiting is not None and 0 < waiting <= case.next_turn_s
        assert len(r.queue) == (1 if case.queued else 0)
        failure = r.failures().get("web")
        assert (None if failure is None else failure.permanent) == case.failure
    finally:
        r.close()


async def test_a_deposed_runner_stops_and_keeps_the_key_for_the_next_term() -> None:
    """NotLeader from a pass ends run() with NotLeader (Leadership campaigns again); the key
    is queued for whoever leads next."""
    script = Script(passes=[raises(NotLeader("deposed"))])
    r = runner(script)
    r.add("web")
    with pytest.raises(NotLeader):
        await asyncio.wait_for(r.run(epoch=3), 5)
    assert len(r.queue) == 1
    r.close()


async def test_cancelling_the_runner_mid_pass_hands_the_key_back() -> None:
    """Leadership stops the runner while a pass awaits: the key waits for the next term."""
    script = Script(passes=[forever])
    r = runner(script)
    task = asyncio.create_task(r.run(epoch=1))
    r.add("web")
    await script.started(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(r.queue) == 1
    assert sample(r, "keel_reconcile_total", result="success") == 0
    r.close()


async def test_a_retried_key_comes_back_and_success_forgets_the_failure() -> None:
    """A temporary error comes back by itself after its back-off; success clears the failure."""
    script = Script(passes=[raises(TemporaryError("away")), returns(requeue_after(0))])
    r = runner(script, retry_base_s=0.01)
    task = asyncio.create_task(r.run(epoch=1))
    r.add("web")
    try:
        await script.started(3)  # the retry succeeded and asked for a third pass
        assert sample(r, "keel_reconcile_total", result="success") == 1
        assert r.failures() == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_failures_say_how_long_and_how_often_with_the_last_error() -> None:
    """The stuck detector reads failing_for_s on the runner's clock, from the first failure."""
    clock = Clock()
    script = Script()
    r = runner(script, clock=clock)
    term = Term(epoch=1, started_at=clock.now, clock=clock)
    script.passes = [raises(TemporaryError("first")), raises(TemporaryError("second"))]
    await r.process("web", term=term)
    clock.now += 7
    await r.process("web", term=term)
    failure = r.failures()["web"]
    assert (failure.error, failure.attempts, failure.failing_for_s) == ("second", 2, 7.0)
    assert not failure.permanent
    r.close()


async def test_back_off_doubles_per_attempt_and_is_capped() -> None:
    """Retry n waits base * 2^(n-1), capped at retry_max, jittered into [half, full]."""
    full = [backoff_s(n, base_s=0.1, max_s=1.0, rng=lambda: 1.0) for n in range(1, 7)]
    assert full == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff_s(3, base_s=0.1, max_s=1.0, rng=lambda: 0.0) == pytest.approx(0.2)


async def test_a_periodic_key_is_retried_no_later_than_its_period() -> None:
    """A pass that asked to come back every 0.5 s and then fails retries within 0.5 s,
    however large the back-off has grown."""
    clock = Clock()
    script = Script(passes=[returns(requeue_after(0.5))] + [raises(TemporaryError("x"))] * 6)
    r = runner(script, retry_base_s=10.0, clock=clock)
    term = Term(epoch=1, started_at=clock.now, clock=clock)
    for _ in range(7):
        await r.process("liveness", term=term)
    waiting = r.queue.waiting("liveness")
    assert waiting is not None and waiting <= 0.5
    r.close()


async def test_a_key_that_asked_to_come_back_at_once_still_backs_off_when_it_fails() -> None:
    """requeue_after(0) (more to do now) sets no period: a failure after it backs off as usual
    instead of retrying in a busy loop."""
    clock = Clock()
    script = Script(passes=[returns(requeue_after(0)), raises(TemporaryError("x"))])
    r = runner(script, retry_base_s=5.0, clock=clock)
    term = Term(epoch=1, started_at=clock.now, clock=clock)
    for _ in range(2):
        await r.process("web", term=term)
    waiting = r.queue.waiting("web")
    assert waiting is not None and 4.0 < waiting <= 5.0
    r.close()


async def test_a_fresh_key_is_processed_before_a_queued_resync() -> None:
    """The term's resync queues 300 keys; a key added fresh is processed next, not 301st."""
    release = asyncio.Event()

    async def slow() -> Result:
        await release.wait()
        return DONE

    script = Script(all_keys=[f"w{n:03d}" for n in range(300)])
    script.passes = [slow]
    r = runner(script)
    task = asyncio.create_task(r.run(epoch=1))
    try:
        await script.started(1)  # w000 is being processed
        assert len(r.queue) == 299
        r.add("fresh")
        release.set()
        await script.started(3)
        assert script.seen[:3] == ["w000", "fresh", "w001"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_queue_gauges_read_zero_while_not_leading() -> None:
    """A follower's queue waits for no one; the leader's depth and oldest age are exported."""
    clock = Clock()
    gate = asyncio.Event()

    async def blocked() -> Result:
        await gate.wait()
        return DONE

    script = Script(passes=[blocked])
    r = runner(script, clock=clock)
    r.add("a")
    r.add("b")
    assert sample(r, "keel_workqueue_depth") == 0
    task = asyncio.create_task(r.run(epoch=1))
    try:
        await script.started(1)
        clock.now += 3
        assert sample(r, "keel_workqueue_depth") == 1
        assert sample(r, "keel_workqueue_oldest_seconds") == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sample(r, "keel_workqueue_oldest_seconds") == 0


def spans(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_an_idle_pass_makes_no_span_but_a_writing_or_failing_one_does(
    tmp_path: Path,
) -> None:
    """Idle periodic passes leave the trace file alone; a pass that did something or failed
    is a span (the failure with ERROR status and the message a person reads)."""
    path = tmp_path / "spans.jsonl"
    tracing.configure_tracing("keel-test", trace_file=str(path))
    try:
        script = Script(
            passes=[
                returns(IDLE),
                returns(requeue_after(30, idle=True)),
                returns(DONE),
                raises(TemporaryError("disk full")),
            ]
        )
        r = runner(script)
        term = Term(epoch=1, started_at=0.0)
        for _ in range(2):
            await r.process("web", term=term)
        assert spans(path) == []
        await r.process("web", term=term)
        await r.process("web", term=term)
        r.close()
    finally:
        tracing.shutdown_tracing()
    written = spans(path)
    assert [s["name"] for s in written] == ["reconcile workload"] * 2
    assert [s["status"] for s in written] == ["UNSET", "ERROR"]
    assert all(s["attributes"] == {"keel.workload": "web"} for s in written)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (TemporaryError("the database is away"), "the database is away"),
        (PermanentError(), "The reconcile cannot succeed as things are"),
        (ValueError(), "an unexpected error; the control plane's log has the details"),
        (TimeoutError(), "timed out"),
        (RuntimeError("line one\nline two"), "line one"),
    ],
)
def test_describe_gives_the_message_a_person_reads(exc: BaseException, text: str) -> None:
    """The error text in logs and stuck messages: its message, never a class name."""
    described = describe(exc)
    assert described.startswith(text)
    assert type(exc).__name__ not in described


async def test_a_failing_streak_does_not_span_two_terms() -> None:
    """Failures kept from an earlier term are forgotten when the runner leads again."""
    script = Script(passes=[raises(TemporaryError("away"))])
    r = runner(script)
    await r.process("web", term=Term(epoch=1, started_at=0.0))
    assert "web" in r.failures()
    r.add("web")
    task = asyncio.create_task(r.run(epoch=2))
    try:
        await script.started(2)  # the new term is looking at the key again
        assert "web" not in r.failures()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        r.close()


async def test_a_named_change_is_fresh_and_a_resync_request_goes_behind() -> None:
    """add(name) (the cache read a named workload's change) queues it ahead of the resync;
    resync_now (the hosts changed: no workload named) lists every key again behind the fresh
    ones."""
    gate = asyncio.Event()

    async def held() -> Result:
        await gate.wait()
        return DONE

    script = Script(all_keys=["a", "b"], passes=[returns(DONE), held])
    r = runner(script)
    task = asyncio.create_task(r.run(epoch=1))
    try:
        await script.started(2)  # the term's resync: "a" and "b", done
        r.resync_now()
        await script.started(3)  # "a" again, held; "b" waits behind it
        r.add("c")
        gate.set()
        await script.started(5)
        assert script.seen == ["a", "b", "a", "c", "b"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        r.close()


async def test_a_term_ends_even_when_a_pass_swallows_its_cancel() -> None:
    """On Python 3.11 a cancel that lands as `asyncio.wait_for` times out (asyncpg's acquire)
    comes out as a TimeoutError: the pass fails as if the database were slow and the cancel is
    lost. The runner must still end when its term does, or the leader waits for it forever
    (a Postgres freeze once left the leader holding its lock with no controller running)."""
    swallowed = asyncio.Event()

    async def swallows_cancel() -> Result:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
            raise TimeoutError("the database did not answer in time") from None
        raise AssertionError("unreachable")

    script = Script(passes=[swallows_cancel], all_keys=["web"])
    r = runner(script)
    term = asyncio.create_task(r.run(1))
    await script.started(1)
    term.cancel()
    done, _ = await asyncio.wait([term], timeout=5)
    assert term in done, "the runner did not end when its term was cancelled"
    assert term.cancelled() and swallowed.is_set()
