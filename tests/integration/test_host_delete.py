"""Deleting a gone host on a real Postgres: refused (changing nothing) while it is READY, being
drained or holding instances; with force, its instances go with it in one transaction, with an
event naming the actor; its agent coming back registers it as a new host."""

from __future__ import annotations

import pytest
from plans import write_plan

from controlplane.errors import FailedPrecondition, NotFound
from controlplane.host_delete import delete_host
from controlplane.metrics import Metrics
from controlplane.operations import DrainParams
from controlplane.reconcile import Term
from controlplane.retention import Retention, RetentionController
from controlplane.retention_store import RetentionStore
from controlplane.status import StatusStore
from controlplane.store import Store
from keel.model import Resources, Workload, WorkloadSpec

DAY_S = 24 * 3600.0


async def _host(store: Store, name: str) -> None:
    await store.register_host(name, labels={}, capacity=Resources(4000, 8192), agent_version="t")


async def _gone(store: Store, name: str) -> None:
    """The host's agent went away two days ago."""
    await store.pool.execute(
        """UPDATE host SET state = 'UNKNOWN', connected = false,
                  state_since = now() - interval '2 days' WHERE name = $1""",
        name,
    )


async def _snapshot(store: Store) -> tuple[object, ...]:
    hosts = await store.pool.fetch("SELECT name FROM host ORDER BY name")
    instances = await store.pool.fetch("SELECT id, desired FROM instance ORDER BY id")
    events = await store.pool.fetchval("SELECT count(*) FROM event")
    return tuple(hosts), tuple(instances), events


async def _placed(store: Store) -> list[str]:
    """`web` with two instances on h1 (one of them tombstoned) and one on h2."""
    spec = WorkloadSpec(command=("sleep", "1000"), resources=Resources(100, 64))
    await store.apply_workload(Workload(name="web", replicas=3, spec=spec))
    await write_plan(store, "web", create_on=["h1", "h1", "h2"])
    on_h1 = [r["id"] for r in await store.pool.fetch("SELECT id FROM instance WHERE host = 'h1'")]
    await write_plan(store, "web", remove=on_h1[:1])
    return sorted(on_h1)


async def test_an_unknown_host_is_not_found(store: Store) -> None:
    """NOT_FOUND names the host."""
    with pytest.raises(NotFound, match='host "nope" not found'):
        await delete_host(store.pool, "nope", force=False, actor="me")


async def test_a_ready_host_is_refused(store: Store) -> None:
    """Its agent would register it again at once: stop the agent first."""
    await _host(store, "h1")
    before = await _snapshot(store)
    with pytest.raises(FailedPrecondition, match=r"READY .* stop its agent first"):
        await delete_host(store.pool, "h1", force=True, actor="me")
    assert await _snapshot(store) == before


async def test_a_host_with_instances_is_refused_naming_them(store: Store) -> None:
    """Without force nothing changes, and the refusal names each instance (the tombstone as
    unconfirmed) and says what to do."""
    await _host(store, "h1")
    await _host(store, "h2")
    ids = await _placed(store)
    await _gone(store, "h1")
    before = await _snapshot(store)
    with pytest.raises(FailedPrecondition) as refused:
        await delete_host(store.pool, "h1", force=False, actor="me")
    text = str(refused.value)
    assert 'host "h1" has 2 instance(s)' in text and "--force" in text
    assert all(i in text for i in ids) and "removal unconfirmed" in text
    assert await _snapshot(store) == before


async def test_force_removes_the_host_and_its_instances_in_one_transaction(store: Store) -> None:
    """The host and every instance on it go; the other host's stay; the workload takes a new
    desired version (its controller places replacements); one event carries the actor."""
    await _host(store, "h1")
    await _host(store, "h2")
    ids = await _placed(store)
    await _gone(store, "h1")
    was = await store.pool.fetchval("SELECT desired_version FROM workload WHERE name = 'web'")
    deleted = await delete_host(store.pool, "h1", force=True, actor="alice")
    assert sorted(deleted.removed) == ids
    assert [r["name"] for r in await store.pool.fetch("SELECT name FROM host")] == ["h2"]
    hosts = {r["host"] for r in await store.pool.fetch("SELECT host FROM instance")}
    assert hosts == {"h2"}
    now = await store.pool.fetchval("SELECT desired_version FROM workload WHERE name = 'web'")
    assert now > was
    events = await StatusStore(store.pool).list_events(obj="host/h1", limit=10)
    deleted_events = [e for e in events if e.kind == "HostDeleted"]
    assert [(e.actor, "2 instance(s) removed" in e.message) for e in deleted_events] == [
        ("alice", True)
    ]


async def test_a_host_being_drained_is_refused(store: Store) -> None:
    """A running drain names it: cancel the drain first."""
    await _host(store, "h1")
    op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
    await _gone(store, "h1")
    with pytest.raises(FailedPrecondition, match=f"drained by {op.id}"):
        await delete_host(store.pool, "h1", force=True, actor="me")


async def test_a_deleted_hosts_agent_registers_it_as_new(store: Store) -> None:
    """Its Hello makes a new READY host at revision 0: the agent then gets the full, empty,
    assignment set and stops what it still runs."""
    await _host(store, "h1")
    await store.pool.execute("UPDATE host SET revision = 7 WHERE name = 'h1'")
    await _gone(store, "h1")
    await delete_host(store.pool, "h1", force=False, actor="me")
    revision = await store.register_host(
        "h1", labels={}, capacity=Resources(1, 1), agent_version="t"
    )
    assert revision == 0
    assert await store.pool.fetchval("SELECT state FROM host WHERE name = 'h1'") == "READY"
    assert await store.host_assignments("h1", since=None) == (0, [])


async def test_the_gone_hosts_are_counted(store: Store) -> None:
    """keel_hosts_gone: hosts not READY for longer than --gone-after."""
    for name in ("h1", "h2", "h3"):
        await _host(store, name)
    await _gone(store, "h1")
    await store.pool.execute(
        "UPDATE host SET state = 'NOT_READY', state_since = now() WHERE name = 'h2'"
    )
    metrics = Metrics()
    controller = RetentionController(
        RetentionStore(store.pool),
        now=store.now,
        settings=Retention(retention_s=7 * DAY_S, interval_s=600, batch=100, gone_after_s=DAY_S),
        metrics=metrics.growth,
    )
    await controller.reconcile("prune", term=Term(None, 0.0))
    assert metrics.registry.get_sample_value("keel_hosts_gone") == 1
