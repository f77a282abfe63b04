"""Table, simulation and property tests for controlplane.rollout with canaries and rollbacks.

A canary rollout (`WorkloadView.canary` > 0) keeps every old instance as a replica and runs the
canaries beside them until it is promoted; a rollback (`spec_generations` holding earlier
generations) keeps the instances that already run the spec it returns to. The fleet, the agents'
simulation and the budget checks are test_rollout's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rollout import (
    H3,
    OLD3,
    Fleet,
    _random_case,
    host,
    hosts,
    inst,
    old,
    run_to_completion,
    web,
)

from controlplane.rollout import WorkloadPlan
from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import Desired, HostState, Kind, Phase

GONE = Desired.REMOVED
NOT_READY = HostState.NOT_READY


def canary(n: int = 1, **kwargs: object) -> WorkloadView:
    """`web` at generation 2 whose canaries await promotion."""
    kwargs.setdefault("generation", 2)
    return dataclasses.replace(web(**kwargs), canary=n)  # type: ignore[arg-type]


def rolled_back(generation: int, *spec_generations: int, **kwargs: object) -> WorkloadView:
    """`web` at `generation`, whose spec is that of the earlier `spec_generations`."""
    w = web(generation=generation, **kwargs)  # type: ignore[arg-type]
    return dataclasses.replace(w, spec_generations=frozenset({generation, *spec_generations}))


def new(id: str, on: str, **kwargs: object) -> InstanceView:
    """An instance of generation 2 (a canary, while one waits)."""
    return inst(id, on, gen=2, **kwargs)  # type: ignore[arg-type]


# (workload, hosts, instances, create, remove, blocked contains)
STEPS: list[
    tuple[
        WorkloadView,
        list[HostView],
        list[InstanceView],
        tuple[str, ...],
        tuple[str, ...],
        str | None,
    ]
] = [
    (canary(), H3, OLD3, ("host-1",), (), None),
    (canary(), H3, [*OLD3, new("n", "host-1")], (), (), None),
    (canary(), H3, [*OLD3, new("n", "host-1", phase=Phase.STARTING)], (), (), None),
    (canary(2), H3, OLD3, ("host-1", "host-2"), (), None),
    (canary(max_surge=0), H3, OLD3, ("host-1",), (), None),
    (canary(max_unavailable=0, max_surge=0), H3, OLD3, ("host-1",), (), None),
    (
        canary(),
        H3,
        [old("a", "host-1", phase=Phase.FAILED), old("b", "host-2"), old("c", "host-3")],
        ("host-1",),
        (),
        None,
    ),
    (
        canary(),
        [*hosts(2), host("host-3", state=NOT_READY)],
        [*OLD3, new("n", "host-3", desired=GONE)],
        ("host-1",),
        (),
        None,
    ),
    (
        canary(max_surge=0),
        [*hosts(2), host("host-3", state=NOT_READY)],
        [*OLD3, new("n", "host-3", desired=GONE)],
        (),
        (),
        "waiting for 1 removed instance to stop (max_surge=0)",
    ),
    (canary(replicas=2), H3, [*OLD3, new("n", "host-1")], (), ("a",), None),
    (
        canary(replicas=2, max_unavailable=0),
        H3,
        [
            old("a", "host-1"),
            old("b", "host-2"),
            old("c", "host-3", phase=Phase.FAILED),
            new("n", "host-1", phase=Phase.STARTING),
        ],
        (),
        ("c",),
        None,
    ),
    (canary(replicas=4), H3, [*OLD3, new("n", "host-1")], ("host-2",), (), None),
    (
        canary(replicas=0, max_unavailable=0),
        H3,
        [*OLD3, new("n", "host-1")],
        (),
        ("a", "b", "c", "n"),
        None,
    ),
    (
        canary(),
        H3,
        [*OLD3, new("n", "host-2"), dataclasses.replace(new("r", "host-3"), replaces="a")],
        (),
        (),
        None,
    ),
    (
        canary(n=0),
        H3,
        [*OLD3, new("n", "host-1")],
        (),
        ("a", "b"),
        "1 old instance to replace; waiting for 2 removed instances to stop (max_surge=1)",
    ),
    # generation 3 applied over generation 2's canary, never promoted: that canary goes, not
    # one of the replicas it ran beside, and generation 3's canary starts
    (canary(generation=3), H3, [*OLD3, new("n", "host-1")], ("host-2",), ("n",), None),
    (
        canary(generation=3),
        H3,
        [*OLD3, new("n", "host-2", phase=Phase.FAILED)],
        ("host-1",),
        ("n",),
        None,
    ),
    # rollbacks: generation 3 runs generation 1's spec again
    (rolled_back(3, 1), H3, OLD3, (), (), None),
    (
        rolled_back(3, 1),
        H3,
        [old("a", "host-1"), old("b", "host-2"), new("c", "host-3", phase=Phase.FAILED)],
        ("host-3",),
        ("c",),
        None,
    ),
    (
        rolled_back(3, 1),
        H3,
        [*OLD3, new("n", "host-1")],
        (),
        ("n",),
        None,
    ),
    (
        rolled_back(3, 1),
        H3,
        [old("a", "host-1"), new("b", "host-2"), new("c", "host-3")],
        ("host-2",),
        ("b",),
        "1 old instance to replace",
    ),
    (
        rolled_back(4, 2),
        H3,
        [old("a", "host-1"), new("b", "host-2"), inst("c", "host-3", gen=3)],
        ("host-1",),
        ("a",),
        "1 old instance to replace",
    ),
]

STEP_IDS = [
    "canary-starts-one-beside-the-three-old",
    "canary-waiting-plans-nothing",
    "canary-starting-plans-nothing-more",
    "two-canaries-start-together-past-max-surge-1",
    "canary-starts-with-max-surge-0",
    "canary-starts-with-no-budget-at-all",
    "old-instance-not-ready-is-kept-while-canary-waits",
    "canary-fenced-on-dead-host-is-replaced",
    "canary-fenced-with-max-surge-0-waits-for-stop",
    "scale-down-while-waiting-removes-old-surplus",
    "scale-down-while-waiting-takes-the-not-ready-old-first",
    "scale-up-while-waiting-adds-current",
    "scale-to-zero-while-waiting-removes-the-canary-too",
    "drain-replacement-while-waiting-is-a-replica",
    "promoted-canary-counts-as-updated",
    "superseded-canary-goes-before-the-replicas-it-ran-beside",
    "superseded-failed-canary-goes-first",
    "rollback-keeps-instances-of-the-spec-it-returns-to",
    "rollback-replaces-failed-instance-of-other-spec-for-free",
    "rollback-removes-canary-within-budget",
    "rollback-replaces-other-spec-within-budget",
    "rollback-to-middle-revision-replaces-the-rest",
]


@pytest.mark.parametrize(
    ("workload", "hosts_", "instances", "create", "remove", "blocked"), STEPS, ids=STEP_IDS
)
def test_canary_and_rollback_step(
    workload: WorkloadView,
    hosts_: list[HostView],
    instances: list[InstanceView],
    create: tuple[str, ...],
    remove: tuple[str, ...],
    blocked: str | None,
) -> None:
    """One reconcile step creates and removes exactly what the rules allow, then nothing."""
    fleet = Fleet(hosts_, instances)
    plan = fleet.plan(workload)
    assert (plan.create, plan.remove) == (create, remove), plan
    if blocked is None:
        assert plan.blocked is None, plan
    else:
        assert plan.blocked is not None and blocked in plan.blocked, plan
    fleet.apply(workload, plan)
    assert fleet.plan(workload).empty


def test_a_daemon_never_gets_canaries() -> None:
    """A daemon has no canaries (the spec parser refuses them): it rolls as usual."""
    d = dataclasses.replace(web(kind=Kind.DAEMON, generation=2), canary=1)
    plan = Fleet(H3, OLD3).plan(d)
    assert (plan.create, plan.remove) == (("host-1",), ("a",))


# --- whole rollouts ------------------------------------------------------------------------


def _settle(fleet: Fleet, workload: WorkloadView, *, ticks: int = 12) -> list[WorkloadPlan]:
    """Plans, writes and ticks `ticks` times, checking the canary rules after every write; the
    plans written."""
    plans = []
    old_ids = {i.id for i in fleet.live() if not workload.is_current(i.generation)}
    cap = workload.replicas + workload.canary + workload.max_surge
    for _ in range(ticks):
        plan = fleet.plan(workload)
        fleet.apply(workload, plan)
        plans.append(plan)
        # Every old instance is still there, and at most `canary` current ones run beside.
        assert {i.id for i in fleet.live() if not workload.is_current(i.generation)} == old_ids
        assert sum(1 for i in fleet.live() if workload.is_current(i.generation)) <= workload.canary
        assert len(fleet.processes()) <= cap
        assert fleet.plan(workload).empty
        fleet.tick()
    return plans


@pytest.mark.parametrize(
    ("replicas", "n", "max_unavailable", "max_surge"),
    [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 0, 0), (5, 3, 2, 2), (1, 1, 1, 0)],
    ids=lambda v: str(v),
)
def test_canaries_start_wait_and_after_promotion_the_rollout_completes(
    replicas: int, n: int, max_unavailable: int, max_surge: int
) -> None:
    """N canaries start beside the old replicas and nothing more moves, however long they wait;
    promoted, the rollout completes within the budget with the canaries among the replicas."""
    fleet = Fleet(hosts(3), [])
    v1 = web(replicas=replicas, max_unavailable=max_unavailable, max_surge=max_surge)
    run_to_completion(fleet, v1, target=replicas)
    v2 = dataclasses.replace(v1, generation=2, canary=n)
    plans = _settle(fleet, v2)
    assert sum(len(p.create) for p in plans) == n and not any(p.remove for p in plans)
    canaries = {i.id for i in fleet.live() if i.generation == 2}
    assert len(canaries) == n and all(i.ready for i in fleet.live())
    promoted = dataclasses.replace(v2, canary=0)
    if max_unavailable == 0 and max_surge == 0:
        return  # no budget to replace anything: the rollout holds, as any would
    run_to_completion(fleet, promoted, target=replicas)
    # The canaries stay (they are updated replicas) unless surplus to the replicas.
    kept = canaries & {i.id for i in fleet.live()}
    assert len(kept) == min(n, replicas)


def test_an_aborted_canary_is_removed_and_the_old_instances_stay() -> None:
    """Abort is a rollback to the old spec (generation 3 = generation 1's): the canary goes, and
    the three old instances are never touched."""
    fleet = Fleet(H3, [])
    v1 = web()
    run_to_completion(fleet, v1, target=3)
    old_ids = {i.id for i in fleet.live()}
    _settle(fleet, canary(1), ticks=4)
    assert len(fleet.live()) == 4
    back = rolled_back(3, 1)
    for _ in range(6):
        plan = fleet.plan(back)
        assert not plan.create and set(plan.remove).isdisjoint(old_ids)
        fleet.apply(back, plan)
        assert {i.id for i in fleet.available()} >= old_ids
        fleet.tick()
    assert {i.id for i in fleet.live()} == old_ids
    assert fleet.instances == [i for i in fleet.instances if i.id in old_ids]


# --- properties ----------------------------------------------------------------------------


def _old_kept(workload: WorkloadView, instances: Sequence[InstanceView]) -> list[InstanceView]:
    leaving = {i.replaces for i in instances if i.live and i.replaces}
    return [
        i
        for i in instances
        if i.live and not workload.is_current(i.generation) and i.id not in leaving
    ]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3))
def test_waiting_canaries_never_cost_an_old_replica(seed: int, n: int) -> None:
    """For random fleets with canaries waiting: old instances go only past the replicas (a
    scale-down), creations stop at the canaries plus the replicas the old do not make up and
    under replicas + canary + max_surge, and replanning is empty."""
    workload, fleet_hosts, instances = _random_case(seed)
    if workload.kind is Kind.DAEMON or workload.deleting:
        return
    workload = dataclasses.replace(workload, canary=n)
    fleet = Fleet(fleet_hosts, instances)
    mine = [i for i in instances if i.workload == "web"]
    kept = _old_kept(workload, mine)
    plan = fleet.plan(workload)
    fleet.apply(workload, plan)
    assert fleet.plan(workload).empty, plan
    gone = set(plan.remove)
    assert sum(1 for i in kept if i.id in gone) <= max(0, len(kept) - workload.replicas), plan
    after = [i for i in fleet.instances if i.workload == "web"]
    if plan.create:
        leaving = {i.replaces for i in after if i.live and i.replaces}
        current = [
            i for i in after if i.live and workload.is_current(i.generation) and i.id not in leaving
        ]
        wanted = n + max(0, workload.replicas - len(_old_kept(workload, after)))
        assert len(current) <= max(wanted, len(current) - len(plan.create)), plan
        processes = [i for i in after if i.live or i.phase is not Phase.STOPPED]
        assert len(processes) <= workload.replicas + n + workload.max_surge, plan
