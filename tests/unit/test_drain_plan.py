"""The drain ahead (controlplane.drain_plan.plan_drain): moves in waves, the ETA from the
workloads' timings, what would block; and a property: on generated fleets, no state the drain
passes through takes a workload below its disruption budget or past its surge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drainfleet import NOW, fleet, host, inst, workload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.disruption import service_budget
from controlplane.drain import DrainFleet, MoveKind, Options
from controlplane.drain_plan import DrainPlan, Timing, plan_drain
from controlplane.fleet_index import InstanceRecord
from controlplane.view import HostView, ReadyHosts, WorkloadView
from keel.blockers import BlockerReason
from keel.model import HostState, Kind, Phase

H1, H2, H3 = "host-1", "host-2", "host-3"
THREE = [host(H1, schedulable=False), host(H2), host(H3)]
FAST = Timing(start_s=5.0, stop_s=2.0)


def _plan(f: DrainFleet, options: Options | None = None, **timings: Timing) -> DrainPlan:
    names = f.workloads
    return plan_drain(
        f,
        options or Options(),
        now=NOW,
        timings={name: timings.get(name, FAST) for name in names},
        loop_s=0.0,
        write_s=0.0,
    )


def test_make_before_break_takes_start_then_stop() -> None:
    """One move: the replacement is ready after 5 s, the old instance gone 2 s later."""
    f = fleet([H1], THREE, [workload()], [inst("web-a", H1), inst("web-b", H2), inst("web-c", H3)])
    plan = _plan(f)
    [move] = plan.moves
    assert (move.instance, move.target, move.kind, move.wave) == (
        "web-a",
        H2,
        MoveKind.MAKE_BEFORE_BREAK,
        1,
    )
    assert (move.starts_at_s, move.done_at_s, plan.eta_s, plan.blockers) == (0.0, 7.0, 7.0, ())


def test_one_workload_moves_one_at_a_time_within_its_surge() -> None:
    """Three instances of a workload with max_surge 1: three waves, one after the other."""
    f = fleet(
        [H1],
        THREE,
        [workload()],
        [inst("web-a", H1), inst("web-b", H1), inst("web-c", H1)],
    )
    plan = _plan(f)
    assert [(m.instance, m.wave) for m in plan.moves] == [("web-a", 1), ("web-b", 2), ("web-c", 3)]
    assert plan.eta_s == 21.0
    # The replacements spread over the hosts left.
    assert [m.target for m in plan.moves] == [H2, H3, H2]


def test_max_parallel_bounds_moves_of_different_workloads() -> None:
    """Two workloads with one instance each: together unbounded, one by one with max 1."""
    workloads = [workload("api", replicas=1), workload("web", replicas=1)]
    instances = [inst("api-a", H1, workload="api"), inst("web-a", H1)]
    f = fleet([H1], THREE, workloads, instances)
    assert _plan(f).eta_s == 7.0
    serial = _plan(f, Options(max_parallel=1))
    assert [(m.instance, m.wave) for m in serial.moves] == [("api-a", 1), ("web-a", 2)]
    assert serial.eta_s == 14.0


def test_stop_before_start_is_done_when_the_host_is_empty() -> None:
    """max_surge 0: the stop first (2 s), then the workload controller's replacement; the
    host is empty at 2 s, the move done when its replacement is ready (7 s)."""
    f = fleet(
        [H1],
        THREE,
        [workload(max_surge=0)],
        [inst("web-a", H1), inst("web-b", H2), inst("web-c", H3)],
    )
    plan = _plan(f)
    [move] = plan.moves
    assert (move.kind, move.target, move.done_at_s, plan.eta_s) == (
        MoveKind.STOP_BEFORE_START,
        H2,
        7.0,
        2.0,
    )


def test_daemons_go_after_the_services() -> None:
    f = fleet(
        [H1],
        THREE,
        [workload("agent", kind=Kind.DAEMON), workload("web")],
        [inst("agent-1", H1, workload="agent"), inst("web-a", H1), inst("web-b", H2)],
    )
    plan = _plan(f)
    assert [(m.instance, m.kind, m.wave, m.done_at_s) for m in plan.moves] == [
        ("web-a", MoveKind.MAKE_BEFORE_BREAK, 1, 7.0),
        ("agent-1", MoveKind.DAEMON, 2, 9.0),
    ]


def test_a_plan_that_cannot_finish_says_what_blocks_it() -> None:
    """A budget a crash-looping replica holds: no move, the blocker, no ETA."""
    f = fleet(
        [H1],
        THREE,
        [workload(max_surge=0)],
        [inst("web-a", H1), inst("web-b", H2, phase=Phase.FAILED), inst("web-c", H3)],
    )
    plan = _plan(f)
    assert plan.moves == ()
    assert plan.eta_s is None and plan.remaining == 1
    assert [(b.instance, b.reason) for b in plan.blockers] == [
        ("web-a", BlockerReason.BUDGET_EXHAUSTED)
    ]


def test_moves_under_way_count_the_time_they_have_taken() -> None:
    """A replacement started 3 s ago is ready 2 s from now; the stop follows."""
    f = fleet(
        [H1],
        THREE,
        [workload()],
        [
            inst("web-a", H1),
            inst("web-b", H2),
            inst("web-r", H3, replaces="web-a", phase=Phase.STARTING, age_s=3),
        ],
    )
    assert _plan(f).eta_s == 4.0


def test_the_estimate_counts_the_control_loops_own_pace() -> None:
    """Each round of reports costs the loop's reaction time: one make-before-break move is 7 s
    of the workload's own and two reactions (its writes are done while it waits)."""
    f = fleet([H1], THREE, [workload()], [inst("web-a", H1), inst("web-b", H2), inst("web-c", H3)])
    plan = plan_drain(f, Options(), now=NOW, timings={"web": FAST}, loop_s=0.1, write_s=0.01)
    assert plan.eta_s is not None and abs(plan.eta_s - (7.0 + 2 * 0.1)) < 1e-9


# --------------------------------------------------------------------------- the property


def _counts(
    workloads: Mapping[str, WorkloadView],
    records: Mapping[str, Sequence[InstanceRecord]],
    hosts: Mapping[str, HostView],
) -> dict[str, tuple[int, int]]:
    """(available, may run) per service."""
    ready = ReadyHosts(hosts)
    out = {}
    for name, w in workloads.items():
        if w.kind is Kind.SERVICE:
            b = service_budget(w, (r.view for r in records.get(name, ())), ready)
            out[name] = (b.available, b.may_run)
    return out


@st.composite
def drains(draw: st.DrawFn) -> tuple[DrainFleet, Options]:
    n_hosts = draw(st.integers(2, 5))
    n_targets = draw(st.integers(1, min(2, n_hosts - 1)))
    hosts = []
    for i in range(1, n_hosts + 1):
        target = i <= n_targets
        state = HostState.READY
        if not target and draw(st.integers(0, 5)) == 0:
            state = HostState.NOT_READY
        cpu = draw(st.sampled_from([150, 300, 4000]))
        hosts.append(host(f"host-{i}", cpu=cpu, state=state, schedulable=not target))
    workloads = []
    records = []
    for w in range(draw(st.integers(1, 3))):
        name = f"w{w}"
        kind = Kind.DAEMON if draw(st.integers(0, 4)) == 0 else Kind.SERVICE
        view = workload(
            name,
            kind=kind,
            replicas=draw(st.integers(1, 4)),
            max_unavailable=draw(st.integers(0, 2)),
            max_surge=draw(st.integers(0, 2)),
        )
        workloads.append(view)
        count = n_hosts if kind is Kind.DAEMON else view.replicas
        for n in range(count):
            on = f"host-{n + 1}" if kind is Kind.DAEMON else f"host-{draw(st.integers(1, n_hosts))}"
            broken = draw(st.integers(0, 4)) == 0
            phase = Phase.FAILED if broken else Phase.RUNNING
            records.append(inst(f"{name}-{n}", on, workload=name, phase=phase))
    targets = [f"host-{i}" for i in range(1, n_targets + 1)]
    options = Options(
        max_parallel=draw(st.one_of(st.none(), st.integers(1, 3))),
        ignore_daemons=draw(st.booleans()),
    )
    return fleet(targets, hosts, workloads, records), options


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=drains())
def test_no_state_a_drain_passes_through_breaks_a_budget(case: tuple[DrainFleet, Options]) -> None:
    """At every step of a simulated drain, each service has at least as many instances serving
    as its budget's floor (or as it had, if it started below) and no more processes that may
    run than its ceiling (or than it had); no instance moves twice; a drain that finishes
    leaves nothing of what it moves on its hosts."""
    f, options = case
    workloads = f.workloads
    before = _counts(workloads, f.instances, f.hosts)
    bounds = {}
    for name, (available, may_run) in before.items():
        w = workloads[name]
        floor = max(0, w.replicas - w.max_unavailable)
        bounds[name] = (min(floor, available), max(w.replicas + w.max_surge, may_run))
    seen: list[str] = []

    def observe(
        records: Mapping[str, Sequence[InstanceRecord]], hosts: Mapping[str, HostView]
    ) -> None:
        for name, (available, may_run) in _counts(workloads, records, hosts).items():
            low, high = bounds[name]
            assert available >= low, f"{name}: {available} available, the budget allows {low}"
            assert may_run <= high, f"{name}: {may_run} may run, the surge allows {high}"
        seen.append("state")

    timings = {name: FAST for name in workloads}
    plan = plan_drain(f, options, now=NOW, timings=timings, observe=observe)
    ids = [m.instance for m in plan.moves]
    assert len(ids) == len(set(ids)), f"an instance moved twice: {ids}"
    if plan.eta_s is not None:
        assert plan.remaining == 0 and not plan.blockers
        assert all(m.done_at_s is not None for m in plan.moves if m.kind is not MoveKind.DAEMON), (
            plan.moves
        )
    else:
        assert plan.blockers or plan.remaining
