"""Fencing a lost host on a real Postgres: the tombstones and their event, instances presumed
stopped by their agent (on_disconnect), and a host coming back READY only once its agent has
acted on the fence."""

from __future__ import annotations

from plans import loaded_cache

from controlplane.liveness import SelfFencing
from controlplane.store import Store
from keel.model import Desired, HostState, Kind, Phase, Resources, Workload, WorkloadSpec


def _workload(name: str, *, stop_after_ms: int = 0, replicas: int = 1) -> Workload:
    spec = WorkloadSpec(
        command=("sleep", "1000"),
        resources=Resources(100, 64),
        stop_grace_ms=2_000,
        stop_after_disconnect_ms=stop_after_ms,
    )
    return Workload(name=name, replicas=replicas, max_surge=0, spec=spec)


async def _host(store: Store, name: str) -> None:
    await store.register_host(name, labels={}, capacity=Resources(4000, 8192), agent_version="test")


async def _lose(store: Store, host: str, *, silent_s: int) -> None:
    await store.pool.execute(
        """UPDATE host SET state = 'UNKNOWN', state_since = now() - make_interval(secs => $2),
                          last_heartbeat = now() - make_interval(secs => $2)
           WHERE name = $1""",
        host,
        silent_s,
    )


async def _events(store: Store, kind: str) -> list[str]:
    rows = await store.pool.fetch("SELECT message FROM event WHERE kind = $1 ORDER BY id", kind)
    return [r["message"] for r in rows]


async def test_fence_event_never_says_replaced(store: Store) -> None:
    """The fence tombstones the service instances and says so: it does not claim a replacement,
    which the workload controller places later within max_surge."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload("web"))
    await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)
    await _lose(store, "h1", silent_s=600)
    assert await store.fence_host("h1", [Kind.SERVICE], epoch=None) == 1
    [message] = await _events(store, "InstancesFenced")
    assert "1 service instance(s) fenced" in message
    assert "replaced elsewhere" not in message and "max_surge" in message


async def test_self_fencing_instances_are_presumed_stopped_only_when_asked(store: Store) -> None:
    """The cache names the instances that stop by themselves; a fence that names them marks
    them STOPPED (SELF_FENCED), the others keep their last reported phase, and a heartbeat
    since the decision refuses the mark."""
    await _host(store, "h1")
    for name, stop_after in (("single", 30_000), ("plain", 0)):
        row, _ = await store.apply_workload(_workload(name, stop_after_ms=stop_after))
        [iid] = (await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)).created
        await store.pool.execute("UPDATE instance SET phase = 'RUNNING' WHERE id = $1", iid)
    await _lose(store, "h1", silent_s=600)
    cache = await loaded_cache(store)
    [facts] = cache.liveness_facts()
    [fencing] = facts.self_fencing
    assert fencing == SelfFencing(fencing.instance_id, 30.0, 2.0)
    # A heartbeat after the decision's: the tombstones go, the mark does not.
    assert facts.last_heartbeat is not None
    stale = facts.last_heartbeat.replace(year=facts.last_heartbeat.year - 1)
    n = await store.fence_host(
        "h1",
        [Kind.SERVICE],
        epoch=None,
        down_since=facts.state_since,
        last_heartbeat=stale,
        self_fenced=[fencing.instance_id],
    )
    assert n == 2
    phases = await store.pool.fetch("SELECT workload, desired, phase FROM instance ORDER BY 1")
    assert [(r["workload"], r["desired"], r["phase"]) for r in phases] == [
        ("plain", Desired.REMOVED.value, Phase.RUNNING.value),
        ("single", Desired.REMOVED.value, Phase.RUNNING.value),
    ]
    n = await store.fence_host(
        "h1",
        [Kind.SERVICE],
        epoch=None,
        down_since=facts.state_since,
        last_heartbeat=facts.last_heartbeat,
        self_fenced=[fencing.instance_id],
    )
    assert n == 0
    rows = await store.pool.fetch("SELECT workload, phase, reason FROM instance ORDER BY 1")
    assert [(r["workload"], r["phase"], r["reason"]) for r in rows] == [
        ("plain", Phase.RUNNING.value, ""),
        ("single", Phase.STOPPED.value, "SELF_FENCED"),
    ]
    assert len(await _events(store, "InstancesSelfFenced")) == 1
    await cache.refresh(["single", "plain"])
    [facts] = cache.liveness_facts()
    assert facts.self_fencing == ()


async def test_a_lost_host_is_ready_again_only_once_its_agent_acted_on_the_fence(
    store: Store,
) -> None:
    """Hello keeps a lost host as it is; a heartbeat from an agent behind the host's revision
    only refreshes the heartbeat; one at the host's revision makes it READY."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload("web"))
    await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)
    before = (await store.get_host("h1")).revision
    await _lose(store, "h1", silent_s=600)
    assert await store.fence_host("h1", [Kind.SERVICE], epoch=None) == 1
    fenced = (await store.get_host("h1")).revision
    assert fenced > before
    await store.register_host(
        "h1", labels={}, capacity=Resources(4000, 8192), agent_version="test", stream_id="s1"
    )
    host = await store.get_host("h1")
    assert host.state is HostState.UNKNOWN and host.connected
    [beat] = await store.write_heartbeats([("h1", "s1", before)])
    assert (beat.was, beat.state) == (HostState.UNKNOWN, HostState.UNKNOWN)
    assert await _events(store, "HostReady") == []
    [beat] = await store.write_heartbeats([("h1", "s1", fenced)])
    assert (beat.was, beat.state) == (HostState.UNKNOWN, HostState.READY)
    assert (await store.get_host("h1")).state is HostState.READY
    assert await _events(store, "HostReady") == ["heartbeat after UNKNOWN"]
