"""Cordon and uncordon on a real Postgres: all or none, safe to repeat, audited, and never
raced by a plan made before them."""

from __future__ import annotations

import pytest
from plans import all_hosts, write_plan

from controlplane.errors import NotFound
from controlplane.fleet_index import HostSeen
from controlplane.status import StatusStore
from controlplane.store import Store
from keel.model import Resources, Workload, WorkloadSpec


async def _hosts(store: Store, *names: str, labels: dict[str, str] | None = None) -> None:
    for name in names:
        await store.register_host(
            name, labels=labels or {}, capacity=Resources(4000, 8192), agent_version="test"
        )


async def _schedulable(store: Store) -> dict[str, bool]:
    return {h.name: h.schedulable for h in await all_hosts(store)}


async def test_cordon_marks_every_named_host_with_reason_actor_and_time(store: Store) -> None:
    """One call cordons every host it names, recording why, who and when."""
    await _hosts(store, "h1", "h2", "h3")
    result = await store.cordon(["h1", "h2"], {}, reason="kernel upgrade", actor="keelctl@me")
    assert result.changed == ["h1", "h2"]
    assert [h.name for h in result.hosts] == ["h1", "h2"]
    for h in result.hosts:
        assert (h.schedulable, h.cordon_reason, h.cordon_actor) == (
            False,
            "kernel upgrade",
            "keelctl@me",
        )
        assert h.cordoned_at is not None
    assert await _schedulable(store) == {"h1": False, "h2": False, "h3": True}


async def test_an_unknown_host_cordons_none(store: Store) -> None:
    """All or none: a host name that does not exist changes nothing and is named."""
    await _hosts(store, "h1", "h2")
    with pytest.raises(NotFound, match='host "nope" not found; nothing was changed'):
        await store.cordon(["h1", "nope", "h2"], {}, reason="", actor="a")
    assert await _schedulable(store) == {"h1": True, "h2": True}


async def test_cordon_twice_is_one_cordon(store: Store) -> None:
    """A second cordon changes nothing: the first reason, actor and time stay, no new event."""
    await _hosts(store, "h1")
    first = await store.cordon(["h1"], {}, reason="first", actor="a")
    again = await store.cordon(["h1"], {}, reason="second", actor="b")
    assert again.changed == []
    assert again.hosts[0].cordon_reason == "first"
    assert again.hosts[0].cordoned_at == first.hosts[0].cordoned_at
    events = await StatusStore(store.pool).list_events(obj="host/h1", limit=100)
    assert [(e.kind, e.actor) for e in events if e.kind.startswith("Host")][-1:] == [
        ("HostCordoned", "a")
    ]


async def test_selector_cordons_the_matching_hosts_and_uncordon_reverses(store: Store) -> None:
    """A selector picks hosts by label; uncordon forgets the cordon; both are events."""
    await _hosts(store, "a1", "a2", labels={"rack": "a"})
    await _hosts(store, "b1", labels={"rack": "b"})
    result = await store.cordon([], {"rack": "a"}, reason="rack a power", actor="op")
    assert result.changed == ["a1", "a2"]
    back = await store.uncordon(["a1"], {}, actor="op2")
    assert back.changed == ["a1"]
    assert (back.hosts[0].cordon_reason, back.hosts[0].cordoned_at) == ("", None)
    assert await _schedulable(store) == {"a1": True, "a2": False, "b1": True}
    assert (await store.uncordon(["a1"], {}, actor="op2")).changed == []
    events = await StatusStore(store.pool).list_events(obj="host/a1", limit=100)
    kinds = [(e.kind, e.actor, e.message) for e in events if "cordon" in e.kind.lower()]
    assert kinds == [
        ("HostCordoned", "op", "cordoned: rack a power"),
        ("HostUncordoned", "op2", "uncordoned"),
    ]


async def test_a_selector_matching_nothing_is_not_found(store: Store) -> None:
    """A selector that selects no host is NOT_FOUND naming the labels, not a silent no-op."""
    await _hosts(store, "h1", labels={"rack": "a"})
    with pytest.raises(NotFound, match="no host has labels rack=z"):
        await store.cordon([], {"rack": "z"}, reason="", actor="a")


async def test_a_plan_made_before_a_cordon_is_refused(store: Store) -> None:
    """A placement read before the cordon committed never lands on the cordoned host."""
    await _hosts(store, "h1")
    spec = WorkloadSpec(command=("sleep", "1000"), resources=Resources(100, 64))
    await store.apply_workload(Workload(name="web", replicas=1, spec=spec))
    row = await store.get_workload("web")
    hosts = {h.name: h for h in await all_hosts(store)}
    seen = {"h1": HostSeen(hosts["h1"].state, hosts["h1"].schedulable, hosts["h1"].revision)}
    await store.cordon(["h1"], {}, reason="", actor="a")
    result = await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None, hosts_read=seen)
    assert result.stale == "hosts changed"
    assert result.stale_hosts == ("h1",)
    assert await store.list_instances(workload="web") == []
    # Uncordoned, the same placement goes through.
    await store.uncordon(["h1"], {}, actor="a")
    assert (await write_plan(store, "web", create_on=["h1"])).created
