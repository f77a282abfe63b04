"""A paused rollout in the planner and the stuck detector (`keelctl rollout pause`).

Paused, a rollout holds where it is: no old instance is removed or replaced for being old
(services and daemons), old instances count as replicas, and a scale change still works
(current instances go first on a scale-down, so a pause never moves the rollout on). The
stuck detector never calls a paused workload ROLLOUT_BLOCKED; paused for longer than
--rollout-paused-after it is ROLLOUT_PAUSED.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
from test_rollout import (
    DMN,
    GONE,
    H3,
    NEW3,
    OLD3,
    RUN,
    SVC,
    Fleet,
    _random_case,
    host,
    hosts,
    inst,
    old,
    plan_for,
    run_to_completion,
    web,
)
from test_stuck_verdicts import INSTANCE, NO_HOST, NOW, WORKLOAD, ago

from controlplane.rollout import WorkloadPlan, plan_workload
from controlplane.scheduler import daemon_hosts, matches, usage_of
from controlplane.store import WorkloadRow
from controlplane.verdicts import judge_workload, may_be_stuck
from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import HostState, Phase
from keel.stuck import Reason


def paused(w: WorkloadView) -> WorkloadView:
    return dataclasses.replace(w, paused=True)


# (case, workload, hosts, instances, create, remove, blocked contains)
CASES: list[
    tuple[
        str, WorkloadView, list[HostView], list[InstanceView], tuple[str, ...], tuple[str, ...], str
    ]
] = [
    (
        "paused before anything moved: nothing starts, nothing goes",
        paused(web(generation=2)),
        H3,
        OLD3,
        (),
        (),
        "rollout paused: 3 old instances held until it is resumed",
    ),
    (
        "paused mid-way: the old instances left stay",
        paused(web(generation=2)),
        H3,
        [old("a", "host-1"), old("b", "host-2"), inst("n", "host-3", gen=2)],
        (),
        (),
        "rollout paused: 2 old instances held",
    ),
    (
        "a surge in flight beyond replicas is given back, not an old instance",
        paused(web(generation=2)),
        H3,
        [*OLD3, inst("n", "host-1", gen=2, phase=Phase.STARTING)],
        (),
        ("n",),
        "3 old instances held",
    ),
    (
        "paused after a first step: the new instance beyond replicas goes, the old ones stay",
        paused(web(generation=2)),
        H3,
        [
            old("b", "host-2"),
            old("c", "host-3"),
            inst("n", "host-1", gen=2),
            inst("s", "host-2", gen=2, phase=Phase.STARTING),
        ],
        (),
        ("s",),
        "2 old instances held",
    ),
    (
        "an old instance that is not available is not removed for being old",
        paused(web(generation=2)),
        H3,
        [old("a", "host-1", phase=Phase.FAILED), old("b", "host-2"), old("c", "host-3")],
        (),
        (),
        "3 old instances held",
    ),
    (
        "an old instance on a host that is not READY stays (fencing is liveness's)",
        paused(web(generation=2)),
        [*hosts(2), host("host-3", state=HostState.NOT_READY)],
        OLD3,
        (),
        (),
        "3 old instances held",
    ),
    (
        "a scale-up starts current instances beside the old ones",
        paused(web(generation=2, replicas=5)),
        H3,
        OLD3,
        ("host-1", "host-2"),
        (),
        "3 old instances held",
    ),
    (
        "a scale-down removes current instances first",
        paused(web(generation=2, replicas=2)),
        H3,
        [old("a", "host-1"), old("b", "host-2"), inst("n", "host-3", gen=2)],
        (),
        ("n",),
        "2 old instances held",
    ),
    (
        "old instances go only once more of them than replicas are left",
        paused(web(generation=2, replicas=1, max_unavailable=2)),
        H3,
        [old("a", "host-1"), old("b", "host-2"), inst("n", "host-3", gen=2)],
        (),
        ("a", "n"),
        "1 old instance held",
    ),
    (
        "a scale-down takes an unavailable instance before an available one",
        paused(web(generation=2, replicas=2)),
        H3,
        [old("a", "host-1"), old("b", "host-2", ready=False), inst("n", "host-3", gen=2)],
        (),
        ("b",),
        "1 old instance held",
    ),
    (
        "with nothing old, paused scales like any workload",
        paused(web(replicas=2)),
        H3,
        NEW3,
        (),
        ("a",),
        "",
    ),
    (
        "paused with nothing to roll out: an empty plan",
        paused(web()),
        H3,
        NEW3,
        (),
        (),
        "",
    ),
    (
        "daemon: old instances stay on every host",
        paused(web(kind=DMN, generation=2)),
        H3,
        OLD3,
        (),
        (),
        "rollout paused: 3 old instances held",
    ),
    (
        "daemon: a host with an old and a ready new instance keeps both",
        paused(web(kind=DMN, generation=2)),
        H3,
        [*OLD3, inst("n", "host-1", gen=2)],
        (),
        (),
        "3 old instances held",
    ),
    (
        "daemon: a new matching host gets a current instance",
        paused(web(kind=DMN, generation=2)),
        hosts(4),
        OLD3,
        ("host-4",),
        (),
        "3 old instances held",
    ),
    (
        "daemon: a host that left the selector loses its old instance all the same",
        paused(web(kind=DMN, generation=2)),
        [*hosts(2), host("host-3", labels={"role": "db"})],
        OLD3,
        (),
        ("c",),
        "2 old instances held",
    ),
]


@pytest.mark.parametrize(
    ("workload", "fleet_hosts", "instances", "create", "remove", "blocked"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_a_paused_rollout_holds_where_it_is(
    workload: WorkloadView,
    fleet_hosts: list[HostView],
    instances: list[InstanceView],
    create: tuple[str, ...],
    remove: tuple[str, ...],
    blocked: str,
) -> None:
    """Each step of a paused rollout: what it creates and removes, and what it says it waits
    for; applying the plan and planning again changes nothing more (idempotence)."""
    plan = plan_for(workload, instances, fleet_hosts)
    assert (plan.create, plan.remove) == (create, remove), plan
    assert blocked in (plan.blocked or ""), plan.blocked
    if not blocked:
        assert "paused" not in (plan.blocked or "")
    fleet = Fleet(fleet_hosts, instances)
    fleet.apply(workload, plan)
    assert fleet.plan(workload).empty


def test_pause_holds_a_rollout_for_as_long_as_it_lasts_and_resume_finishes_it() -> None:
    """Paused mid-way, many agent rounds change nothing: no old instance goes, nothing new
    starts. Resumed, the rollout runs to the end within the budget."""
    fleet = Fleet(H3, [])
    v1 = web()
    run_to_completion(fleet, v1, target=3)
    v2 = dataclasses.replace(v1, generation=2)
    for _ in range(3):  # part of the way: some old instances replaced
        fleet.apply(v2, fleet.plan(v2))
        fleet.tick()
    before = {i.id for i in fleet.live() if i.generation == 1}
    assert before and len(before) < 3, fleet.instances
    held = paused(v2)
    for _ in range(20):
        plan = fleet.plan(held)
        assert plan.remove == () and plan.create == (), plan
        fleet.tick()
    assert {i.id for i in fleet.live() if i.generation == 1} == before
    run_to_completion(fleet, v2, target=3)
    assert all(i.generation == 2 for i in fleet.live())


def test_a_paused_daemon_rollout_holds_and_resumes() -> None:
    """The same for a daemon: its hosts keep their old instances until it is resumed."""
    fleet = Fleet(H3, [])
    d1 = web(kind=DMN)
    run_to_completion(fleet, d1, target=3)
    d2 = dataclasses.replace(d1, generation=2)
    fleet.apply(d2, fleet.plan(d2))
    fleet.tick()
    before = {i.id for i in fleet.live() if i.generation == 1}
    for _ in range(10):
        plan = fleet.plan(paused(d2))
        assert plan.remove == () and plan.create == (), plan
        fleet.tick()
    assert {i.id for i in fleet.live() if i.generation == 1} == before
    run_to_completion(fleet, d2, target=3)


def test_a_rollback_while_paused_keeps_the_instances_already_running_its_spec() -> None:
    """Generation 3 is generation 1's spec again (spec_generations): paused or not, the
    generation-1 instances are current and stay; the generation-2 one is old and held."""
    rolled_back = dataclasses.replace(web(generation=3), spec_generations=frozenset({1}))
    instances = [old("a", "host-1"), old("b", "host-2"), inst("n", "host-3", gen=2)]
    plan = plan_workload(
        paused(rolled_back), instances, {h.name: h for h in H3}, usage_of(instances)
    )
    assert plan.empty and "1 old instance held" in (plan.blocked or ""), plan
    resumed = plan_workload(rolled_back, instances, {h.name: h for h in H3}, usage_of(instances))
    assert resumed.remove == ("n",)


@pytest.mark.parametrize("seed", range(300))
def test_a_paused_plan_removes_old_instances_only_for_a_scale_down(seed: int) -> None:
    """For random fleets, paused: replanning after applying is empty, availability holds, and
    an available old instance goes only as a service's surplus (never while at most replicas
    of them are available) or from a daemon host that is no longer a target."""
    workload, fleet_hosts, instances = _random_case(seed)
    workload = paused(workload)
    fleet = Fleet(fleet_hosts, instances)
    mine = [i for i in instances if i.workload == "web" and i.live]
    plan = fleet.plan(workload)
    fleet.apply(workload, plan)
    assert fleet.plan(workload).empty, plan
    if workload.deleting:
        return
    by_id = {i.id: i for i in mine}
    old_removed = [by_id[r] for r in plan.remove if not workload.is_current(by_id[r].generation)]
    if workload.kind is SVC:
        up = {h.name for h in fleet_hosts if h.state is HostState.READY}

        def available(i: InstanceView) -> bool:
            return i.ready and i.desired is RUN and i.host in up

        if sum(available(i) for i in mine if not workload.is_current(i.generation)) <= (
            workload.replicas
        ):
            assert not [i for i in old_removed if available(i)], plan
        ready_before = len([i for i in Fleet(fleet_hosts, mine).available()])
        after = [i for i in fleet.instances if i.workload == "web"]
        ready_after = len(Fleet(fleet_hosts, after).available())
        assert ready_after >= min(workload.replicas - workload.max_unavailable, ready_before)
    else:
        targets = set(daemon_hosts(workload, fleet_hosts))
        by_host = {h.name: h for h in fleet_hosts}
        for inst in old_removed:
            h = by_host.get(inst.host)
            assert inst.host not in targets and (
                h is None or not matches(h.labels, workload.selector) or h.drained
            ), (inst, plan)


# --- the stuck detector -------------------------------------------------------------------------

ROLLING = replace(WORKLOAD, generation=2, unconverged_since=ago(7200))
HELD = WorkloadPlan((), (), None, "rollout paused: 1 old instance held until it is resumed")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(replace(ROLLING, paused=False), Reason.ROLLOUT_BLOCKED, id="not-paused"),
        pytest.param(
            replace(ROLLING, paused=True, paused_by="alice", paused_at=ago(600)),
            None,
            id="paused-within-the-setting",
        ),
        pytest.param(
            replace(ROLLING, paused=True, paused_by="alice", paused_at=ago(3700)),
            Reason.ROLLOUT_PAUSED,
            id="paused-past-the-setting",
        ),
        pytest.param(
            replace(WORKLOAD, paused=True, paused_by="alice", paused_at=ago(3700)),
            Reason.ROLLOUT_PAUSED,
            id="paused-and-converged-past-the-setting",
        ),
    ],
)
def test_a_paused_rollout_is_never_blocked_and_is_shown_once_paused_long(
    row: WorkloadRow, expected: Reason | None
) -> None:
    """Paused is not blocked; paused past --rollout-paused-after is ROLLOUT_PAUSED."""
    verdict = judge_workload(row, HELD, [INSTANCE], set(), now=NOW, paused_after_s=3600)
    assert (verdict.reason if verdict else None) == expected
    assert verdict is None or may_be_stuck(row, now=NOW, failure=None, paused_after_s=3600)


def test_the_paused_verdict_names_who_and_since_when_and_stays_the_same() -> None:
    """The message names the actor and the time (not an age: the record is not rewritten at
    every pass), and what is held."""
    row = replace(ROLLING, paused=True, paused_by="alice", paused_at=ago(3700))
    verdict = judge_workload(row, HELD, [INSTANCE], set(), now=NOW, paused_after_s=3600)
    later = judge_workload(
        row, HELD, [INSTANCE], set(), now=NOW + (NOW - ago(60)), paused_after_s=3600
    )
    assert verdict is not None and later is not None
    assert "paused by alice since 2026-11-22T10:58:20Z" in verdict.message
    assert "1 old instance(s) held" in verdict.message
    assert "--rollout-paused-after 1h" in verdict.message
    assert verdict.message == later.message


RECORD = {
    "reason": "CRASH_LOOP",
    "message": "revision 2: 1 of its 1 instance CRASH_LOOP; web-2-1 on host-1: exit 1",
    "next_command": "keelctl rollout undo web",
}


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(replace(ROLLING, paused_at=ago(60)), id="rolling"),
        pytest.param(replace(WORKLOAD, generation=2, paused_at=ago(60)), id="converged"),
    ],
)
def test_a_failed_rollout_keel_holds_is_rollout_failed_at_once(row: WorkloadRow) -> None:
    """Held by keel/rollout a minute ago, long before --rollout-paused-after and the deadline:
    ROLLOUT_FAILED (never ROLLOUT_PAUSED), with the failure's reason and message, what the hold
    keeps and the commands to run; judged later, the same message (recorded once)."""
    held = replace(row, paused=True, paused_by="keel/rollout")
    assert may_be_stuck(held, now=NOW, failure=None, paused_after_s=3600)
    verdict = judge_workload(
        held, HELD, [INSTANCE], set(), now=NOW, paused_after_s=3600, rollout_failure=RECORD
    )
    assert verdict is not None and verdict.reason is Reason.ROLLOUT_FAILED
    assert verdict.message.startswith("rollout of revision 2 failed (CRASH_LOOP) and Keel ")
    assert RECORD["message"] in verdict.message
    assert "`keelctl rollout status web` prints the record" in verdict.message
    assert "`keelctl rollout undo web`" in verdict.message
    later = judge_workload(
        held, HELD, [INSTANCE], set(), now=NOW + (NOW - ago(7200)), rollout_failure=RECORD
    )
    assert later == verdict


def test_a_hold_over_a_revision_that_has_not_failed_is_no_rollout_failed() -> None:
    """A fixed spec applied over a held rollout: the hold lasts until the rollout controller's
    next pass lifts it, but the new revision has no failure record (the hold is written with
    the record, in one transaction): nothing says that it failed."""
    held = replace(ROLLING, paused=True, paused_by="keel/rollout", paused_at=ago(60))
    verdict = judge_workload(held, HELD, [INSTANCE], set(), now=NOW)
    assert verdict is None or verdict.reason is not Reason.ROLLOUT_FAILED


def test_an_operators_pause_says_revision_not_generation() -> None:
    """ROLLOUT_PAUSED names the revision, as every other rollout message does."""
    row = replace(ROLLING, paused=True, paused_by="alice", paused_at=ago(3700))
    verdict = judge_workload(row, HELD, [INSTANCE], set(), now=NOW, paused_after_s=3600)
    assert verdict is not None and "rollout of revision 2 paused by alice" in verdict.message
    assert "generation" not in verdict.message


def test_a_paused_workload_that_cannot_be_placed_is_still_unschedulable() -> None:
    """A pause hides only the rollout: a scale-up that fits nowhere is reported as ever."""
    row = replace(ROLLING, paused=True, paused_by="alice", paused_at=ago(60))
    plan = WorkloadPlan((), (), NO_HOST, None)
    verdict = judge_workload(row, plan, [INSTANCE], set(), now=NOW, paused_after_s=3600)
    assert verdict is not None and verdict.reason is Reason.UNSCHEDULABLE


def test_tombstones_stay_out_of_a_paused_plan() -> None:
    """Instances already removed are not live: a pause neither counts nor revives them."""
    instances = [*OLD3, inst("z", "host-1", gen=1, desired=GONE, phase=Phase.STOPPING)]
    plan = plan_for(paused(web(generation=2)), instances, H3)
    assert plan.empty


def test_a_paused_rollout_starts_no_canary_but_keeps_one_already_running() -> None:
    """A canary revision applied while paused starts nothing; a canary that ran before the
    pause stays beside the old instances."""
    paused_canary = dataclasses.replace(web(generation=2), paused=True, canary=1)
    assert not plan_for(paused_canary, OLD3, H3).create
    with_canary = [*OLD3, inst("n1", "host-1", gen=2)]
    plan = plan_for(paused_canary, with_canary, H3)
    assert not plan.create and not plan.remove
