"""Table and simulation tests for controlplane.rollout: one step, then whole rollouts.

The simulation plays the agents: removed instances stop over two ticks and then vanish (the
tombstone is confirmed); new ones start over two ticks and become ready. After every plan is
written, and after every tick, the budget invariants must hold, and planning again before
anything moves must give an empty plan (idempotence).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import cast

import pytest

from controlplane.rollout import MAX_CHANGES_PER_PASS, WorkloadPlan, plan_workload
from controlplane.scheduler import UnschedulableCode, daemon_hosts, usage_of
from controlplane.store import WorkloadRow
from controlplane.verdicts import surely_unconverged, workload_converged
from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import Desired, HostState, Kind, Phase, Resources, converged

WEB = {"role": "web"}
SVC, DMN = Kind.SERVICE, Kind.DAEMON
RUN, STOP, GONE = Desired.RUNNING, Desired.STOPPED, Desired.REMOVED
NOT_READY = HostState.NOT_READY


def host(
    name: str,
    *,
    labels: Mapping[str, str] = WEB,
    cpu: int = 4000,
    state: HostState = HostState.READY,
    schedulable: bool = True,
) -> HostView:
    return HostView(name, dict(labels), Resources(cpu, 4096), state, schedulable)


def hosts(n: int, **kwargs: object) -> list[HostView]:
    return [host(f"host-{i}", **kwargs) for i in range(1, n + 1)]  # type: ignore[arg-type]


def web(
    *,
    kind: Kind = SVC,
    generation: int = 1,
    replicas: int = 3,
    max_unavailable: int = 1,
    max_surge: int = 1,
    selector: Mapping[str, str] = WEB,
    cpu: int = 100,
    deleting: bool = False,
) -> WorkloadView:
    return WorkloadView(
        name="web",
        kind=kind,
        generation=generation,
        replicas=replicas,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        selector=dict(selector),
        resources=Resources(cpu, 64),
        deleting=deleting,
    )


def inst(
    id: str,
    on: str,
    *,
    gen: int = 1,
    desired: Desired = RUN,
    phase: Phase = Phase.RUNNING,
    ready: bool | None = None,
    workload: str = "web",
    cpu: int = 100,
) -> InstanceView:
    if ready is None:
        ready = desired is RUN and phase is Phase.RUNNING
    return InstanceView(id, workload, gen, on, desired, Resources(cpu, 64), phase, ready)


def old(id: str, on: str, **kwargs: object) -> InstanceView:
    """A ready instance of generation 1, for workloads now at generation 2."""
    return inst(id, on, gen=1, **kwargs)  # type: ignore[arg-type]


H3 = hosts(3)
OLD3 = [old("a", "host-1"), old("b", "host-2"), old("c", "host-3")]
NEW3 = [inst("a", "host-1"), inst("b", "host-2"), inst("c", "host-3")]


def plan_for(
    workload: WorkloadView,
    fleet: Sequence[InstanceView],
    fleet_hosts: Sequence[HostView],
    *,
    max_changes: int = MAX_CHANGES_PER_PASS,
) -> WorkloadPlan:
    """plan_workload as the controller calls it: the workload's own instances, the hosts by
    name, and every host's usage summed over the whole fleet (as the cache keeps it)."""
    return plan_workload(
        workload,
        [i for i in fleet if i.workload == workload.name],
        {h.name: h for h in fleet_hosts},
        usage_of(fleet),
        max_changes=max_changes,
    )


# --- the agents, simulated -------------------------------------------------------------------


class Fleet:
    """Instances as the store would hold them, with the plan writer and the agents' part."""

    def __init__(
        self,
        hosts: Sequence[HostView],
        instances: Sequence[InstanceView],
        *,
        max_changes: int = MAX_CHANGES_PER_PASS,
    ) -> None:
        self.hosts = list(hosts)
        self.instances = list(instances)
        self.max_changes = max_changes
        self._ids = itertools.count(1)

    def plan(self, workload: WorkloadView) -> WorkloadPlan:
        return plan_for(workload, self.instances, self.hosts, max_changes=self.max_changes)

    def apply(self, workload: WorkloadView, plan: WorkloadPlan) -> None:
        """What the controller writes: tombstones and new PENDING instances."""
        gone = set(plan.remove)
        self.instances = [
            dataclasses.replace(i, desired=GONE) if i.id in gone else i for i in self.instances
        ]
        for name in plan.create:
            self.instances.append(
                InstanceView(
                    id=f"new-{next(self._ids):03d}",
                    workload=workload.name,
                    generation=workload.generation,
                    host=name,
                    desired=RUN,
                    resources=workload.resources,
                    phase=Phase.PENDING,
                    ready=False,
                )
            )

    def tick(self, *, ready_per_tick: int | None = None) -> None:
        """One agent round: stopping moves on, starting moves on (some may become ready)."""
        promoted = 0
        after: list[InstanceView] = []
        for i in self.instances:
            if not i.live:
                if i.phase is Phase.STOPPED:
                    continue  # tombstone confirmed: the row goes away
                nxt = Phase.STOPPING if i.phase is not Phase.STOPPING else Phase.STOPPED
                after.append(dataclasses.replace(i, phase=nxt, ready=False))
            elif i.phase is Phase.PENDING:
                after.append(dataclasses.replace(i, phase=Phase.STARTING))
            elif i.phase is Phase.STARTING and (
                ready_per_tick is None or promoted < ready_per_tick
            ):
                promoted += 1
                after.append(dataclasses.replace(i, phase=Phase.RUNNING, ready=True))
            else:
                after.append(i)
        self.instances = after

    # What the invariants read.
    def _ready_hosts(self) -> set[str]:
        return {h.name for h in self.hosts if h.state is HostState.READY}

    def available(self) -> list[InstanceView]:
        up = self._ready_hosts()
        return [
            i for i in self.instances if i.live and i.ready and i.desired is RUN and i.host in up
        ]

    def live(self) -> list[InstanceView]:
        return [i for i in self.instances if i.live]

    def processes(self) -> list[InstanceView]:
        """Everything whose process may run: live, or removed and not yet STOPPED."""
        return [i for i in self.instances if i.live or i.phase is not Phase.STOPPED]

    def converged(self, workload: WorkloadView, target: int) -> bool:
        live = self.live()
        return (
            len(live) == target
            and all(i.generation == workload.generation for i in live)
            and len(self.available()) == target
            and len(self.processes()) == target
        )


def run_to_completion(
    fleet: Fleet,
    workload: WorkloadView,
    *,
    target: int,
    ready_per_tick: int | None = None,
    per_host_limit: int | None = None,
    max_steps: int = 200,
) -> int:
    """Plan, write, check, tick until converged; returns the number of plans written."""
    floor = target - workload.max_unavailable
    cap = target + workload.max_surge
    for step in range(max_steps):
        if fleet.converged(workload, target):
            assert fleet.plan(workload).empty
            return step
        ready_before = len(fleet.available())
        processes_before = len(fleet.processes())
        plan = fleet.plan(workload)
        fleet.apply(workload, plan)
        # The budget: availability never drops below the floor, nor drops at all below it.
        assert len(fleet.available()) >= min(floor, ready_before), plan
        # The surge: never more processes than target + max_surge, unless there already were.
        assert len(fleet.processes()) <= max(cap, processes_before), plan
        assert len(fleet.live()) <= max(cap, processes_before), plan
        if per_host_limit is not None:
            per_host = Counter(i.host for i in fleet.processes())
            assert max(per_host.values(), default=0) <= per_host_limit, plan
        if plan.more:
            continue  # cut at the per-pass bound: the controller plans again at once
        # Level-triggered and idempotent: nothing moved, so nothing more to do.
        again = fleet.plan(workload)
        assert again.empty, (plan, again)
        fleet.tick(ready_per_tick=ready_per_tick)
    raise AssertionError(f"did not converge in {max_steps} steps: {fleet.instances}")


# --- one step --------------------------------------------------------------------------------

# (workload, hosts, instances, create, remove, unschedulable code, blocked contains)
STEPS: list[
    tuple[
        WorkloadView,
        list[HostView],
        list[InstanceView],
        tuple[str, ...],
        tuple[str, ...],
        UnschedulableCode | None,
        str | None,
    ]
] = [
    # services: placement, scaling, deletion
    (web(), H3, [], ("host-1", "host-2", "host-3"), (), None, None),
    (web(replicas=4), H3, [], ("host-1", "host-1", "host-2", "host-3"), (), None, None),
    (web(), H3, NEW3, (), (), None, None),
    (web(replicas=5), H3, NEW3, ("host-1", "host-2"), (), None, None),
    (
        web(),
        H3,
        [*NEW3, inst("d", "host-1"), inst("e", "host-2")],
        (),
        ("a", "b"),
        None,
        None,
    ),
    (
        web(),
        H3,
        [*NEW3, inst("d", "host-3", phase=Phase.STARTING), inst("e", "host-2")],
        (),
        ("b", "d"),
        None,
        None,
    ),
    (
        web(replicas=1),
        H3,
        NEW3,
        (),
        ("a", "b"),
        None,
        None,
    ),
    (
        web(deleting=True),
        H3,
        [*NEW3, inst("z", "host-1", desired=GONE, phase=Phase.STOPPING)],
        (),
        ("a", "b", "c"),
        None,
        None,
    ),
    (web(replicas=0, max_unavailable=0), H3, NEW3, (), ("a", "b", "c"), None, None),
    # services: rollouts
    (
        web(generation=2),
        H3,
        OLD3,
        ("host-1",),
        ("a",),
        None,
        "2 old instances to replace; waiting for 1 removed instance to stop (max_surge=1)",
    ),
    (
        web(generation=2, max_surge=0),
        H3,
        OLD3,
        (),
        ("a",),
        None,
        "waiting for 1 removed instance to stop (max_surge=0)",
    ),
    (
        web(generation=2, max_unavailable=0),
        H3,
        OLD3,
        ("host-1",),
        (),
        None,
        "waiting on max_unavailable=0: 3 ready, at least 3 must stay so; 3 old instances",
    ),
    (
        web(generation=2, max_unavailable=0),
        H3,
        [*OLD3, inst("n", "host-1", gen=2)],
        (),
        ("a",),
        None,
        "2 old instances to replace; waiting for 1 removed instance to stop (max_surge=1)",
    ),
    (
        web(generation=2),
        H3,
        [
            old("a", "host-1", phase=Phase.FAILED),
            old("b", "host-2", phase=Phase.STARTING),
            old("c", "host-3"),
        ],
        ("host-1",),
        ("a", "b"),
        None,
        "1 old instance to replace",
    ),
    (
        web(generation=2, max_surge=2),
        H3,
        [old("a", "host-1", phase=Phase.FAILED), old("b", "host-2"), old("c", "host-3")],
        ("host-1", "host-2"),
        ("a",),
        None,
        "waiting on max_unavailable=1: 2 ready, at least 2 must stay so",
    ),
    (
        web(generation=2, max_unavailable=0, max_surge=0),
        H3,
        OLD3,
        (),
        (),
        None,
        "max_unavailable and max_surge are both 0",
    ),
    # services: hosts that are not READY
    (
        web(),
        [*hosts(2), host("host-3", state=NOT_READY)],
        NEW3,
        (),
        (),
        None,
        None,
    ),
    (
        web(generation=2),
        [*hosts(2), host("host-3", state=NOT_READY)],
        OLD3,
        ("host-1",),
        ("c",),
        None,
        "2 old instances to replace",
    ),
    (
        web(replicas=1, max_surge=0),
        H3,
        [inst("a", "host-1", desired=GONE, phase=Phase.RUNNING)],
        (),
        (),
        None,
        "waiting for 1 removed instance to stop (max_surge=0)",
    ),
    (
        web(replicas=1, max_surge=0),
        [*hosts(2), host("host-3", state=NOT_READY)],
        [inst("a", "host-3", desired=GONE, phase=Phase.RUNNING)],
        (),
        (),
        None,
        "waiting for 1 removed instance to stop (max_surge=0)",
    ),
    (
        web(replicas=1, max_surge=0),
        [*hosts(2), host("host-3", state=NOT_READY)],
        [inst("a", "host-3", desired=GONE, phase=Phase.STOPPED)],
        ("host-1",),
        (),
        None,
        None,
    ),
    (
        web(replicas=2),
        H3,
        [inst("a", "host-1", phase=Phase.STOPPED), inst("b", "host-2", desired=STOP)],
        (),
        (),
        None,
        None,
    ),
    (
        web(generation=2),
        H3,
        [
            old("a", "host-1", desired=STOP, phase=Phase.STOPPED),
            old("b", "host-2"),
            old("c", "host-3"),
        ],
        ("host-1", "host-2"),
        ("a",),
        None,
        "2 old instances to replace",
    ),
    # services: nowhere to go
    (
        web(selector={"role": "db"}),
        H3,
        [],
        (),
        (),
        UnschedulableCode.NO_MATCHING_HOST,
        None,
    ),
    (
        web(),
        hosts(3, schedulable=False),
        [],
        (),
        (),
        UnschedulableCode.ALL_HOSTS_CORDONED_OR_NOT_READY,
        None,
    ),
    (
        web(generation=2, max_unavailable=0, cpu=1000),
        hosts(3, cpu=1000),
        [old("a", "host-1", cpu=1000), old("b", "host-2", cpu=1000), old("c", "host-3", cpu=1000)],
        (),
        (),
        UnschedulableCode.INSUFFICIENT_RESOURCES,
        "3 old instances to replace",
    ),
    (
        web(cpu=1500),
        hosts(2, cpu=2000),
        [],
        ("host-1", "host-2"),
        (),
        UnschedulableCode.INSUFFICIENT_RESOURCES,
        None,
    ),
    # daemons
    (
        web(kind=DMN),
        [host("host-1"), host("host-2", schedulable=False), host("host-3", labels={"role": "db"})],
        [],
        ("host-1", "host-2"),
        (),
        None,
        None,
    ),
    (
        web(kind=DMN),
        [host("host-1"), host("host-2", state=NOT_READY)],
        [],
        ("host-1",),
        (),
        None,
        None,
    ),
    (web(kind=DMN), H3, NEW3, (), (), None, None),
    (
        web(kind=DMN),
        [*hosts(2), host("host-3", labels={"role": "db"})],
        NEW3,
        (),
        ("c",),
        None,
        None,
    ),
    (
        web(kind=DMN),
        [*hosts(2), host("host-3", state=NOT_READY)],
        [*NEW3, old("o", "host-3", phase=Phase.RUNNING)],
        (),
        ("o",),
        None,
        None,
    ),
    (
        web(kind=DMN),
        H3,
        [*NEW3, inst("d", "host-1", phase=Phase.STARTING), inst("e", "host-2")],
        (),
        ("d", "e"),
        None,
        None,
    ),
    (web(kind=DMN, generation=2), H3, OLD3, ("host-1",), ("a",), None, "2 old instances"),
    (
        web(kind=DMN, generation=2, max_surge=0),
        H3,
        OLD3,
        (),
        ("a",),
        None,
        "waiting for 1 removed instance to stop",
    ),
    (
        web(kind=DMN, generation=2, max_unavailable=0),
        H3,
        [*OLD3, inst("n", "host-2", gen=2), inst("m", "host-3", gen=2, phase=Phase.STARTING)],
        (),
        ("b",),
        None,
        "waiting on max_unavailable=0: 3 hosts available, at least 3 must stay so",
    ),
    (
        web(kind=DMN, cpu=3000),
        [host("host-1"), host("host-2", cpu=2000)],
        [],
        ("host-1",),
        (),
        UnschedulableCode.INSUFFICIENT_RESOURCES,
        None,
    ),
    (web(kind=DMN), [host("host-1", state=NOT_READY)], [], (), (), None, None),
]

STEP_IDS = [
    "service-first-placement-spreads-3-over-3",
    "service-4-replicas-on-3-hosts",
    "service-steady-state-is-empty",
    "service-scale-up",
    "service-scale-down-from-most-loaded-hosts",
    "service-scale-down-prefers-not-ready",
    "service-scale-down-to-1-within-budget",
    "service-delete-removes-every-live-instance",
    "service-scale-to-zero",
    "rollout-starts-surge-and-budget-together",
    "rollout-max-surge-0-stops-before-start",
    "rollout-max-unavailable-0-surges-first",
    "rollout-max-unavailable-0-removes-once-new-is-ready",
    "rollout-not-ready-old-removed-freely",
    "rollout-budget-counts-only-ready",
    "rollout-no-budget-at-all-is-blocked",
    "service-instance-on-not-ready-host-is-kept-until-fenced",
    "rollout-old-on-not-ready-host-removed-freely",
    "max-surge-0-waits-for-stopping-instance",
    "fenced-instance-on-dead-host-holds-the-surge",
    "fenced-instance-presumed-stopped-frees-the-surge",
    "desired-stopped-instances-are-live-not-ready",
    "rollout-removes-old-desired-stopped-freely",
    "service-unschedulable-no-matching-host",
    "service-unschedulable-all-cordoned",
    "rollout-full-hosts-without-budget-insufficient-resources",
    "service-partial-placement-insufficient-resources",
    "daemon-cordoned-host-placed-non-matching-skipped",
    "daemon-not-ready-host-skipped",
    "daemon-steady-state-is-empty",
    "daemon-removed-from-host-no-longer-matching",
    "daemon-old-on-not-ready-host-removed",
    "daemon-duplicates-on-a-host-removed",
    "daemon-rollout-surge-and-budget",
    "daemon-rollout-max-surge-0",
    "daemon-old-removed-free-where-new-is-ready",
    "daemon-host-without-room-unschedulable",
    "daemon-no-target-hosts-is-empty",
]


@pytest.mark.parametrize(
    ("workload", "hosts_", "instances", "create", "remove", "code", "blocked"),
    STEPS,
    ids=STEP_IDS,
)
def test_plan_workload_step(
    workload: WorkloadView,
    hosts_: list[HostView],
    instances: list[InstanceView],
    create: tuple[str, ...],
    remove: tuple[str, ...],
    code: UnschedulableCode | None,
    blocked: str | None,
) -> None:
    """One reconcile step creates and removes exactly what the rules allow, then nothing."""
    fleet = Fleet(hosts_, instances)
    plan = fleet.plan(workload)
    assert (plan.create, plan.remove) == (create, remove)
    assert (plan.unschedulable.code if plan.unschedulable else None) == code
    if blocked is None:
        assert plan.blocked is None
    else:
        assert plan.blocked is not None and blocked in plan.blocked
    fleet.apply(workload, plan)
    assert fleet.plan(workload).empty


def test_large_scale_up_is_placed_in_bounded_passes_each_spread() -> None:
    """Each pass places at most max_changes, spread over the hosts, and says there is more."""
    fleet = Fleet(hosts(3), [], max_changes=10)
    w = web(replicas=25, cpu=0)
    sizes = []
    while not (plan := fleet.plan(w)).empty:
        assert plan.more == (len(fleet.live()) + len(plan.create) < 25)
        assert max(Counter(plan.create).values()) - min(Counter(plan.create).values()) <= 1
        sizes.append(len(plan.create))
        fleet.apply(w, plan)
    assert sizes == [10, 10, 5]
    assert sorted(Counter(i.host for i in fleet.live()).values()) == [8, 8, 9]


def test_removals_cut_at_the_bound_create_nothing_in_that_pass() -> None:
    """A pass that cannot write every removal creates nothing: its surge room assumed them."""
    fleet = Fleet(hosts(3), [inst(f"o{n:02d}", f"host-{n % 3 + 1}") for n in range(25)])
    v2 = web(generation=2, replicas=25, max_unavailable=25, max_surge=5)
    plan = plan_for(v2, fleet.instances, fleet.hosts, max_changes=10)
    assert (len(plan.remove), plan.create, plan.more) == (10, (), True)
    gone = dataclasses.replace(v2, deleting=True)
    plan = plan_for(gone, fleet.instances, fleet.hosts, max_changes=10)
    assert (len(plan.remove), plan.more) == (10, True)


def test_bounded_pass_on_full_hosts_does_not_ask_for_more() -> None:
    """When hosts are full, `more` stays false: planning again at once would place nothing."""
    fleet = Fleet(hosts(2, cpu=4000), [], max_changes=5)
    w = web(replicas=30, cpu=1000)
    first = fleet.plan(w)
    assert (len(first.create), first.more) == (5, True)
    fleet.apply(w, first)
    second = fleet.plan(w)
    assert (len(second.create), second.more) == (3, False)
    assert second.unschedulable is not None


@pytest.mark.parametrize("max_changes", [1, 2])
@pytest.mark.parametrize(
    ("replicas", "max_unavailable", "max_surge"),
    [(3, 1, 1), (5, 2, 2), (4, 0, 1), (4, 1, 0)],
    ids=lambda v: str(v),
)
def test_rollout_in_tiny_passes_keeps_budget_and_terminates(
    replicas: int, max_unavailable: int, max_surge: int, max_changes: int
) -> None:
    """With a per-pass bound of 1 or 2 a rollout and a scale-down still keep the budget."""
    fleet = Fleet(hosts(3), [], max_changes=max_changes)
    v1 = web(replicas=replicas, max_unavailable=max_unavailable, max_surge=max_surge)
    run_to_completion(fleet, v1, target=replicas)
    v2 = dataclasses.replace(v1, generation=2)
    run_to_completion(fleet, v2, target=replicas)
    v3 = dataclasses.replace(v2, replicas=1, max_unavailable=1)
    run_to_completion(fleet, v3, target=1)


def test_plan_workload_ignores_other_workloads_but_counts_their_capacity() -> None:
    """Other workloads' instances are never removed, yet they use up their hosts."""
    others = [
        inst("db-1", "host-1", workload="db", cpu=4000),
        inst("db-2", "host-2", workload="db"),
    ]
    plan = plan_for(web(replicas=2), others, hosts(2))
    assert plan == WorkloadPlan(create=("host-2", "host-2"))


def test_plan_workload_output_does_not_depend_on_input_order() -> None:
    """The plan is the same whatever order the store returned rows in."""
    instances = [*OLD3, inst("n", "host-1", gen=2), inst("m", "host-2", gen=2)]
    workload = web(generation=2, replicas=4, max_surge=2)
    first = plan_for(workload, instances, H3)
    for perm in itertools.permutations(instances):
        assert plan_for(workload, list(perm), list(reversed(H3))) == first


# --- whole rollouts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "max_unavailable", "max_surge", "n_hosts", "ready_per_tick"),
    [
        (3, 1, 1, 3, None),
        (3, 1, 0, 3, None),
        (3, 0, 1, 3, None),
        (1, 1, 0, 2, None),
        (1, 0, 1, 2, None),
        (2, 2, 0, 3, None),
        (5, 2, 2, 3, None),
        (4, 1, 1, 2, 1),
        (6, 1, 3, 3, 1),
        (10, 3, 2, 4, 2),
        (3, 3, 3, 1, None),
    ],
    ids=lambda v: str(v),
)
def test_service_rollout_keeps_budget_and_surge_and_terminates(
    replicas: int, max_unavailable: int, max_surge: int, n_hosts: int, ready_per_tick: int | None
) -> None:
    """A new generation replaces every instance without breaking the budget or the surge."""
    fleet = Fleet(hosts(n_hosts), [])
    v1 = web(replicas=replicas, max_unavailable=max_unavailable, max_surge=max_surge)
    run_to_completion(fleet, v1, target=replicas, ready_per_tick=ready_per_tick)
    v2 = dataclasses.replace(v1, generation=2)
    steps = run_to_completion(fleet, v2, target=replicas, ready_per_tick=ready_per_tick)
    assert steps > 0
    if max_surge == 0:
        # Stop-before-start: never more processes than replicas at any step (checked as the
        # surge cap); here also that every host ends with the new generation only.
        assert all(i.generation == 2 for i in fleet.instances)


def test_rollout_3_replicas_step_by_step_stays_within_budget() -> None:
    """The DESIGN.md example (3 replicas, budget 1, surge 1): ready >= 2 and live <= 4 always."""
    fleet = Fleet(H3, list(NEW3))
    v2 = web(generation=2)
    seen_ready: list[int] = []
    for _ in range(30):
        if fleet.converged(v2, 3):
            break
        fleet.apply(v2, fleet.plan(v2))
        seen_ready.append(len(fleet.available()))
        assert len(fleet.available()) >= 2
        assert len(fleet.live()) <= 4
        assert len(fleet.processes()) <= 4
        fleet.tick()
    assert fleet.converged(v2, 3)
    assert min(seen_ready) == 2  # the budget was used, not just respected


@pytest.mark.parametrize(
    ("start", "replicas", "generation"),
    [(3, 5, 1), (5, 3, 1), (5, 1, 1), (3, 5, 2), (5, 2, 2), (4, 0, 1)],
    ids=[
        "scale-up",
        "scale-down",
        "scale-down-to-1",
        "scale-up-and-roll",
        "scale-down-and-roll",
        "to-zero",
    ],
)
def test_scaling_converges_within_budget(start: int, replicas: int, generation: int) -> None:
    """Scaling (with or without a new generation) converges and never breaks the budget."""
    fleet = Fleet(H3, [])
    v1 = web(replicas=start)
    run_to_completion(fleet, v1, target=start)
    budget = min(1, replicas)  # the spec parser clamps max_unavailable to replicas
    v2 = dataclasses.replace(v1, replicas=replicas, generation=generation, max_unavailable=budget)
    run_to_completion(fleet, v2, target=replicas)
    assert len(fleet.live()) == replicas


def test_delete_removes_everything_and_stays_empty() -> None:
    """Deleting removes every live instance at once; afterwards plans stay empty."""
    fleet = Fleet(H3, [])
    v1 = web()
    run_to_completion(fleet, v1, target=3)
    gone = dataclasses.replace(v1, deleting=True)
    plan = fleet.plan(gone)
    assert plan.remove == tuple(sorted(i.id for i in fleet.live())) and not plan.create
    fleet.apply(gone, plan)
    for _ in range(3):
        assert fleet.plan(gone).empty
        fleet.tick()
    assert fleet.instances == []


def test_rollout_on_full_hosts_waits_for_stops_and_terminates() -> None:
    """With no spare room, surge instances wait for the budgeted removals to stop, then land."""
    full = hosts(3, cpu=1000)
    fleet = Fleet(full, [])
    v1 = web(cpu=1000)
    run_to_completion(fleet, v1, target=3)
    v2 = dataclasses.replace(v1, generation=2)
    first = fleet.plan(v2)
    assert first.unschedulable is not None
    assert first.unschedulable.code is UnschedulableCode.INSUFFICIENT_RESOURCES
    run_to_completion(fleet, v2, target=3, per_host_limit=1)


@pytest.mark.parametrize(
    ("max_unavailable", "max_surge", "ready_per_tick"),
    [(1, 1, None), (1, 0, None), (0, 1, None), (2, 0, 1), (1, 2, 1), (3, 3, None)],
    ids=lambda v: str(v),
)
def test_daemon_rollout_keeps_budget_and_terminates(
    max_unavailable: int, max_surge: int, ready_per_tick: int | None
) -> None:
    """A daemon rolls host by host: available hosts >= target - budget, one per host at rest."""
    fleet = Fleet(
        [
            host("host-1"),
            host("host-2", schedulable=False),
            host("host-3"),
            host("host-4"),
            host("host-5", labels={"role": "db"}),
        ],
        [],
    )
    d1 = web(kind=DMN, max_unavailable=max_unavailable, max_surge=max_surge)
    run_to_completion(fleet, d1, target=4, ready_per_tick=ready_per_tick)
    assert sorted(i.host for i in fleet.live()) == ["host-1", "host-2", "host-3", "host-4"]
    d2 = dataclasses.replace(d1, generation=2)
    # max_surge 0: never two processes on one host (stop-before-start per host).
    limit = 1 if max_surge == 0 else None
    run_to_completion(fleet, d2, target=4, ready_per_tick=ready_per_tick, per_host_limit=limit)
    assert sorted(i.host for i in fleet.live()) == ["host-1", "host-2", "host-3", "host-4"]


def _random_case(seed: int) -> tuple[WorkloadView, list[HostView], list[InstanceView]]:
    """A messy fleet: mixed generations, phases, host states, tombstones and other workloads."""
    rng = random.Random(seed)
    states = [HostState.READY] * 4 + [HostState.NOT_READY, HostState.UNKNOWN]
    fleet_hosts = [
        host(
            f"host-{n}",
            labels=rng.choice([WEB, WEB, WEB, {"role": "db"}]),
            cpu=rng.choice([300, 1000, 4000]),
            state=rng.choice(states),
            schedulable=rng.random() > 0.2,
        )
        for n in range(1, rng.randint(1, 6) + 1)
    ]
    replicas = rng.randint(0, 6)
    surge = rng.randint(0, 2)
    budget = min(rng.randint(0 if surge else 1, 3), replicas)
    workload = web(
        kind=rng.choice([SVC, SVC, DMN]),
        generation=3,
        replicas=replicas,
        max_unavailable=budget,
        max_surge=surge,
        cpu=rng.choice([0, 100, 250]),
        deleting=rng.random() < 0.05,
    )
    phases = list(Phase)
    instances = []
    for n in range(rng.randint(0, 10)):
        desired = rng.choice([RUN, RUN, RUN, RUN, STOP, GONE])
        phase = rng.choice(phases)
        instances.append(
            inst(
                f"i{n:02d}",
                rng.choice(fleet_hosts).name if fleet_hosts else "host-9",
                gen=rng.choice([1, 2, 3, 3]),
                desired=desired,
                phase=phase,
                ready=desired is RUN and phase is Phase.RUNNING and rng.random() > 0.2,
                workload=rng.choice(["web", "web", "web", "db"]),
                cpu=rng.choice([0, 100, 250]),
            )
        )
    return workload, fleet_hosts, instances


@pytest.mark.parametrize("seed", range(400))
def test_any_plan_is_idempotent_and_never_spends_more_than_the_budget(seed: int) -> None:
    """For random fleets: replanning after applying is empty; availability and surge hold."""
    workload, fleet_hosts, instances = _random_case(seed)
    fleet = Fleet(fleet_hosts, instances)
    mine = Fleet(fleet_hosts, [i for i in instances if i.workload == "web"])
    targets = set(daemon_hosts(workload, fleet_hosts))
    target = len(targets) if workload.kind is DMN else workload.replicas
    before_ready = len(mine.available())
    before_hosts = {i.host for i in mine.available()} & targets
    plan = fleet.plan(workload)
    assert list(plan.create) == sorted(plan.create)
    assert list(plan.remove) == sorted(plan.remove)
    assert set(plan.remove) <= {i.id for i in instances if i.workload == "web" and i.live}
    fleet.apply(workload, plan)
    assert fleet.plan(workload).empty, plan
    if workload.deleting:
        assert not [i for i in fleet.live() if i.workload == "web"]
        return
    mine_after = Fleet(fleet_hosts, [i for i in fleet.instances if i.workload == "web"])
    floor = target - workload.max_unavailable
    if workload.kind is DMN:
        # Availability of a daemon is per host: a host with a ready instance.
        after_hosts = {i.host for i in mine_after.available()} & targets
        assert len(after_hosts) >= min(floor, len(before_hosts)), plan
    else:
        assert len(mine_after.available()) >= min(floor, before_ready), plan
        if plan.create:
            # Creation happens only under the surge cap, fenced instances on dead hosts
            # counted until they are STOPPED.
            assert len(mine_after.processes()) <= target + workload.max_surge, plan


@dataclasses.dataclass(frozen=True)
class _Facts:
    generation: int
    desired: Desired
    converged: bool


def _facts(instances: Sequence[InstanceView]) -> list[_Facts]:
    return [
        _Facts(i.generation, i.desired, converged(i.desired, i.phase, i.ready))
        for i in instances
        if i.workload == "web"
    ]


def _settled(workload: WorkloadView, instances: Sequence[InstanceView]) -> list[InstanceView]:
    """The same fleet with every live instance of the workload current and converged: where
    only the count of instances can still be wrong."""
    return [
        i
        if i.workload != "web" or not i.live
        else dataclasses.replace(
            i,
            generation=workload.generation,
            phase=Phase.RUNNING if i.desired is RUN else Phase.STOPPED,
            ready=i.desired is RUN,
        )
        for i in instances
    ]


@pytest.mark.parametrize("seed", range(400))
def test_surely_unconverged_never_contradicts_the_plan(seed: int) -> None:
    """The stuck detector skips the plan of a workload `surely_unconverged` judges: for random
    fleets (and the same fleets with every instance converged), the plan then never says the
    workload is converged."""
    workload, fleet_hosts, instances = _random_case(seed)
    for fleet in (instances, _settled(workload, instances)):
        if surely_unconverged(workload, _facts(fleet)):
            plan = Fleet(fleet_hosts, fleet).plan(workload)
            row = cast(WorkloadRow, SimpleNamespace(is_current=workload.is_current))
            assert not workload_converged(row, plan, _facts(fleet)), plan  # type: ignore[arg-type]
