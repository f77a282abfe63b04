"""Drain operations on a real Postgres: begun with their cordon in one transaction, one
operation per set of hosts, cancelled, and the guards that stop a drain writing once it ended."""

from __future__ import annotations

import pytest
from plans import all_hosts, write_plan

from controlplane.errors import FailedPrecondition, NotFound
from controlplane.operation_store import guard_running
from controlplane.operations import DrainParams, OperationState
from controlplane.plan_checks import Stale
from controlplane.status import StatusStore
from controlplane.store import Store
from keel.model import Resources, Workload, WorkloadSpec


async def _hosts(store: Store, *names: str) -> None:
    for name in names:
        await store.register_host(
            name, labels={}, capacity=Resources(4000, 8192), agent_version="test"
        )


async def test_a_drain_cordons_its_hosts_in_the_transaction_that_records_it(store: Store) -> None:
    """The operation is PENDING, its hosts cordoned for it, and its request is an event."""
    await _hosts(store, "h1", "h2", "h3")
    op, created = await store.begin_drain(
        ["h1", "h2"], {}, params=DrainParams(deadline_ms=60_000), reason="rack", actor="me"
    )
    assert created and op.state is OperationState.PENDING and op.hosts == ("h1", "h2")
    assert (op.actor, op.reason, op.runbook) == ("me", "rack", "runbooks/cordon-and-drain.md")
    assert (op.deadline_at - op.created_at).total_seconds() == pytest.approx(60, abs=1)
    hosts = {h.name: h for h in await all_hosts(store)}
    assert [hosts[n].schedulable for n in ("h1", "h2", "h3")] == [False, False, True]
    assert hosts["h1"].cordon_reason == "rack"
    events = await StatusStore(store.pool).list_events(obj=f"operation/{op.id}", limit=10)
    assert [(e.kind, e.actor) for e in events] == [("DrainRequested", "me")]


async def test_a_second_drain_of_the_same_hosts_returns_the_running_one(store: Store) -> None:
    """Draining hosts a running drain holds (all or some of its own) returns that drain."""
    await _hosts(store, "h1", "h2")
    first, _ = await store.begin_drain(["h1", "h2"], {}, params=DrainParams(), reason="", actor="a")
    again, created = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="b")
    assert (again.id, created) == (first.id, False)
    assert len(await store.list_operations(everything=True)) == 1


async def test_a_drain_overlapping_a_running_one_changes_nothing(store: Store) -> None:
    """Only some hosts drained already: FAILED_PRECONDITION naming the operation, no cordon."""
    await _hosts(store, "h1", "h2")
    first, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
    with pytest.raises(FailedPrecondition, match=f"h1 is being drained by {first.id}"):
        await store.begin_drain(["h1", "h2"], {}, params=DrainParams(), reason="", actor="a")
    assert {h.name: h.schedulable for h in await all_hosts(store)}["h2"]


async def test_an_unknown_host_begins_no_drain(store: Store) -> None:
    """All or none: an unknown host is NOT_FOUND, no operation, no cordon."""
    await _hosts(store, "h1")
    with pytest.raises(NotFound, match='host "nope" not found'):
        await store.begin_drain(["h1", "nope"], {}, params=DrainParams(), reason="", actor="a")
    assert await store.list_operations(everything=True) == []
    assert all(h.schedulable for h in await all_hosts(store))


async def test_cancel_ends_it_keeps_the_cordon_unless_asked_and_is_safe_to_repeat(
    store: Store,
) -> None:
    """CANCELLED, hosts still cordoned; again: unchanged; with uncordon: schedulable."""
    await _hosts(store, "h1", "h2")
    op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
    cancelled = await store.cancel_operation(op.id, uncordon=False, actor="b")
    assert (
        cancelled.state is OperationState.CANCELLED and "hosts left cordoned" in cancelled.message
    )
    assert not {h.name: h.schedulable for h in await all_hosts(store)}["h1"]
    assert (await store.cancel_operation(op.id, uncordon=True, actor="b")).version == (
        cancelled.version
    )
    second, _ = await store.begin_drain(["h2"], {}, params=DrainParams(), reason="", actor="a")
    await store.cancel_operation(second.id, uncordon=True, actor="b")
    assert {h.name: h.schedulable for h in await all_hosts(store)}["h2"]
    assert await store.list_operations(everything=False) == []


async def test_uncordon_of_a_host_being_drained_is_refused(store: Store) -> None:
    """A running drain's host stays cordoned until the drain is cancelled; the message says how."""
    await _hosts(store, "h1")
    op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
    with pytest.raises(FailedPrecondition, match=f"keelctl op cancel {op.id} --uncordon"):
        await store.uncordon(["h1"], {}, actor="a")


async def test_a_drain_writes_only_while_its_operation_runs(store: Store) -> None:
    """The guard every drain write runs first: PENDING or ended, the write is refused."""
    await _hosts(store, "h1")
    op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
    async with store.pool.acquire() as conn, conn.transaction():
        with pytest.raises(Stale):
            await guard_running(conn, op.id)
    running = await store.update_operation(op.id, epoch=None, state=OperationState.RUNNING)
    assert running is not None and running.started_at is not None
    async with store.pool.acquire() as conn, conn.transaction():
        await guard_running(conn, op.id)
    await store.cancel_operation(op.id, uncordon=False, actor="a")
    assert await store.update_operation(op.id, epoch=None, message="late") is None
    async with store.pool.acquire() as conn, conn.transaction():
        with pytest.raises(Stale):
            await guard_running(conn, op.id)


async def test_a_cancel_hands_the_moves_under_way_back_to_the_workload(store: Store) -> None:
    """A replacement started for an instance on the drained host stops naming it once the drain
    is cancelled: both count again, and the workload's own plan removes the surplus."""
    await _hosts(store, "h1", "h2")
    spec = WorkloadSpec(command=("sleep", "1000"), resources=Resources(100, 64))
    await store.apply_workload(Workload(name="web", replicas=1, spec=spec))
    [old] = (await write_plan(store, "web", create_on=["h1"])).created
    op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
    row = await store.get_workload("web")
    made = await store.apply_plan(row, create_on=["h2"], remove=[], epoch=None, replaces=[old])
    [new] = made.created
    assert (await store.get_instance(new)).replaces == old
    before = (await store.get_workload("web")).version
    await store.cancel_operation(op.id, uncordon=False, actor="a")
    assert (await store.get_instance(new)).replaces == ""
    assert (await store.get_workload("web")).version > before
