"""A drain step's writes on a real Postgres (`Store.apply_plans`): every workload in one
transaction, each in a savepoint. Plans made together from one read are all written, though
each bumps hosts the next one relied on; one made from a read that moved since is refused
alone; a drain that no longer runs writes nothing; a move's events exist only if it was
written."""

from __future__ import annotations

from plans import all_hosts, write_plan

from controlplane.fleet_index import HostSeen
from controlplane.operation_store import guard_running
from controlplane.operations import DrainParams, OperationRow, OperationState
from controlplane.plan_write import PlanWrite
from controlplane.store import Store
from keel.model import HostState, Resources, Workload, WorkloadSpec

SPEC = WorkloadSpec(command=("sleep", "1000"), resources=Resources(100, 64))


async def _fleet(store: Store, *workloads: str) -> dict[str, str]:
    """Hosts h1..h3; each workload one instance on h1; returns the instance of each."""
    for name in ("h1", "h2", "h3"):
        await store.register_host(
            name, labels={}, capacity=Resources(4000, 8192), agent_version="test"
        )
    placed = {}
    for name in workloads:
        await store.apply_workload(Workload(name=name, replicas=1, spec=SPEC))
        [placed[name]] = (await write_plan(store, name, create_on=["h1"])).created
    return placed


async def _running_drain(store: Store) -> OperationRow:
    op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="ops")
    running = await store.update_operation(op.id, epoch=None, state=OperationState.RUNNING)
    assert running is not None
    return running


async def _moves(store: Store, placed: dict[str, str], to: str) -> list[PlanWrite]:
    """Each workload's replacement on `to`, planned from one read of the hosts (as a drain
    step is), with the DrainMove event it records."""
    seen = {
        h.name: HostSeen(HostState(h.state), h.schedulable, h.revision)
        for h in await all_hosts(store)
    }
    plans = []
    for name, old in placed.items():
        row = await store.get_workload(name)
        plans.append(
            PlanWrite(
                row,
                create_on=[to],
                hosts_read={to: seen[to], "h1": HostSeen(seen["h1"].state, False)},
                replaces=[old],
                events=[(f"instance/{old}", "DrainMove", f"replacement starting on {to}")],
                actor="ops",
            )
        )
    return plans


async def _revision(store: Store, host: str) -> int:
    return {h.name: h.revision for h in await all_hosts(store)}[host]


async def _drain_moves(store: Store) -> list[str]:
    rows = await store.pool.fetch("SELECT object FROM event WHERE kind = 'DrainMove'")
    return sorted(r["object"] for r in rows)


async def test_plans_made_together_are_all_written_though_each_bumps_the_host(
    store: Store,
) -> None:
    placed = await _fleet(store, "a", "b", "c")
    op = await _running_drain(store)
    plans = await _moves(store, placed, "h2")
    before = await _revision(store, "h2")

    results = await store.apply_plans(plans, epoch=None, guard=lambda c: guard_running(c, op.id))

    assert [r.stale for r in results] == [None, None, None]
    assert all(len(r.created) == 1 for r in results)
    assert await _revision(store, "h2") == before + 3
    for result, old in zip(results, placed.values(), strict=True):
        assert (await store.get_instance(result.created[0])).replaces == old
    assert await _drain_moves(store) == sorted(f"instance/{i}" for i in placed.values())


async def test_a_plan_made_from_what_moved_since_is_refused_alone(store: Store) -> None:
    placed = await _fleet(store, "a", "b")
    op = await _running_drain(store)
    plans = await _moves(store, placed, "h2")
    # Workload a changes after the step read it: its plan is stale, b's is not.
    await store.apply_workload(Workload(name="a", replicas=2, spec=SPEC))
    before = await _revision(store, "h2")

    results = await store.apply_plans(plans, epoch=None, guard=lambda c: guard_running(c, op.id))

    assert results[0].stale == "the workload's desired state changed"
    assert not results[0].created and results[0].delta is None
    assert results[1].stale is None and len(results[1].created) == 1
    assert await _revision(store, "h2") == before + 1
    assert await _drain_moves(store) == [f"instance/{placed['b']}"]
    assert [i.workload for i in await store.list_instances(host="h2")] == ["b"]


async def test_a_drain_that_no_longer_runs_writes_nothing(store: Store) -> None:
    placed = await _fleet(store, "a", "b")
    op = await _running_drain(store)
    plans = await _moves(store, placed, "h2")
    await store.cancel_operation(op.id, uncordon=False, actor="ops")
    before = await _revision(store, "h2")

    results = await store.apply_plans(plans, epoch=None, guard=lambda c: guard_running(c, op.id))

    assert all(r.stale is not None and not r.created for r in results)
    assert await _revision(store, "h2") == before
    assert await store.list_instances(host="h2") == []
    assert await _drain_moves(store) == []
