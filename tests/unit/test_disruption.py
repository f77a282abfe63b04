"""Table tests for controlplane.disruption: how many may go down now, how many extra may start.

The rows read as the situations rollout, drain and fencing meet: instances down elsewhere,
removed instances still stopping, hosts that went silent, a cordoned host being emptied.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from controlplane.disruption import (
    Budget,
    daemon_budget,
    is_available,
    may_still_run,
    service_budget,
)
from controlplane.view import InstanceView, WorkloadView
from keel.model import Desired, Kind, Phase, Resources

RUN, STOP, GONE = Desired.RUNNING, Desired.STOPPED, Desired.REMOVED
UP = frozenset({"h1", "h2", "h3", "h4"})  # READY hosts unless a row says otherwise


def web(
    *, replicas: int = 3, max_unavailable: int = 1, max_surge: int = 1, kind: Kind = Kind.SERVICE
) -> WorkloadView:
    return WorkloadView(
        name="web",
        kind=kind,
        generation=2,
        replicas=replicas,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        selector={},
        resources=Resources(100, 64),
        deleting=False,
    )


def inst(
    id: str,
    host: str,
    *,
    desired: Desired = RUN,
    phase: Phase = Phase.RUNNING,
    ready: bool | None = None,
    workload: str = "web",
    generation: int = 2,
) -> InstanceView:
    if ready is None:
        ready = desired is RUN and phase is Phase.RUNNING
    return InstanceView(id, workload, generation, host, desired, Resources(100, 64), phase, ready)


THREE = [inst("a", "h1"), inst("b", "h2"), inst("c", "h3")]

# (workload, instances, ready hosts) -> (available, live, stopping, may_go_down, may_start)
SERVICE_CASES: list[
    tuple[str, WorkloadView, Sequence[InstanceView], frozenset[str], tuple[int, int, int, int, int]]
] = [
    ("steady-state-has-one-down-and-one-extra", web(), THREE, UP, (3, 3, 0, 1, 1)),
    (
        "an-instance-down-elsewhere-uses-the-budget",
        web(),
        [*THREE[:2], inst("c", "h3", phase=Phase.FAILED)],
        UP,
        (2, 3, 0, 0, 1),
    ),
    (
        "not-ready-yet-is-not-available",
        web(),
        [*THREE[:2], inst("c", "h3", phase=Phase.STARTING)],
        UP,
        (2, 3, 0, 0, 1),
    ),
    (
        "running-but-health-failing-is-not-available",
        web(),
        [*THREE[:2], inst("c", "h3", ready=False)],
        UP,
        (2, 3, 0, 0, 1),
    ),
    (
        "instance-on-a-silent-host-is-down-but-may-still-run",
        web(),
        THREE,
        frozenset({"h1", "h2"}),
        (2, 3, 0, 0, 1),
    ),
    (
        "removed-and-still-stopping-holds-the-surge",
        web(),
        [*THREE, inst("o", "h4", desired=GONE, phase=Phase.RUNNING, generation=1)],
        UP,
        (3, 3, 1, 1, 0),
    ),
    (
        "removed-and-stopped-frees-the-surge",
        web(),
        [*THREE, inst("o", "h4", desired=GONE, phase=Phase.STOPPED, generation=1)],
        UP,
        (3, 3, 0, 1, 1),
    ),
    (
        "fenced-on-a-silent-host-still-holds-the-surge",
        web(),
        [*THREE, inst("o", "h4", desired=GONE, phase=Phase.RUNNING, generation=1)],
        frozenset({"h1", "h2", "h3"}),
        (3, 3, 1, 1, 0),
    ),
    (
        "fenced-and-presumed-self-stopped-frees-the-surge",
        web(),
        [*THREE, inst("o", "h4", desired=GONE, phase=Phase.STOPPED, generation=1)],
        frozenset({"h1", "h2", "h3"}),
        (3, 3, 0, 1, 1),
    ),
    (
        "desired-stopped-is-live-but-not-available",
        web(),
        [*THREE[:2], inst("c", "h3", desired=STOP, phase=Phase.STOPPED)],
        UP,
        (2, 3, 0, 0, 1),
    ),
    (
        "max-surge-0-starts-nothing-until-one-stops",
        web(max_surge=0),
        THREE,
        UP,
        (3, 3, 0, 1, 0),
    ),
    (
        "max-surge-0-starts-the-replacement-once-the-old-stopped",
        web(max_surge=0),
        [*THREE[:2], inst("c", "h3", desired=GONE, phase=Phase.STOPPED)],
        UP,
        (2, 2, 0, 0, 1),
    ),
    (
        "max-unavailable-0-takes-nothing-down-until-the-surge-is-ready",
        web(max_unavailable=0),
        [*THREE, inst("n", "h4", phase=Phase.STARTING)],
        UP,
        (3, 4, 0, 0, 0),
    ),
    (
        "max-unavailable-0-takes-one-down-once-the-surge-is-ready",
        web(max_unavailable=0),
        [*THREE, inst("n", "h4")],
        UP,
        (4, 4, 0, 1, 0),
    ),
    (
        "budget-larger-than-replicas-floors-at-zero",
        web(replicas=1, max_unavailable=3),
        [inst("a", "h1")],
        UP,
        (1, 1, 0, 1, 1),
    ),
    (
        "other-workloads-do-not-count",
        web(),
        [*THREE, inst("x", "h4", workload="db"), inst("y", "h4", workload="db", desired=GONE)],
        UP,
        (3, 3, 0, 1, 1),
    ),
    ("nothing-placed-yet-may-start-all-and-the-surge", web(), [], UP, (0, 0, 0, 0, 4)),
    ("scaled-to-zero-takes-everything-down", web(replicas=0), THREE, UP, (3, 3, 0, 3, 0)),
]


@pytest.mark.parametrize(
    ("workload", "instances", "ready_hosts", "expected"),
    [case[1:] for case in SERVICE_CASES],
    ids=[case[0] for case in SERVICE_CASES],
)
def test_service_budget(
    workload: WorkloadView,
    instances: Sequence[InstanceView],
    ready_hosts: frozenset[str],
    expected: tuple[int, int, int, int, int],
) -> None:
    """A service's budget counts its instances as the row says, wherever they run."""
    b = service_budget(workload, instances, ready_hosts)
    assert (b.available, b.live, b.stopping, b.may_go_down, b.may_start) == expected


DAEMON_CASES: list[
    tuple[str, Sequence[InstanceView], frozenset[str], tuple[int, int, int, int, int]]
] = [
    (
        "one-per-target-host",
        [inst("a", "h1"), inst("b", "h2")],
        frozenset({"h1", "h2"}),
        (2, 2, 0, 1, 1),
    ),
    (
        "two-available-on-one-host-count-as-one-host",
        [inst("a", "h1", generation=1), inst("a2", "h1"), inst("b", "h2")],
        frozenset({"h1", "h2"}),
        (2, 3, 0, 1, 0),
    ),
    (
        "instances-off-the-targets-do-not-count",
        [inst("a", "h1"), inst("b", "h2"), inst("z", "h4"), inst("y", "h4", desired=GONE)],
        frozenset({"h1", "h2"}),
        (2, 2, 0, 1, 1),
    ),
    (
        "a-host-whose-instance-is-stopping-is-down",
        [inst("a", "h1", desired=GONE, phase=Phase.STOPPING), inst("b", "h2")],
        frozenset({"h1", "h2"}),
        (1, 1, 1, 0, 1),
    ),
    ("no-targets-no-budget", [], frozenset(), (0, 0, 0, 0, 1)),
]


@pytest.mark.parametrize(
    ("instances", "targets", "expected"),
    [case[1:] for case in DAEMON_CASES],
    ids=[case[0] for case in DAEMON_CASES],
)
def test_daemon_budget(
    instances: Sequence[InstanceView],
    targets: frozenset[str],
    expected: tuple[int, int, int, int, int],
) -> None:
    """A daemon's unit is a target host: one available instance makes its host available."""
    b = daemon_budget(web(kind=Kind.DAEMON), instances, targets, UP)
    assert (b.available, b.live, b.stopping, b.may_go_down, b.may_start) == expected


@pytest.mark.parametrize(
    ("instance", "ready_hosts", "available", "may_run"),
    [
        (inst("a", "h1"), UP, True, True),
        (inst("a", "h1"), frozenset(), False, True),
        (inst("a", "h1", phase=Phase.STARTING), UP, False, True),
        (inst("a", "h1", desired=STOP, phase=Phase.STOPPED), UP, False, True),
        (inst("a", "h1", desired=GONE, phase=Phase.RUNNING, ready=True), UP, False, True),
        (inst("a", "h1", desired=GONE, phase=Phase.STOPPED), UP, False, False),
        (inst("a", "h1", desired=GONE, phase=Phase.RUNNING), frozenset(), False, True),
        (inst("a", "h1", desired=GONE, phase=Phase.FAILED), frozenset(), False, True),
    ],
    ids=[
        "serving",
        "on-a-silent-host",
        "starting",
        "desired-stopped",
        "removed-still-running",
        "removed-stopped",
        "fenced-on-a-silent-host",
        "fenced-crashed-on-a-silent-host-may-restart",
    ],
)
def test_instance_rules(
    instance: InstanceView, ready_hosts: frozenset[str], available: bool, may_run: bool
) -> None:
    """Available and may-still-run, one instance at a time."""
    assert is_available(instance, ready_hosts) is available
    assert may_still_run(instance) is may_run


def test_drain_make_before_break_never_passes_the_budget() -> None:
    """Moving a cordoned host's instance: start elsewhere first, stop the old once it serves."""
    w = web()
    fleet = list(THREE)  # a on h1 is to move off h1
    assert service_budget(w, fleet, UP).may_start == 1
    fleet.append(inst("r", "h4", phase=Phase.STARTING))  # the replacement, not serving yet
    b = service_budget(w, fleet, UP)
    assert (b.may_start, b.may_go_down) == (0, 1)  # no second move may start
    fleet[-1] = inst("r", "h4")  # the replacement serves: a may stop
    assert service_budget(w, fleet, UP).may_go_down == 2
    fleet[0] = inst("a", "h1", desired=GONE)
    b = service_budget(w, fleet, UP)
    assert (b.available, b.stopping, b.may_start) == (3, 1, 0)  # a still holds the surge


def test_drain_waits_when_an_instance_elsewhere_is_already_down() -> None:
    """With max_surge 0 the move is stop-before-start, and only while nothing else is down."""
    w = web(max_surge=0)
    fleet = [*THREE[:2], inst("c", "h3", phase=Phase.FAILED)]
    b = service_budget(w, fleet, UP)
    assert (b.may_go_down, b.may_start) == (0, 0)
    assert b.why_no_removal("ready") == (
        "waiting on max_unavailable=1: 2 ready, at least 2 must stay so"
    )


def test_fencing_replaces_a_lost_host_only_within_the_surge() -> None:
    """A lost host's live instances may still run: replacing them must fit under max_surge."""
    lost = frozenset({"h2", "h3"})  # h1 went silent with a on it
    assert service_budget(web(), THREE, lost).may_start == 1
    assert service_budget(web(max_surge=0), THREE, lost).may_start == 0


# Fencing a silent host (h1 holds `on_lost` of the workload's instances, already fenced:
# REMOVED, still RUNNING as last reported): (replicas, max_surge, on_lost, self-stopped,
# replacements that may start now). A replacement never takes the instances that may still
# run past replicas + max_surge.
FENCE_CASES = [
    ("one-lost-of-three-surge-1", 3, 1, 1, 0, 1),
    ("two-lost-of-three-surge-1-one-waits", 3, 1, 2, 0, 1),
    ("two-lost-of-three-surge-2", 3, 2, 2, 0, 2),
    ("singleton-surge-0-waits-for-its-agent", 1, 0, 1, 0, 0),
    ("singleton-surge-0-after-stop-after", 1, 0, 1, 1, 1),
    ("two-lost-one-self-stopped-surge-0", 2, 0, 2, 1, 1),
]


@pytest.mark.parametrize(
    ("replicas", "surge", "lost", "self_stopped", "may_start"),
    [case[1:] for case in FENCE_CASES],
    ids=[case[0] for case in FENCE_CASES],
)
def test_fenced_instances_hold_the_surge_until_stopped(
    replicas: int, surge: int, lost: int, self_stopped: int, may_start: int
) -> None:
    """Fenced instances count as possibly running until their agent (or their on_disconnect
    time, presumed by liveness as STOPPED) says they stopped."""
    w = web(replicas=replicas, max_surge=surge, max_unavailable=1)
    fleet = [inst(f"k{n}", f"h{n + 2}") for n in range(replicas - lost)]
    for n in range(lost):
        phase = Phase.STOPPED if n < self_stopped else Phase.RUNNING
        fleet.append(inst(f"f{n}", "h1", desired=GONE, phase=phase))
    up = frozenset(f"h{n}" for n in range(2, 10))
    b = service_budget(w, fleet, up)
    assert b.may_start == may_start
    # Whatever starts now, the processes that may run stay within the ceiling.
    assert b.started(b.may_start).may_run <= replicas + surge


def test_took_down_spends_the_budget() -> None:
    """Each instance taken down lowers what may still go down, never below zero."""
    b = Budget(target=5, max_unavailable=2, max_surge=1, available=5, live=5, stopping=0)
    assert [b.may_go_down, b.took_down().may_go_down, b.took_down(2).may_go_down] == [2, 1, 0]
    assert b.took_down(3).may_go_down == 0


def test_why_texts_name_the_knob() -> None:
    """The explanations name max_unavailable, max_surge and the counts behind them."""
    frozen = Budget(target=3, max_unavailable=0, max_surge=0, available=3, live=3, stopping=0)
    assert frozen.frozen
    assert "both 0" in frozen.why_no_removal("ready")
    b = Budget(target=3, max_unavailable=1, max_surge=1, available=3, live=3, stopping=1)
    assert b.why_no_start() == "waiting for 1 removed instance to stop (max_surge=1)"
