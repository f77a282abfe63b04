"""The convergence clock on a real Postgres: a change's clock starts when it became desired
(the operator's write, or the fencing decision), so time before placement counts."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from plans import loaded_cache

from controlplane.cache import FleetCache
from controlplane.metrics import Metrics
from controlplane.reconcile import Term
from controlplane.status import StatusStore
from controlplane.store import Report, Store
from controlplane.workload import WorkloadController
from keel.model import Desired, Kind, Phase, Resources, Workload, WorkloadSpec

# How long each test lets pass between a change and its placement: well above the
# milliseconds a plan takes, so the figures cannot be mistaken for placement time.
WAIT = timedelta(seconds=0.5)


TERM = Term(epoch=None, started_at=0.0)


class Leader:
    """The workload controller on a loaded cache. Each pass first reads the hosts again, as the
    cache does on the notification a host's registration or state change sends."""

    def __init__(self, store: Store, cache: FleetCache) -> None:
        self.cache = cache
        self.controller = WorkloadController(store, cache=cache, metrics=Metrics())

    async def reconcile(self, name: str, *, term: Term) -> None:
        await self.cache.refresh_hosts()
        await self.controller.reconcile(name, term=term)


@pytest.fixture
async def controller(store: Store) -> Leader:
    return Leader(store, await loaded_cache(store))


def _workload(
    *, replicas: int = 1, env: dict[str, str] | None = None, kind: Kind = Kind.SERVICE, **kw: int
) -> Workload:
    spec = WorkloadSpec(command=("sleep", "1000"), env=env or {}, resources=Resources(10, 16))
    return Workload(name="web", kind=kind, replicas=replicas, spec=spec, **kw)  # type: ignore[arg-type]


async def _host(store: Store, name: str) -> None:
    await store.register_host(name, labels={}, capacity=Resources(4000, 8192), agent_version="t")


async def _let_pass(store: Store, since: datetime) -> None:
    """Waits until database time is WAIT past `since` (the clock every stamp is read from)."""
    async with asyncio.timeout(10):
        while await store.now() - since < WAIT:  # noqa: ASYNC110 (polls the database clock)
            await asyncio.sleep(0.05)


async def _report(store: Store, host: str, iid: str, *, running: bool = True) -> list[float]:
    """The agent's word: running and ready (or removal confirmed); returns seconds converged."""
    phase = Phase.RUNNING if running else Phase.STOPPED
    report = Report(host, iid, phase, 7, 0, "", "", "", {}, running, not running, None)
    outcome = await StatusStore(store.pool).write_reports([report])
    return [seconds for _, seconds in outcome.converged]


async def test_apply_clock_includes_the_wait_before_placement(
    store: Store, controller: Leader
) -> None:
    """Apply, wait, then plan: the convergence seconds include the wait in the queue."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload())
    assert row.desired_changed_at is not None
    await _let_pass(store, row.desired_changed_at)
    await controller.reconcile("web", term=TERM)
    [inst] = await store.list_instances()
    assert inst.desired_changed_at == row.desired_changed_at
    assert inst.created_at - inst.desired_changed_at >= WAIT
    [seconds] = await _report(store, "h1", inst.id)
    assert seconds >= WAIT.total_seconds()


async def test_scale_up_restarts_the_clock_and_counts_its_wait(
    store: Store, controller: Leader
) -> None:
    """A scale-up's new replica is timed from the scale, not from the workload's creation."""
    await _host(store, "h1")
    await store.apply_workload(_workload())
    await controller.reconcile("web", term=TERM)
    [first] = await store.list_instances()
    await _report(store, "h1", first.id)
    scaled, result = await store.apply_workload(_workload(replicas=2))
    assert result == "configured" and scaled.desired_changed_at is not None
    assert scaled.desired_changed_at > first.desired_changed_at
    await _let_pass(store, scaled.desired_changed_at)
    await controller.reconcile("web", term=TERM)
    [second] = [i for i in await store.list_instances() if i.id != first.id]
    assert second.desired_changed_at == scaled.desired_changed_at
    [seconds] = await _report(store, "h1", second.id)
    assert seconds >= WAIT.total_seconds()


async def test_only_changes_to_what_runs_restart_the_clock(
    store: Store, controller: Leader
) -> None:
    """Spec, replicas and selector restart it; budgets and the deadline do not. Each change
    is placed before the next, so none is still pending when the next arrives."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload(replicas=3))
    await controller.reconcile("web", term=TERM)
    stamps = [row.desired_changed_at]
    for change, moves in [
        (_workload(replicas=3, max_surge=2), False),
        (_workload(replicas=3, max_surge=2, deadline_ms=5_000), False),
        (_workload(replicas=3, max_surge=2, deadline_ms=5_000), False),  # unchanged
        (_workload(replicas=4, max_surge=2, deadline_ms=5_000), True),
        (_workload(replicas=4, max_surge=2, deadline_ms=5_000, env={"A": "b"}), True),
    ]:
        row, _ = await store.apply_workload(change)
        assert (row.desired_changed_at != stamps[-1]) is moves, change
        stamps.append(row.desired_changed_at)
        await controller.reconcile("web", term=TERM)


async def test_a_change_while_the_last_one_waits_keeps_its_clock(
    store: Store, controller: Leader
) -> None:
    """Apply, then scale before the controller placed anything: every instance is timed from
    the first apply (it was wanted since then), not from the scale. Once a plan has carried
    the change out, the next change starts its own clock."""
    await _host(store, "h1")
    first, _ = await store.apply_workload(_workload(replicas=1))
    assert first.desired_changed_at is not None
    await _let_pass(store, first.desired_changed_at)
    scaled, _ = await store.apply_workload(_workload(replicas=2))
    assert scaled.desired_changed_at == first.desired_changed_at
    await controller.reconcile("web", term=TERM)
    placed = await store.list_instances()
    assert [i.desired_changed_at for i in placed] == [first.desired_changed_at] * 2
    seconds = [s for i in placed for s in await _report(store, "h1", i.id)]
    assert min(seconds) >= WAIT.total_seconds()
    again, _ = await store.apply_workload(_workload(replicas=3))
    assert again.desired_changed_at is not None
    assert again.desired_changed_at > first.desired_changed_at


async def test_a_change_undone_before_placement_settles_without_a_plan(
    store: Store, controller: Leader
) -> None:
    """Scale up and back before any placement: nothing is left to do, the change no longer
    waits, and the next change starts its own clock."""
    await _host(store, "h1")
    await store.apply_workload(_workload(replicas=1))
    await controller.reconcile("web", term=TERM)
    [inst] = await store.list_instances()
    await _report(store, "h1", inst.id)
    up, _ = await store.apply_workload(_workload(replicas=2))
    back, _ = await store.apply_workload(_workload(replicas=1))
    assert back.desired_pending and back.desired_changed_at == up.desired_changed_at
    await controller.reconcile("web", term=TERM)
    assert not (await store.get_workload("web")).desired_pending
    assert not controller.cache.index.workload("web").row.desired_pending  # type: ignore[union-attr]
    later, _ = await store.apply_workload(_workload(replicas=2))
    assert later.desired_changed_at is not None and up.desired_changed_at is not None
    assert later.desired_changed_at > up.desired_changed_at


async def test_delete_clock_starts_at_the_delete(store: Store, controller: Leader) -> None:
    """Tombstones of a delete are timed from the delete; a second delete moves nothing."""
    await _host(store, "h1")
    await store.apply_workload(_workload())
    await controller.reconcile("web", term=TERM)
    [inst] = await store.list_instances()
    await _report(store, "h1", inst.id)
    deleted = await store.delete_workload("web")
    again = await store.delete_workload("web")
    assert again.desired_changed_at == deleted.desired_changed_at is not None
    await _let_pass(store, deleted.desired_changed_at)
    await controller.reconcile("web", term=TERM)
    [tomb] = await store.list_instances()
    assert (tomb.desired, tomb.desired_changed_at) == (Desired.REMOVED, deleted.desired_changed_at)
    [seconds] = await _report(store, "h1", inst.id, running=False)
    assert seconds >= WAIT.total_seconds()


async def test_fencing_decision_starts_the_replacements_clock(
    store: Store, controller: Leader
) -> None:
    """A replacement is timed from the fencing decision, not from its placement."""
    await _host(store, "h1")
    await controller.reconcile("web", term=TERM)  # nothing yet
    applied, _ = await store.apply_workload(_workload())
    await controller.reconcile("web", term=TERM)
    [lost] = await store.list_instances()
    await _report(store, "h1", lost.id)
    await _host(store, "h2")
    await store.pool.execute("UPDATE host SET state = 'UNKNOWN' WHERE name = 'h1'")
    assert await store.fence_host("h1", [Kind.SERVICE], epoch=None) == 1
    fenced = await store.get_workload("web")
    decided = fenced.desired_changed_at
    assert decided is not None and applied.desired_changed_at is not None
    assert decided > applied.desired_changed_at
    assert (await store.get_instance(lost.id)).desired_changed_at == decided
    await _let_pass(store, decided)
    await controller.reconcile("web", term=TERM)
    [replacement] = [i for i in await store.list_instances() if i.id != lost.id]
    assert (replacement.host, replacement.desired_changed_at) == ("h2", decided)
    [seconds] = await _report(store, "h2", replacement.id)
    assert seconds >= WAIT.total_seconds()


async def test_daemon_on_a_host_that_joins_later_is_timed_from_the_join(
    store: Store, controller: Leader
) -> None:
    """A daemon's instance on a new host became desired when the host did, not at the apply."""
    await _host(store, "h1")
    applied, _ = await store.apply_workload(_workload(kind=Kind.DAEMON))
    assert applied.desired_changed_at is not None
    await controller.reconcile("web", term=TERM)
    await _let_pass(store, applied.desired_changed_at)
    await _host(store, "h2")
    joined = (await store.get_host("h2")).state_since
    await controller.reconcile("web", term=TERM)
    by_host = {i.host: i for i in await store.list_instances()}
    assert by_host["h1"].desired_changed_at == applied.desired_changed_at
    assert by_host["h2"].desired_changed_at == joined > applied.desired_changed_at


async def test_a_plan_made_before_a_scale_is_not_written(store: Store) -> None:
    """A plan is refused once the workload's desired state changed after it was made."""
    await _host(store, "h1")
    before, _ = await store.apply_workload(_workload())
    await store.apply_workload(_workload(replicas=2))
    stale = await store.apply_plan(before, create_on=["h1"], remove=[], epoch=None)
    assert stale.created == [] and stale.stale is not None
    assert await store.list_instances() == []


async def test_a_rollout_held_by_its_budget_keeps_its_change_pending(
    store: Store, controller: Leader
) -> None:
    """A rollout waiting on its disruption budget has not carried its change out: the change
    stays pending, so an apply meanwhile does not restart the clock of what still waits."""
    await _host(store, "h1")
    await store.apply_workload(_workload(replicas=2, max_surge=0, max_unavailable=1))
    await controller.reconcile("web", term=TERM)
    for inst in await store.list_instances():
        await _report(store, "h1", inst.id)
    rollout, _ = await store.apply_workload(
        _workload(replicas=2, max_surge=0, max_unavailable=1, env={"V": "2"})
    )
    await controller.reconcile("web", term=TERM)  # takes one old instance down
    await controller.reconcile("web", term=TERM)  # held: the budget is spent until it is back
    assert (await store.get_workload("web")).desired_pending
    again, _ = await store.apply_workload(
        _workload(replicas=2, max_surge=0, max_unavailable=1, env={"V": "3"})
    )
    assert again.desired_changed_at == rollout.desired_changed_at
