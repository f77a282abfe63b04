"""The agent's executor with the fake driver and an injected clock: back-off, readiness,
tombstones, orphans and local state, without real processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from agent.health import ProbeResult, always_healthy
from agent.reconciler import Reconciler
from agent.runtime.base import ExitInfo
from agent.runtime.fake import FakeDriver
from agent.settings import Settings
from agent.state import Assignment, LocalState, StateStore
from agent.status import InstanceReport
from agent.stuck import CRASH_LOOP, HEALTH_CHECK_FAILING, START_FAILED
from keel.model import Desired, HealthCheck, Phase, WorkloadSpec

SPEC = WorkloadSpec(command=("sleep", "1000"), ports=("http",), min_ready_ms=5_000)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.reports: list[InstanceReport] = []

    def report(self, reports: Sequence[InstanceReport]) -> None:
        self.reports.extend(reports)

    def last(self, iid: str) -> InstanceReport:
        return [r for r in self.reports if r.instance_id == iid][-1]


def settings(tmp_path: Path) -> Settings:
    return Settings(
        host="h1",
        state_dir=tmp_path,
        backoff_base_s=10,
        backoff_max_s=40,
        backoff_reset_s=100,
        probe_interval_s=0.05,
    )


def assignment(iid: str = "web-1", desired: Desired = Desired.RUNNING) -> Assignment:
    return Assignment(iid, "web", 1, desired, SPEC)


async def until(rec: Reconciler, cond: Callable[[], bool], within: float = 5.0) -> None:
    """Reconcile until `cond` holds, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        await rec.reconcile_once()
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)


def sample(rec: Reconciler, name: str, **labels: str) -> float | None:
    return rec.metrics.registry.get_sample_value(name, labels)


def backing_off(sink: Sink, iid: str = "web-1") -> bool:
    """The exit is recorded and the restart waits its back-off."""
    last = sink.last(iid)
    return last.phase is Phase.FAILED and last.reason == CRASH_LOOP


async def make(tmp_path: Path, clock: Clock, sink: Sink) -> tuple[Reconciler, FakeDriver]:
    driver = FakeDriver()
    rec = Reconciler(
        StateStore(tmp_path / "state.json"),
        driver=driver,
        settings=settings(tmp_path),
        clock=clock,
        prober=always_healthy,
        sink=sink,
    )
    await rec.open()
    return rec, driver


async def test_crash_restarts_after_doubling_backoff(tmp_path: Path) -> None:
    """A crashed instance restarts only after the back-off, which doubles on the next crash."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=3, assignments=[assignment()])
    await until(rec, lambda: "web-1" in driver.running())
    first_pid = driver.running()["web-1"].pid

    driver.crash("web-1", ExitInfo(code=2))
    await until(rec, lambda: backing_off(sink))
    assert sink.last("web-1").last_exit == "exit code 2"
    clock.now += 9.9
    await rec.reconcile_once()
    assert "web-1" not in driver.running()

    clock.now += 0.1
    await until(rec, lambda: "web-1" in driver.running())
    assert driver.running()["web-1"].pid != first_pid
    await until(rec, lambda: sink.last("web-1").phase is Phase.RUNNING)
    assert rec.state.instances["web-1"].restart_count == 1

    driver.crash("web-1")
    await until(rec, lambda: backing_off(sink))
    assert rec.state.instances["web-1"].backoff_s == 20
    clock.now += 19.9
    await rec.reconcile_once()
    assert "web-1" not in driver.running()
    clock.now += 0.1
    await until(rec, lambda: "web-1" in driver.running())
    await until(rec, lambda: rec.state.instances["web-1"].restart_count == 2)
    await rec.close()


async def test_backoff_resets_after_a_long_healthy_run(tmp_path: Path) -> None:
    """After running at least backoff-reset, the next crash waits the base again."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: "web-1" in driver.running())
    for _ in range(3):  # grow the back-off to its cap
        driver.crash("web-1")
        await until(rec, lambda: backing_off(sink))
        clock.now += 60
        await until(rec, lambda: "web-1" in driver.running())
    assert rec.state.instances["web-1"].backoff_s == 40
    clock.now += 100
    driver.crash("web-1")
    await until(rec, lambda: backing_off(sink))
    assert rec.state.instances["web-1"].backoff_s == 10
    await rec.close()


async def test_restart_is_ready_only_after_min_ready(tmp_path: Path) -> None:
    """The first start is ready at once; after a restart only once up for min_ready."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: sink.reports != [] and sink.last("web-1").ready)
    driver.crash("web-1")
    await until(rec, lambda: backing_off(sink))
    clock.now += 10
    await until(rec, lambda: sink.last("web-1").phase is Phase.RUNNING)
    assert sink.last("web-1").restart_count == 1
    assert not sink.last("web-1").ready
    clock.now += 4.9
    await rec.reconcile_once()
    assert not sink.last("web-1").ready
    clock.now += 0.1
    await rec.reconcile_once()
    assert sink.last("web-1").ready
    await rec.close()


async def test_tombstone_is_stopped_confirmed_and_forgotten(tmp_path: Path) -> None:
    """A REMOVED instance is stopped, reported removed=true, and dropped from local state."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: "web-1" in driver.running())
    rec.apply_assignments(full=False, revision=2, assignments=[assignment(desired=Desired.REMOVED)])
    await until(rec, lambda: any(r.removed for r in sink.reports))
    assert "web-1" not in driver.running()
    assert "web-1" not in rec.state.instances and "web-1" not in rec.state.desired
    await rec.close()


async def test_tombstone_confirmation_waits_for_a_connection(tmp_path: Path) -> None:
    """While disconnected the tombstone is kept, so the removal is confirmed on reconnect."""
    clock, sink = Clock(), Sink(connected=False)
    rec, _ = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment(desired=Desired.REMOVED)])
    await rec.reconcile_once()
    assert "web-1" in rec.state.desired
    sink.connected = True
    await rec.reconcile_once()
    assert sink.reports[-1].removed and "web-1" not in rec.state.desired
    await rec.close()


async def test_orphan_absent_from_full_set_is_stopped_and_forgotten(tmp_path: Path) -> None:
    """A full set without a running instance stops it and forgets it, without a report."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment("a"), assignment("b")])
    await until(rec, lambda: set(driver.running()) == {"a", "b"})
    rec.apply_assignments(full=True, revision=2, assignments=[assignment("b")])
    await until(rec, lambda: "a" not in rec.state.instances)
    assert set(driver.running()) == {"b"}
    assert not any(r.instance_id == "a" and r.removed for r in sink.reports)
    await rec.close()


async def test_start_failure_is_reported_and_retried(tmp_path: Path) -> None:
    """A start failure is FAILED/START_FAILED with the error, then retried after back-off."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    driver.fail_next_start("web-1", "exec nope: executable file not found in PATH")
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(
        rec,
        lambda: (
            sink.reports != []
            and (sink.last("web-1").phase, sink.last("web-1").reason)
            == (Phase.FAILED, START_FAILED)
        ),
    )
    assert sink.last("web-1").phase is Phase.FAILED
    assert "executable file not found" in sink.last("web-1").message
    clock.now += 10
    await until(rec, lambda: "web-1" in driver.running())
    assert rec.state.instances["web-1"].restart_count == 0
    assert sample(rec, "keel_agent_reconcile_retries_total") == 1
    assert sample(rec, "keel_agent_reconcile_total", result="success") > 0
    await rec.close()


async def test_local_state_keeps_revision_desired_and_process(tmp_path: Path) -> None:
    """state.json holds the revision, the desired set with its spec, pid and ports."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=7, assignments=[assignment()])
    state_file = tmp_path / "state.json"
    await until(rec, lambda: '"pid": 1000000' in state_file.read_text())
    data = json.loads(state_file.read_text())
    assert data["revision"] == 7
    assert data["desired"]["web-1"]["spec"] == SPEC.to_json()
    inst = data["instances"]["web-1"]
    assert inst["pid"] == driver.running()["web-1"].pid
    assert set(inst["ports"]) == {"http"}
    env = driver.env_of("web-1")
    assert env["KEEL_PORT_HTTP"] == str(inst["ports"]["http"])
    assert env["KEEL_INSTANCE"] == "web-1" and env["KEEL_HOST"] == "h1"
    await rec.close()


@pytest.mark.parametrize("text", ["{not json", '{"version": 99}'])
async def test_corrupt_state_file_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    """An unreadable state file is refused with a message naming it, not silently emptied."""
    (tmp_path / "state.json").write_text(text)
    rec = Reconciler(
        StateStore(tmp_path / "state.json"), driver=FakeDriver(), settings=settings(tmp_path)
    )
    with pytest.raises(Exception, match="state"):
        await rec.open()


async def test_ready_follows_the_health_probe(tmp_path: Path) -> None:
    """With a health check, an instance is ready only while its probe passes."""
    verdict = {"ok": False}

    async def prober(check: HealthCheck, **_: object) -> ProbeResult:
        return ProbeResult(verdict["ok"], "" if verdict["ok"] else "tcp probe: refused")

    clock, sink = Clock(), Sink()
    driver = FakeDriver()
    rec = Reconciler(
        StateStore(tmp_path / "state.json"),
        driver=driver,
        settings=settings(tmp_path),
        clock=clock,
        prober=prober,
        sink=sink,
    )
    await rec.open()
    checked = Assignment(
        "web-1", "web", 1, Desired.RUNNING, replace(SPEC, health=HealthCheck(tcp="http"))
    )
    rec.apply_assignments(full=True, revision=1, assignments=[checked])
    loop = asyncio.create_task(rec.run())
    try:
        await until(
            rec, lambda: sink.reports != [] and sink.last("web-1").message == "tcp probe: refused"
        )
        assert not sink.last("web-1").ready
        assert sink.last("web-1").reason == HEALTH_CHECK_FAILING
        verdict["ok"] = True
        await until(rec, lambda: sink.last("web-1").ready)
        verdict["ok"] = False
        await until(rec, lambda: not sink.last("web-1").ready)
    finally:
        loop.cancel()
        await rec.close()


async def test_slow_start_is_started_once(tmp_path: Path) -> None:
    """Passes that run while a slow start is under way do not start the instance again."""
    clock, sink = Clock(), Sink()
    driver = FakeDriver(start_delay_s=0.3)
    rec = Reconciler(
        StateStore(tmp_path / "state.json"),
        driver=driver,
        settings=settings(tmp_path),
        clock=clock,
        prober=always_healthy,
        sink=sink,
    )
    await rec.open()
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: sink.reports != [] and sink.last("web-1").phase is Phase.STARTING)
    await until(rec, lambda: sink.last("web-1").phase is Phase.RUNNING)
    assert rec.state.instances["web-1"].starts == 1
    assert driver.running()["web-1"].pid == 1_000_000
    await rec.close()


async def test_two_quick_crashes_are_a_crash_loop_that_clears_after_min_ready(
    tmp_path: Path,
) -> None:
    """The second quick exit reports CRASH_LOOP stuck; staying up min_ready clears it."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: "web-1" in driver.running())
    driver.crash("web-1")
    await until(rec, lambda: backing_off(sink))
    assert sink.last("web-1").stuck is None  # one crash: back-off, not yet a loop
    clock.now += 10
    await until(rec, lambda: "web-1" in driver.running())
    driver.crash("web-1")
    await until(rec, lambda: backing_off(sink) and sink.last("web-1").stuck is not None)
    stuck = sink.last("web-1").stuck
    assert stuck is not None and stuck.reason == CRASH_LOOP and stuck.since == clock.now
    assert sample(rec, "keel_agent_stuck_instances", reason=CRASH_LOOP) == 1
    clock.now += 20
    await until(rec, lambda: sink.last("web-1").phase is Phase.RUNNING)
    assert sink.last("web-1").stuck is not None  # restarted, not yet up min_ready
    clock.now += 5
    await until(rec, lambda: sink.last("web-1").stuck is None and sink.last("web-1").ready)
    assert sample(rec, "keel_agent_workload_restarts_total") == 2
    await rec.close()


async def test_start_gate_holds_convergence_and_the_backlog_shows_it(tmp_path: Path) -> None:
    """While the fake start gate exists the create is unconverged; once open it is measured."""
    gate = tmp_path / "gate"
    gate.touch()
    clock, sink = Clock(), Sink()
    driver = FakeDriver(start_gate=gate)
    rec = Reconciler(
        StateStore(tmp_path / "state.json"),
        driver=driver,
        settings=settings(tmp_path),
        clock=clock,
        prober=always_healthy,
        sink=sink,
    )
    await rec.open()
    rec.apply_assignments(full=True, revision=4, assignments=[assignment()])
    await until(rec, lambda: sink.reports != [] and sink.last("web-1").phase is Phase.STARTING)
    clock.now += 3
    await rec.reconcile_once()
    assert sample(rec, "keel_agent_unconverged_instances") == 1
    assert sample(rec, "keel_agent_oldest_unconverged_seconds") == 3
    gate.unlink()
    await until(rec, lambda: sink.last("web-1").ready)
    assert sample(rec, "keel_agent_unconverged_instances") == 0
    assert sample(rec, "keel_agent_oldest_unconverged_seconds") == 0
    assert sample(rec, "keel_agent_convergence_seconds_count", change="create") == 1
    assert sample(rec, "keel_agent_convergence_seconds_bucket", change="create", le="5.0") == 1
    assert sample(rec, "keel_agent_desired_revision") == 4
    await rec.close()


async def test_acted_revision_moves_only_once_the_tombstone_is_stopped(tmp_path: Path) -> None:
    """Heartbeats say the agent acted on a revision only once no process runs that the
    desired set at that revision does not want (a fenced instance is stopped first)."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: "web-1" in driver.running() and rec.acted_revision == 1)
    rec.apply_assignments(full=False, revision=2, assignments=[assignment(desired=Desired.REMOVED)])
    assert rec.acted_revision == 1  # received, not acted on
    await until(rec, lambda: rec.acted_revision == 2)
    assert "web-1" not in driver.running()
    await rec.close()


async def test_a_cut_off_host_stops_a_self_fencing_instance_and_remembers_contact(
    tmp_path: Path,
) -> None:
    """With on_disconnect.stop_after, the instance stops once the control plane has not recorded
    the host for that long, starts again once it is heard, and the contact time survives a
    restart of the agent (the contact file's mtime, so state.json is not rewritten for it)."""
    clock, sink = Clock(), Sink()
    rec, driver = await make(tmp_path, clock, sink)
    guarded = replace(assignment(), spec=replace(SPEC, stop_after_disconnect_ms=30_000))
    rec.heard(clock.now)
    rec.apply_assignments(full=True, revision=1, assignments=[guarded])
    await until(rec, lambda: "web-1" in driver.running())
    clock.now += 29
    await rec.reconcile_once()
    assert "web-1" in driver.running()
    clock.now += 1
    await until(rec, lambda: "web-1" not in driver.running())
    assert (tmp_path / "contact").stat().st_mtime == clock.now - 30
    again, _ = await make(tmp_path, clock, Sink())
    assert again.cut_off_s(clock.now) == 30
    await again.close()
    rec.heard(clock.now)
    assert (tmp_path / "contact").stat().st_mtime == clock.now
    await until(rec, lambda: "web-1" in driver.running())
    await rec.close()


async def test_contact_alone_does_not_rewrite_state_json(tmp_path: Path) -> None:
    """Heartbeats acknowledged while the assignments stay put write the contact file only."""
    clock = Clock()
    rec, driver = await make(tmp_path, clock, Sink())
    rec.apply_assignments(full=True, revision=1, assignments=[assignment()])
    await until(rec, lambda: "web-1" in driver.running())
    await rec.reconcile_once()
    before = (tmp_path / "state.json").stat().st_mtime_ns
    for _ in range(3):
        clock.now += 5
        rec.heard(clock.now)
        await rec.reconcile_once()
    assert (tmp_path / "state.json").stat().st_mtime_ns == before
    assert (tmp_path / "contact").stat().st_mtime == clock.now
    assert rec.cut_off_s(clock.now) == 0
    await rec.close()


async def test_an_older_agents_contact_time_in_state_json_is_still_read(tmp_path: Path) -> None:
    """state.json written by an agent that kept the contact time there: it still counts."""
    clock = Clock()
    legacy = {**LocalState().to_json(), "contact_at": clock.now - 12}
    (tmp_path / "state.json").write_text(json.dumps(legacy))
    again, _ = await make(tmp_path, clock, Sink())
    assert again.cut_off_s(clock.now) == 12
    again.heard(clock.now - 2)
    await again.close()
    third, _ = await make(tmp_path, clock, Sink())
    assert third.cut_off_s(clock.now) == 2  # the contact file wins once it has a time
    await third.close()
