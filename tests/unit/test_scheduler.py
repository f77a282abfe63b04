"""Table tests for controlplane.scheduler: eligibility, spread, capacity and the reasons."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.scheduler import (
    NO_USAGE,
    HostUsage,
    Placement,
    UnschedulableCode,
    daemon_hosts,
    eligible,
    free_resources,
    place,
    place_on,
    ranked_cpu,
    usage_of,
)
from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import Desired, HostState, Kind, Phase, Resources

WEB = {"role": "web"}


def host(
    name: str,
    *,
    labels: Mapping[str, str] = WEB,
    cpu: int = 4000,
    memory: int = 4096,
    state: HostState = HostState.READY,
    schedulable: bool = True,
) -> HostView:
    return HostView(name, dict(labels), Resources(cpu, memory), state, schedulable)


def web(
    *,
    kind: Kind = Kind.SERVICE,
    selector: Mapping[str, str] = WEB,
    cpu: int = 100,
    memory: int = 64,
) -> WorkloadView:
    return WorkloadView(
        name="web",
        kind=kind,
        generation=1,
        replicas=3,
        max_unavailable=1,
        max_surge=1,
        selector=dict(selector),
        resources=Resources(cpu, memory),
        deleting=False,
    )


def inst(
    id: str,
    on: str,
    *,
    workload: str = "web",
    desired: Desired = Desired.RUNNING,
    phase: Phase = Phase.RUNNING,
    cpu: int = 100,
    memory: int = 64,
) -> InstanceView:
    return InstanceView(
        id=id,
        workload=workload,
        generation=1,
        host=on,
        desired=desired,
        resources=Resources(cpu, memory),
        phase=phase,
        ready=phase is Phase.RUNNING,
    )


THREE = [host("host-1"), host("host-2"), host("host-3")]


@pytest.mark.parametrize(
    ("h", "selector", "expected"),
    [
        (host("a"), WEB, True),
        (host("a"), {}, True),
        (host("a", labels={"role": "web", "zone": "x"}), WEB, True),
        (host("a", labels={"role": "db"}), WEB, False),
        (host("a", labels={}), WEB, False),
        (host("a"), {"role": "web", "zone": "x"}, False),
        (host("a", schedulable=False), WEB, False),
        (host("a", state=HostState.NOT_READY), WEB, False),
        (host("a", state=HostState.UNKNOWN), {}, False),
    ],
    ids=[
        "ready-matching",
        "empty-selector-matches-any",
        "extra-labels-ok",
        "label-value-differs",
        "label-missing",
        "selector-key-missing-on-host",
        "cordoned",
        "not-ready",
        "unknown",
    ],
)
def test_eligible_requires_ready_schedulable_and_matching_labels(
    h: HostView, selector: dict[str, str], expected: bool
) -> None:
    """A host is eligible only when READY, not cordoned and every selector label matches."""
    assert eligible(h, selector) is expected


@pytest.mark.parametrize(
    ("workload", "count", "hosts", "instances", "expected"),
    [
        (web(), 3, THREE, [], ("host-1", "host-2", "host-3")),
        (web(), 4, THREE, [], ("host-1", "host-2", "host-3", "host-1")),
        (web(), 0, THREE, [], ()),
        (
            web(),
            1,
            THREE,
            [inst("a", "host-1"), inst("b", "host-2")],
            ("host-3",),
        ),
        (
            web(),
            2,
            THREE,
            [
                inst("a", "host-1", desired=Desired.REMOVED, phase=Phase.STOPPED),
                inst("b", "host-2"),
            ],
            ("host-1", "host-3"),
        ),
        (
            web(),
            1,
            [host("host-1"), host("host-2", cpu=8000), host("host-3")],
            [],
            ("host-2",),
        ),
        (
            web(),
            2,
            THREE,
            [inst("d", "host-1", workload="db", cpu=3000)],
            ("host-2", "host-3"),
        ),
        (
            web(),
            3,
            [host("host-1"), host("host-2", labels={"role": "db"}), host("host-3")],
            [],
            ("host-1", "host-3", "host-1"),
        ),
        (
            web(),
            3,
            [
                host("host-1", schedulable=False),
                host("host-2", state=HostState.NOT_READY),
                host("host-3"),
            ],
            [],
            ("host-3", "host-3", "host-3"),
        ),
        (
            web(cpu=1000),
            2,
            [host("host-1"), host("host-2", cpu=500)],
            [],
            ("host-1", "host-1"),
        ),
        (
            web(selector={}),
            2,
            [host("host-1", labels={}), host("host-2", labels={"x": "y"})],
            [],
            ("host-1", "host-2"),
        ),
        (web(cpu=0, memory=0), 4, THREE, [], ("host-1", "host-2", "host-3", "host-1")),
        (
            web(cpu=0, memory=0),
            2,
            THREE,
            [inst("a", "host-1", cpu=0, memory=0), inst("b", "host-3", cpu=0, memory=0)],
            ("host-2", "host-1"),
        ),
        (
            web(cpu=0, memory=0),
            1,
            THREE,
            [
                inst("d1", "host-1", workload="db", cpu=0, memory=0),
                inst("d2", "host-2", workload="db", cpu=0, memory=0),
            ],
            ("host-3",),
        ),
        (
            web(cpu=0, memory=0),
            1,
            THREE[:2],
            [
                *(inst(f"d{n}", "host-1", workload="db", cpu=0, memory=0) for n in range(4)),
                inst("q", "host-2", workload="queue", cpu=200),
            ],
            ("host-2",),
        ),
    ],
    ids=[
        "3-replicas-spread-over-3-hosts",
        "4-replicas-on-3-hosts-one-shares",
        "count-zero-places-nothing",
        "existing-replicas-count-toward-spread",
        "removed-instances-do-not-count-toward-spread",
        "tie-break-most-free-cpu",
        "other-workloads-use-capacity",
        "selector-filters-hosts",
        "cordoned-and-not-ready-get-nothing",
        "soft-spread-shares-when-nothing-else-fits",
        "empty-selector-any-host",
        "zero-resource-replicas-spread-over-3-hosts",
        "zero-resource-replicas-go-where-fewest-of-this-workload-run",
        "zero-resource-instances-of-other-workloads-make-a-host-fuller",
        "many-zero-resource-instances-outweigh-one-small-request",
    ],
)
def test_place_spreads_over_eligible_hosts_with_room(
    workload: WorkloadView,
    count: int,
    hosts: list[HostView],
    instances: list[InstanceView],
    expected: tuple[str, ...],
) -> None:
    """Each pick is the eligible host with room and the fewest replicas, then most free cpu."""
    assert place(workload, count, hosts, instances, usage_of(instances)) == Placement(
        expected, 0, None
    )


def test_zero_resource_workloads_applied_one_by_one_spread_over_the_hosts() -> None:
    """Single-replica workloads that request nothing go round the hosts, not all to host-1."""
    placed: list[InstanceView] = []
    for n in range(6):
        w = dataclasses.replace(web(cpu=0, memory=0), name=f"w{n}")
        [name] = place(w, 1, THREE, placed, usage_of(placed)).hosts
        placed.append(inst(f"w{n}-1", name, workload=w.name, cpu=0, memory=0))
    assert [i.host for i in placed] == ["host-1", "host-2", "host-3"] * 2


@pytest.mark.parametrize(
    ("workload", "count", "hosts", "instances", "placed", "code", "message"),
    [
        (
            web(),
            1,
            [],
            [],
            (),
            UnschedulableCode.NO_MATCHING_HOST,
            "no hosts are registered",
        ),
        (
            web(selector={"role": "db", "zone": "a"}),
            2,
            THREE,
            [],
            (),
            UnschedulableCode.NO_MATCHING_HOST,
            "no host has labels role=db,zone=a (3 hosts known)",
        ),
        (
            web(),
            1,
            [
                host("host-1", schedulable=False),
                host("host-2", state=HostState.NOT_READY),
                host("host-3", state=HostState.UNKNOWN, schedulable=False),
                host("host-4", labels={"role": "db"}),
            ],
            [],
            (),
            UnschedulableCode.ALL_HOSTS_CORDONED_OR_NOT_READY,
            "3 hosts match role=web but none is READY and schedulable: host-1 cordoned, "
            "host-2 NOT_READY, host-3 UNKNOWN and cordoned",
        ),
        (
            web(),
            1,
            [host("host-1", schedulable=False)],
            [],
            (),
            UnschedulableCode.ALL_HOSTS_CORDONED_OR_NOT_READY,
            "1 host matches role=web but none is READY and schedulable: host-1 cordoned",
        ),
        (
            web(cpu=4000),
            1,
            [host("host-1", cpu=1000), host("host-2"), host("host-3", cpu=500)],
            [inst("d", "host-2", workload="db", cpu=2100, memory=196)],
            (),
            UnschedulableCode.INSUFFICIENT_RESOURCES,
            "needs cpu 4000m, memory 64Mi; closest fit host-2 has cpu 1900m free "
            "(short 2100m), memory 3900Mi free",
        ),
        (
            web(cpu=1000, memory=1024),
            3,
            [host("host-1", cpu=2000, memory=1500), host("host-2", cpu=300, memory=8000)],
            [],
            ("host-1",),
            UnschedulableCode.INSUFFICIENT_RESOURCES,
            "needs cpu 1000m, memory 1024Mi; closest fit host-1 has cpu 1000m free, "
            "memory 476Mi free (short 548Mi)",
        ),
        (
            web(cpu=100),
            1,
            [host("host-1", cpu=100), host("host-2", schedulable=False)],
            [
                inst(
                    "old",
                    "host-1",
                    desired=Desired.REMOVED,
                    phase=Phase.STOPPING,
                )
            ],
            (),
            UnschedulableCode.INSUFFICIENT_RESOURCES,
            "needs cpu 100m, memory 64Mi; closest fit host-1 has cpu 0m free (short 100m), "
            "memory 4032Mi free; 1 more matching host cordoned or not ready",
        ),
    ],
    ids=[
        "no-hosts-at-all",
        "selector-matches-nothing",
        "all-matching-cordoned-or-not-ready",
        "single-cordoned-host",
        "capacity-exhausted-names-closest-fit",
        "partial-placement-then-memory-short",
        "removed-but-stopping-instance-still-holds-resources",
    ],
)
def test_place_explains_what_it_cannot_place(
    workload: WorkloadView,
    count: int,
    hosts: list[HostView],
    instances: list[InstanceView],
    placed: tuple[str, ...],
    code: UnschedulableCode,
    message: str,
) -> None:
    """Unplaced instances come with a stable code and a message naming the specifics."""
    result = place(workload, count, hosts, instances, usage_of(instances))
    assert result.hosts == placed
    assert result.unplaced == count - len(placed)
    assert result.reason is not None
    assert (result.reason.code, result.reason.message) == (code, message)


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ([], Resources(4000, 4096)),
        ([inst("a", "host-1")], Resources(3900, 4032)),
        (
            [inst("a", "host-1", desired=Desired.STOPPED, phase=Phase.STOPPED)],
            Resources(3900, 4032),
        ),
        (
            [inst("a", "host-1", desired=Desired.REMOVED, phase=Phase.RUNNING)],
            Resources(3900, 4032),
        ),
        (
            [inst("a", "host-1", desired=Desired.REMOVED, phase=Phase.STOPPED)],
            Resources(4000, 4096),
        ),
        ([inst("a", "host-9")], Resources(4000, 4096)),
    ],
    ids=[
        "empty-host",
        "live-instance-holds",
        "desired-stopped-still-holds-its-reservation",
        "removed-until-stopped-holds",
        "removed-and-stopped-frees",
        "instance-on-unknown-host-ignored",
    ],
)
def test_free_resources_counts_what_holds_capacity(
    instances: list[InstanceView], expected: Resources
) -> None:
    """Free = capacity minus live instances and removed ones not yet reported STOPPED."""
    assert free_resources([host("host-1")], usage_of(instances))["host-1"] == expected


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (THREE, ["host-1", "host-2", "host-3"]),
        (
            [
                host("host-3"),
                host("host-1", schedulable=False),
                host("host-2", labels={"role": "db"}),
            ],
            ["host-1", "host-3"],
        ),
        (
            [host("host-1", state=HostState.NOT_READY), host("host-2", state=HostState.UNKNOWN)],
            [],
        ),
    ],
    ids=["all-ready-matching", "cordoned-kept-non-matching-dropped", "not-ready-dropped"],
)
def test_daemon_hosts_ignore_cordon_but_need_ready_and_labels(
    hosts: list[HostView], expected: list[str]
) -> None:
    """Daemons go on every READY matching host, cordoned or not (like a DaemonSet)."""
    assert daemon_hosts(web(kind=Kind.DAEMON), hosts) == expected


@pytest.mark.parametrize(
    ("targets", "cpu", "limit", "placed", "message"),
    [
        (THREE, 100, None, ("host-1", "host-2", "host-3"), None),
        (THREE, 100, 2, ("host-1", "host-2"), None),
        (THREE, 100, 0, (), None),
        (
            [host("host-1"), host("host-2", cpu=1900), host("host-3")],
            2000,
            None,
            ("host-1", "host-3"),
            "needs cpu 2000m, memory 64Mi; host-2 has cpu 1900m free (short 100m), "
            "memory 4096Mi free",
        ),
        (
            [host("host-1", cpu=100), host("host-2"), host("host-3")],
            2000,
            2,
            ("host-2", "host-3"),
            None,
        ),
        (
            [host("host-1", cpu=100), host("host-2", cpu=100)],
            2000,
            1,
            (),
            "needs cpu 2000m, memory 64Mi; host-1 has cpu 100m free (short 1900m), "
            "memory 4096Mi free; host-2 has cpu 100m free (short 1900m), memory 4096Mi free",
        ),
    ],
    ids=[
        "one-per-target",
        "limit-stops-early",
        "limit-zero",
        "full-host-named",
        "full-host-skipped-without-using-the-limit",
        "nothing-fits-within-limit",
    ],
)
def test_place_on_puts_one_instance_per_target_with_room(
    targets: list[HostView],
    cpu: int,
    limit: int | None,
    placed: tuple[str, ...],
    message: str | None,
) -> None:
    """place_on fills the given hosts in order, skipping and naming those without room."""
    result = place_on(web(kind=Kind.DAEMON, cpu=cpu), targets, {}, limit=limit)
    assert result.hosts == placed
    if message is None:
        assert (result.unplaced, result.reason) == (0, None)
    else:
        assert result.reason is not None
        assert result.reason.code is UnschedulableCode.INSUFFICIENT_RESOURCES
        assert result.reason.message == message
        wanted = len(targets) if limit is None else limit
        assert result.unplaced == wanted - len(placed)


def _place_by_scanning(
    workload: WorkloadView,
    count: int,
    hosts: list[HostView],
    mine: list[InstanceView],
    usage: Mapping[str, HostUsage],
) -> tuple[str, ...]:
    """The rule `place` follows, written as the obvious scan (every pick looks at every
    host): the reference its heap must agree with."""
    request = workload.resources
    candidates = [h for h in hosts if eligible(h, workload.selector)]
    free = free_resources(candidates, usage)
    score = {h.name: h.capacity.cpu_millis - usage.get(h.name, NO_USAGE).ranked_cpu
             for h in candidates}  # fmt: skip
    live = [i for i in mine if i.workload == workload.name and i.live]
    current = Counter(i.host for i in live if i.generation == workload.generation)
    spread = Counter(i.host for i in live)
    picked: list[str] = []
    for _ in range(count):
        fitting = [h for h in candidates if request.fits_in(free[h.name])]
        if not fitting:
            break
        best = min(fitting, key=lambda h: (current[h.name], spread[h.name], -score[h.name], h.name))
        picked.append(best.name)
        free[best.name] = free[best.name] - request
        score[best.name] -= ranked_cpu(request)
        current[best.name] += 1
        spread[best.name] += 1
    return tuple(picked)


_hosts = st.lists(
    st.builds(
        host,
        st.sampled_from([f"h{n}" for n in range(6)]),
        labels=st.sampled_from([WEB, WEB, WEB, {"role": "db"}]),
        cpu=st.integers(0, 4000),
        memory=st.integers(0, 2048),
        state=st.sampled_from([HostState.READY] * 4 + [HostState.NOT_READY]),
        schedulable=st.sampled_from([True, True, True, False]),
    ),
    max_size=12,
    unique_by=lambda h: h.name,
)


@settings(max_examples=300, deadline=None)
@given(
    hosts=_hosts,
    count=st.integers(0, 30),
    cpu=st.integers(0, 500),
    memory=st.integers(0, 200),
    placed=st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 2), st.sampled_from(list(Desired))),
        max_size=20,
    ),
    other_cpu=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 900)), max_size=12),
)
def test_place_picks_what_a_scan_of_every_host_would(
    hosts: list[HostView],
    count: int,
    cpu: int,
    memory: int,
    placed: list[tuple[int, int, Desired]],
    other_cpu: list[tuple[int, int]],
) -> None:
    workload = dataclasses.replace(web(cpu=cpu, memory=memory), generation=2)
    mine = [
        dataclasses.replace(inst(f"w{n}", f"h{h}", desired=desired), generation=gen)
        for n, (h, gen, desired) in enumerate(placed)
    ]
    others = [
        dataclasses.replace(inst(f"o{n}", f"h{h}"), workload="other", resources=Resources(c, 10))
        for n, (h, c) in enumerate(other_cpu)
    ]
    usage = usage_of(mine + others)
    got = place(workload, count, hosts, mine, usage)
    assert got.hosts == _place_by_scanning(workload, count, hosts, mine, usage)
    assert got.unplaced == count - len(got.hosts)
