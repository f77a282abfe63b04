"""Table tests for the drain planner's next step (controlplane.drain.plan_step): what starts,
what stops, what blocks and why, on small fleets where host-1 is drained."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from drainfleet import NOW, fleet, host, inst, workload

from controlplane.drain import DrainFleet, MoveKind, Options, Start, Stop, plan_step
from controlplane.fleet_index import InstanceRecord
from controlplane.view import WorkloadView
from keel.blockers import BlockerReason
from keel.model import Desired, HostState, Kind, Phase

B = BlockerReason
H1, H2, H3 = "host-1", "host-2", "host-3"
THREE = [host(H1, schedulable=False), host(H2), host(H3)]
REMOVED = Desired.REMOVED


def web3(*extra: InstanceRecord) -> list[InstanceRecord]:
    """web's three replicas, one per host, all ready; `extra` instances added."""
    return [inst("web-a", H1), inst("web-b", H2), inst("web-c", H3), *extra]


@dataclass(frozen=True)
class Case:
    fleet: DrainFleet
    starts: list[Start] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    blockers: list[tuple[str, BlockerReason]] = field(default_factory=list)
    evict: list[str] = field(default_factory=list)
    remaining: int = 1
    in_flight: int = 0
    queued: int = 0
    options: Options = field(default_factory=Options)
    message: str = ""  # a text the first blocker's message must hold


def _web(**kw: Any) -> list[WorkloadView]:
    return [workload(**kw)]


CASES: dict[str, Case] = {
    "make-before-break starts a replacement on another host first": Case(
        fleet([H1], THREE, _web(), web3()),
        starts=[Start("web", "web-a", H2)],
        in_flight=1,
    ),
    "the instance stops once its replacement is ready": Case(
        fleet([H1], THREE, _web(), web3(inst("web-r", H2, replaces="web-a"))),
        stops=[Stop("web-a", "web", MoveKind.MAKE_BEFORE_BREAK)],
        in_flight=1,
    ),
    "a replacement starting is waited for, not a blocker": Case(
        fleet(
            [H1],
            THREE,
            _web(),
            web3(inst("web-r", H2, replaces="web-a", phase=Phase.STARTING, age_s=5)),
        ),
        in_flight=1,
    ),
    "a replacement not ready past the timeout is REPLACEMENT_NOT_READY": Case(
        fleet(
            [H1],
            THREE,
            _web(),
            web3(inst("web-r", H2, replaces="web-a", phase=Phase.STARTING, age_s=90)),
        ),
        blockers=[("web-a", B.REPLACEMENT_NOT_READY)],
        in_flight=1,
        message="replacement web-r on host-2 is not ready after 90s (STARTING)",
    ),
    "a crash-looping replacement is REPLACEMENT_NOT_READY at once": Case(
        fleet(
            [H1],
            THREE,
            _web(),
            web3(
                inst(
                    "web-r",
                    H2,
                    replaces="web-a",
                    phase=Phase.FAILED,
                    age_s=3,
                    reason="CRASH_LOOP",
                    stuck=True,
                )
            ),
        ),
        blockers=[("web-a", B.REPLACEMENT_NOT_READY)],
        in_flight=1,
        message="CRASH_LOOP",
    ),
    "a ready replacement still waits on the budget when another replica went down": Case(
        fleet(
            [H1],
            THREE,
            _web(),
            [
                inst("web-a", H1),
                inst("web-b", H2, phase=Phase.FAILED, reason="CRASH_LOOP"),
                inst("web-c", H3, phase=Phase.FAILED),
                inst("web-r", H2, replaces="web-a"),
            ],
        ),
        blockers=[("web-a", B.BUDGET_EXHAUSTED)],
        in_flight=1,
        message="down now: web-b on host-2 (FAILED, CRASH_LOOP)",
    ),
    "max_surge 0 stops first, within the budget": Case(
        fleet([H1], THREE, _web(max_surge=0), web3()),
        stops=[Stop("web-a", "web", MoveKind.STOP_BEFORE_START)],
        in_flight=1,
    ),
    "max_surge 0 with a replica down elsewhere is BUDGET_EXHAUSTED naming it": Case(
        fleet(
            [H1],
            THREE,
            _web(max_surge=0),
            [
                inst("web-a", H1),
                inst("web-b", H2, phase=Phase.FAILED, reason="CRASH_LOOP"),
                inst("web-c", H3),
            ],
        ),
        blockers=[("web-a", B.BUDGET_EXHAUSTED)],
        message=(
            "web allows max_unavailable=1 of 3: 2 ready, at least 2 must stay; down now: "
            "web-b on host-2 (FAILED, CRASH_LOOP)"
        ),
    ),
    "a second move of one workload waits for the surge its first one holds": Case(
        fleet(
            [H1],
            THREE,
            _web(),
            [inst("web-a", H1), inst("web-b", H1), inst("web-c", H3)],
        ),
        starts=[Start("web", "web-a", H2)],
        blockers=[("web-b", B.BUDGET_EXHAUSTED)],
        remaining=2,
        in_flight=1,
    ),
    "max_surge held by an instance already starting is BUDGET_EXHAUSTED": Case(
        fleet(
            [H1],
            THREE,
            _web(),
            web3(inst("web-d", H3, phase=Phase.STARTING)),
        ),
        blockers=[("web-a", B.BUDGET_EXHAUSTED)],
        message="max_surge=1: 4 instances may be running for 3 replicas, at most 4; starting",
    ),
    "no host with room is NO_CAPACITY with the closest fit": Case(
        fleet(
            [H1],
            [host(H1, schedulable=False), host(H2, cpu=150), host(H3, cpu=120)],
            _web(),
            web3(),
        ),
        blockers=[("web-a", B.NO_CAPACITY)],
        message="closest fit host-2 has cpu 50m free (short 50m)",
    ),
    "max_surge 0 with no room anywhere does not stop the instance": Case(
        fleet(
            [H1],
            [host(H1, schedulable=False), host(H2, cpu=100), host(H3, cpu=100)],
            _web(max_surge=0),
            web3(),
        ),
        blockers=[("web-a", B.NO_CAPACITY)],
    ),
    "a frozen budget can never move": Case(
        fleet([H1], THREE, _web(max_surge=0, max_unavailable=0), web3()),
        blockers=[("web-a", B.BUDGET_EXHAUSTED)],
        message="max_unavailable and max_surge are both 0",
    ),
    "max_parallel bounds the moves under way over the whole drain": Case(
        fleet(
            [H1],
            THREE,
            [workload("api", replicas=2, max_surge=2), workload("web")],
            [
                inst("api-a", H1, workload="api"),
                inst("api-b", H1, workload="api"),
                inst("web-a", H1),
            ],
        ),
        starts=[Start("api", "api-a", H2), Start("api", "api-b", H3)],
        remaining=3,
        in_flight=2,
        queued=1,
        options=Options(max_parallel=2),
    ),
    "a replacement never goes to a host being drained": Case(
        fleet([H1], THREE, _web(), web3(), draining=[H2]),
        starts=[Start("web", "web-a", H3)],
        in_flight=1,
    ),
    "instances not serving move first": Case(
        fleet(
            [H1],
            THREE,
            _web(replicas=2),
            [inst("web-a", H1), inst("web-b", H1, phase=Phase.FAILED)],
        ),
        starts=[Start("web", "web-b", H2)],
        blockers=[("web-a", B.BUDGET_EXHAUSTED)],
        remaining=2,
        in_flight=1,
    ),
    "daemons wait while a service instance is left": Case(
        fleet(
            [H1],
            THREE,
            [workload("agent", kind=Kind.DAEMON), workload("web")],
            web3(inst("agent-1", H1, workload="agent")),
        ),
        starts=[Start("web", "web-a", H2)],
        in_flight=1,
    ),
    "daemons stop last: their host is marked drained": Case(
        fleet(
            [H1],
            THREE,
            [workload("agent", kind=Kind.DAEMON)],
            [inst("agent-1", H1, workload="agent"), inst("agent-2", H2, workload="agent")],
        ),
        evict=[H1],
    ),
    "with ignore_daemons they keep running and do not count": Case(
        fleet(
            [H1],
            THREE,
            [workload("agent", kind=Kind.DAEMON)],
            [inst("agent-1", H1, workload="agent")],
        ),
        remaining=0,
        options=Options(ignore_daemons=True),
    ),
    "a stop on an unreachable host is AGENT_UNREACHABLE": Case(
        fleet(
            [H1],
            [host(H1, schedulable=False, state=HostState.NOT_READY), host(H2), host(H3)],
            _web(),
            [inst("web-a", H1, desired=REMOVED), inst("web-b", H2), inst("web-c", H3)],
        ),
        blockers=[("web-a", B.AGENT_UNREACHABLE)],
        in_flight=1,
        message="host-1 is NOT_READY",
    ),
    "a stop not confirmed past its grace is STOP_TIMEOUT": Case(
        fleet(
            [H1],
            THREE,
            _web(max_surge=2),
            web3(inst("web-z", H1, desired=REMOVED, age_s=30)),
        ),
        starts=[Start("web", "web-a", H2)],
        blockers=[("web-z", B.STOP_TIMEOUT)],
        remaining=2,
        in_flight=2,
        message="web-z was asked to stop 30s ago (stop grace 2s) and is still RUNNING",
    ),
    "force stops everything left, budget or not": Case(
        fleet(
            [H1],
            THREE,
            _web(max_surge=0, max_unavailable=0),
            web3(inst("web-d", H1)),
        ),
        stops=[Stop("web-a", "web", MoveKind.FORCE), Stop("web-d", "web", MoveKind.FORCE)],
        remaining=2,
        in_flight=2,
        options=Options(force=True),
    ),
    "a workload being deleted is left to the workload controller": Case(
        fleet([H1], THREE, _web(deleting=True), web3()),
        in_flight=1,
    ),
    "done when nothing is left on the host": Case(
        fleet([H1], THREE, _web(), [inst("web-b", H2), inst("web-c", H3)]),
        remaining=0,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_drain_step(name: str) -> None:
    case = CASES[name]
    step = plan_step(case.fleet, case.options, now=NOW)
    assert list(step.starts) == case.starts
    assert [(s.instance, s.workload, s.kind) for s in step.stops] == [
        (s.instance, s.workload, s.kind) for s in case.stops
    ]
    assert [(b.instance, b.reason) for b in step.blockers] == case.blockers
    assert list(step.evict_daemons) == case.evict
    assert (step.remaining, step.in_flight, step.queued) == (
        case.remaining,
        case.in_flight,
        case.queued,
    )
    if case.message:
        assert case.message in step.blockers[0].message, step.blockers[0].message


def test_a_blocker_names_the_replacement_it_waits_on() -> None:
    """REPLACEMENT_NOT_READY carries the replacement's id (its next command describes it)."""
    f = fleet(
        [H1],
        THREE,
        [workload()],
        web3(inst("web-r", H2, replaces="web-a", phase=Phase.FAILED)),
    )
    [blocker] = plan_step(f, Options(), now=NOW).blockers
    assert (blocker.replacement, blocker.host, blocker.workload) == ("web-r", H1, "web")


def test_a_step_changes_nothing_it_reads() -> None:
    """Planning twice from the same fleet gives the same step (it is a function of its input)."""
    f = fleet([H1], THREE, [workload()], web3())
    assert plan_step(f, Options(), now=NOW) == plan_step(f, Options(), now=NOW)


def test_a_stop_records_the_budget_it_was_decided_within() -> None:
    """Make-before-break: the stop leaves 3 of 3 ready (the replacement counted), floor 2."""
    f = fleet([H1], THREE, [workload()], web3(inst("web-r", H2, replaces="web-a")))
    [stop] = plan_step(f, Options(), now=NOW).stops
    assert (stop.ready, stop.floor) == (3, 2)
