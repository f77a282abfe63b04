"""The cache's bookkeeping (pure, table-driven): per-host usage and live counts kept one change
at a time equal what a sum from scratch gives, and racing reads leave the newest."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from controlplane.fleet_index import Delta, FleetIndex, HostRecord, InstanceRecord
from controlplane.scheduler import NO_USAGE, HostUsage, ranked_cpu, usage_of
from controlplane.view import HostView, InstanceView, StuckState, WorkloadView
from keel.model import Desired, HostState, Kind, Phase, Resources, holds_resources

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RUN, STOP, GONE = Desired.RUNNING, Desired.STOPPED, Desired.REMOVED


def workload(name: str = "web", kind: Kind = Kind.SERVICE) -> WorkloadView:
    return WorkloadView(name, kind, 1, 3, 1, 1, {}, Resources(100, 64), False)


def inst(
    id: str,
    on: str = "h1",
    *,
    workload: str = "web",
    desired: Desired = RUN,
    phase: Phase = Phase.RUNNING,
    cpu: int = 100,
    memory: int = 64,
) -> InstanceRecord:
    view = InstanceView(
        id, workload, 1, on, desired, Resources(cpu, memory), phase, phase is Phase.RUNNING
    )
    return InstanceRecord(view, T0, None, True, "", "", False, 10_000)


def host(name: str, state: HostState = HostState.READY) -> HostRecord:
    return HostRecord(HostView(name, {}, Resources(4000, 4096), state, True), T0, T0, True)


def put(
    index: FleetIndex[str],
    name: str,
    version: int,
    instances: list[InstanceRecord],
    *,
    kind: Kind = Kind.SERVICE,
    read: int | None = None,
) -> bool:
    read = index.begin_read() if read is None else read
    return index.put_workload(name, workload(name, kind), version, instances, read=read)


def everything(index: FleetIndex[str]) -> list[InstanceView]:
    return [i.view for e in index.workloads() for i in e.instances.values()]


def assert_consistent(index: FleetIndex[str]) -> None:
    """What was kept one change at a time equals the sums from scratch."""
    views = everything(index)
    assert dict(index.usage) == usage_of(views)
    live: dict[str, Counter[str]] = {}
    for v in views:
        if v.live:
            live.setdefault(v.host, Counter())[v.workload] += 1
    for h in {v.host for v in views}:
        assert dict(index.live_on(h)) == dict(live.get(h, Counter()))
        assert {i.id for i in index.live_on_host(h)} == {
            v.id for v in views if v.live and v.host == h
        }
        assert index.workloads_on(h) == sorted({v.workload for v in views if v.host == h})
    assert index.counts()["instance"] == len(views)
    records = [i for e in index.workloads() for i in e.instances.values()]
    assert {i.id for i in index.needing_attention()} == {
        i.id for i in records if not i.converged or i.stuck is not None
    }


def usage(cpu: int, memory: int, n: int, ranked: int | None = None) -> HostUsage:
    return HostUsage(Resources(cpu, memory), n * 100 if ranked is None else ranked, n)


# (what the host had, the write, what the host holds after): the write is one delta.
USAGE_CASES = [
    ([], Delta("web", 1, 2, upserts=(inst("a"),)), usage(100, 64, 1)),
    ([], Delta("web", 1, 2, upserts=(inst("a", desired=STOP, phase=Phase.STOPPED),)),
     usage(100, 64, 1)),
    ([], Delta("web", 1, 2, upserts=(inst("a", desired=GONE, phase=Phase.STOPPING),)),
     usage(100, 64, 1)),
    ([], Delta("web", 1, 2, upserts=(inst("a", desired=GONE, phase=Phase.STOPPED),)), NO_USAGE),
    ([inst("a")], Delta("web", 1, 2, upserts=(inst("a", desired=GONE),)), usage(100, 64, 1)),
    ([inst("a", desired=GONE)],
     Delta("web", 1, 2, upserts=(inst("a", desired=GONE, phase=Phase.STOPPED),)), NO_USAGE),
    ([inst("a", desired=GONE, phase=Phase.STOPPED)], Delta("web", 1, 2, deletes=("a",)),
     NO_USAGE),
    ([inst("a"), inst("b", cpu=300)], Delta("web", 1, 2, deletes=("a",)),
     usage(300, 64, 1, ranked=300)),
    ([inst("a", cpu=0, memory=0)], Delta("web", 1, 2), usage(0, 0, 1, ranked=100)),
    ([inst("a", cpu=0, memory=0)], Delta("web", 1, 2, upserts=(inst("b", cpu=0, memory=0),)),
     usage(0, 0, 2, ranked=200)),
]  # fmt: skip
USAGE_IDS = [
    "live-instance-added-holds",
    "desired-stopped-still-holds",
    "tombstone-still-stopping-holds",
    "tombstone-already-stopped-holds-nothing",
    "tombstoned-instance-holds-until-stopped",
    "tombstone-reported-stopped-frees",
    "confirmed-removal-deleted-frees-nothing-more",
    "deleted-live-instance-frees-its-share",
    "zero-request-ranks-at-the-minimum",
    "two-zero-request-instances-rank-twice",
]


@pytest.mark.parametrize(("before", "delta", "expected"), USAGE_CASES, ids=USAGE_IDS)
def test_a_change_moves_host_usage_as_holds_resources_says(
    before: list[InstanceRecord], delta: Delta, expected: HostUsage
) -> None:
    """Each write changes the host's usage by exactly what holds_resources says it holds."""
    index: FleetIndex[str] = FleetIndex()
    put(index, "web", 1, before)
    assert index.apply(delta)
    assert index.usage.get("h1", NO_USAGE) == expected
    assert_consistent(index)


@pytest.mark.parametrize("desired", list(Desired))
@pytest.mark.parametrize("phase", list(Phase))
def test_usage_counts_an_instance_exactly_when_the_model_says_it_holds(
    desired: Desired, phase: Phase
) -> None:
    """Every (desired, phase): the host's usage includes the instance iff holds_resources."""
    index: FleetIndex[str] = FleetIndex()
    put(index, "web", 1, [inst("a", desired=desired, phase=phase, cpu=250, memory=32)])
    held = index.usage.get("h1", NO_USAGE)
    if holds_resources(desired, phase):
        assert held == HostUsage(Resources(250, 32), ranked_cpu(Resources(250, 32)), 1)
    else:
        assert held == NO_USAGE
    assert (index.live_on("h1").get("web", 0) == 1) is (desired is not GONE)


@pytest.mark.parametrize("seed", range(60))
def test_random_writes_keep_usage_equal_to_the_sum_from_scratch(seed: int) -> None:
    """Whatever sequence of reads, writes and deletes, the kept sums equal fresh ones."""
    rng = random.Random(seed)
    index: FleetIndex[str] = FleetIndex()
    versions = {"web": 1, "db": 1, "log": 1}
    for name in versions:
        put(index, name, 1, [], kind=Kind.DAEMON if name == "log" else Kind.SERVICE)
    ids = iter(range(10_000))
    for _ in range(80):
        name = rng.choice(list(versions))
        entry = index.workload(name)
        if entry is None:
            versions[name] += 1
            put(index, name, versions[name], [])
            continue
        op = rng.random()
        if op < 0.15:  # a fresh read of the whole workload
            versions[name] += 1
            mine = [random_inst(rng, f"i{next(ids)}", name) for _ in range(rng.randint(0, 4))]
            assert put(index, name, versions[name], mine)
        elif op < 0.9:  # a write, as a plan or a report batch returns it
            upserts = [random_inst(rng, f"i{next(ids)}", name) for _ in range(rng.randint(0, 2))]
            upserts += [
                dataclasses.replace(i, view=random_inst(rng, i.id, name).view)
                for i in entry.instances.values()
                if rng.random() < 0.3
            ]
            deletes = tuple(i for i in entry.instances if rng.random() < 0.2)
            versions[name] += 1
            delta = Delta(name, entry.version, versions[name], tuple(upserts), deletes)
            assert index.apply(delta)
        else:  # deleted by this leader
            index.drop_workload(name, version=entry.version)
        assert_consistent(index)


def random_inst(rng: random.Random, id: str, name: str) -> InstanceRecord:
    return inst(
        id,
        rng.choice(["h1", "h2", "h3"]),
        workload=name,
        desired=rng.choice(list(Desired)),
        phase=rng.choice(list(Phase)),
        cpu=rng.choice([0, 100, 250]),
        memory=rng.choice([0, 64]),
    )


def test_a_read_never_replaces_a_newer_entry() -> None:
    """An older version is refused; at the same version the read that began later wins."""
    index: FleetIndex[str] = FleetIndex()
    early, late = index.begin_read(), index.begin_read()
    assert put(index, "web", 5, [inst("a")], read=late)
    assert not put(index, "web", 4, [inst("old")], read=index.begin_read())
    assert not put(index, "web", 5, [inst("early")], read=early)
    assert put(index, "web", 5, [inst("later")], read=index.begin_read())
    entry = index.workload("web")
    assert entry is not None and list(entry.instances) == ["later"]
    assert_consistent(index)


def test_a_write_applies_only_over_the_version_it_was_made_over() -> None:
    """A delta over another version changes nothing: the caller reads the workload again."""
    index: FleetIndex[str] = FleetIndex()
    put(index, "web", 5, [inst("a")])
    assert not index.apply(Delta("web", 4, 6, upserts=(inst("b"),)))
    assert not index.apply(Delta("db", 5, 6, upserts=(inst("b", workload="db"),)))
    assert index.apply(Delta("web", 5, 7, upserts=(inst("b"),)))
    entry = index.workload("web")
    assert entry is not None and (entry.version, sorted(entry.instances)) == (7, ["a", "b"])


def test_a_deleted_workload_is_not_brought_back_by_a_read_begun_before() -> None:
    """The leader's delete leaves a tombstone: an older read of the name is refused, the next
    incarnation (a larger version, read after) is taken."""
    index: FleetIndex[str] = FleetIndex()
    put(index, "web", 5, [inst("a")])
    begun = index.begin_read()
    index.drop_workload("web", version=5)
    assert index.usage == {}
    assert not put(index, "web", 5, [inst("a")], read=begun)
    assert not put(index, "web", 9, [inst("a")], read=begun)  # began before the delete
    assert put(index, "web", 9, [inst("new")], read=index.begin_read())
    assert_consistent(index)


def test_absence_removes_only_what_was_read_before_the_read_began() -> None:
    """A read that did not find a workload drops it only if the cache's copy is older."""
    index: FleetIndex[str] = FleetIndex()
    before = index.begin_read()
    put(index, "web", 5, [inst("a")])
    index.absent("web", read=before)  # began before the copy was read: proves nothing
    assert index.workload("web") is not None
    index.absent("web", read=index.begin_read())
    assert index.workload("web") is None and index.usage == {}


def test_a_full_list_drops_what_it_did_not_find_unless_read_since() -> None:
    """Workloads deleted by a previous leader go; one read while the list ran stays."""
    index: FleetIndex[str] = FleetIndex()
    put(index, "gone", 1, [inst("g", workload="gone")])
    put(index, "kept", 1, [inst("k", workload="kept")])
    listing = index.begin_read()
    put(index, "new", 3, [inst("n", workload="new")])  # created and read while it listed
    assert index.retain(["kept"], read=listing) == ["gone"]
    assert sorted(index.workload_names()) == ["kept", "new"]
    assert_consistent(index)


def test_service_instances_make_a_host_fenceable_daemons_and_tombstones_do_not() -> None:
    """Fencing takes live service instances: a daemon's or a tombstone does not count."""
    index: FleetIndex[str] = FleetIndex()
    index.put_hosts([host("h1"), host("h2"), host("h3")], complete=True)
    put(index, "web", 1, [inst("a", "h1"), inst("b", "h2", desired=GONE)])
    put(index, "log", 1, [inst("l", "h3", workload="log")], kind=Kind.DAEMON)
    assert [index.has_service_instances(h) for h in ("h1", "h2", "h3")] == [True, False, False]


def test_a_complete_host_read_replaces_every_host() -> None:
    """Hosts read in full replace the set; a partial read updates only those it names."""
    index: FleetIndex[str] = FleetIndex()
    index.put_hosts([host("h1"), host("h2")], complete=True)
    index.put_hosts([host("h2", HostState.NOT_READY)], complete=False)
    assert {n: h.state for n, h in index.hosts.items()} == {
        "h1": HostState.READY,
        "h2": HostState.NOT_READY,
    }
    index.put_hosts([host("h3")], complete=True)
    assert list(index.hosts) == ["h3"]


def test_the_stuck_detector_s_set_follows_convergence_and_marks() -> None:
    """Instances not converged or marked stuck are the ones to judge; a report that converges
    one, or a mark cleared, takes it out."""
    index: FleetIndex[str] = FleetIndex()
    put(index, "web", 1, [inst("a"), inst("b", phase=Phase.STARTING)])
    assert [i.id for i in index.needing_attention()] == ["b"]
    assert index.apply(Delta("web", 1, 2, upserts=(inst("b"),)))
    assert index.needing_attention() == []
    mark = StuckState("CRASH_LOOP", T0, "exit 1")
    index.set_instance_stuck("web", "a", mark)
    assert [(i.id, i.stuck) for i in index.needing_attention()] == [("a", mark)]
    index.set_instance_stuck("web", "a", None)
    assert index.needing_attention() == []
    assert_consistent(index)


def test_hosts_generation_moves_only_when_what_planners_read_of_a_host_changes() -> None:
    """A heartbeat or a revision is not a change to plan again for; a state, a cordon, a new or
    a vanished host is."""
    index: FleetIndex[str] = FleetIndex()
    index.put_hosts([host("h1"), host("h2")], complete=True)
    start = index.hosts_generation
    beat = dataclasses.replace(host("h1"), last_heartbeat=T0.replace(minute=5), revision=9)
    index.put_hosts([beat], complete=False)
    index.put_hosts([host("h1"), host("h2")], complete=True)
    assert index.hosts_generation == start
    index.put_hosts([host("h2", HostState.NOT_READY)], complete=False)
    assert index.hosts_generation == start + 1
    index.put_hosts([host("h1"), host("h2", HostState.NOT_READY)], complete=True)
    assert index.hosts_generation == start + 1
    index.put_hosts([host("h1")], complete=True)  # h2 is gone
    assert index.hosts_generation == start + 2


def test_a_write_not_applied_leaves_its_hosts_revisions_alone() -> None:
    """A plan's delta that does not apply (a report moved the workload's version first) must
    not move the cached revision of the hosts it placed on: the cache's usage lacks what the
    plan placed there, so the next plan on those hosts must be refused and read them again."""
    index: FleetIndex[str] = FleetIndex()
    index.put_hosts([dataclasses.replace(host("h1"), revision=1)], complete=True)
    put(index, "web", 5, [])
    placed = inst("new", on="h1")
    assert not index.apply(Delta("web", 4, 6, upserts=(placed,), revisions=(("h1", 2),)))
    assert index.host("h1").revision == 1  # type: ignore[union-attr]
    assert index.apply(Delta("web", 5, 6, upserts=(placed,), revisions=(("h1", 2),)))
    assert index.host("h1").revision == 2  # type: ignore[union-attr]
    assert_consistent(index)


def test_the_leader_s_own_marks_survive_a_read_begun_before_them() -> None:
    """The stuck detector's marks take no version: a read that began before one and finds the
    same version does not overwrite it."""
    index: FleetIndex[str] = FleetIndex()
    view = workload("web")
    index.put_workload("before", view, 5, [inst("a")], read=index.begin_read())
    begun = index.begin_read()
    index.replace_row("web", "marked")
    mark = StuckState("CRASH_LOOP", T0, "exit 1")
    index.set_instance_stuck("web", "a", mark)
    assert not index.put_workload("before", view, 5, [inst("a")], read=begun)
    entry = index.workload("web")
    assert entry is not None and entry.row == "marked" and entry.instances["a"].stuck == mark
    assert index.put_workload("newer", view, 6, [inst("a")], read=index.begin_read())
