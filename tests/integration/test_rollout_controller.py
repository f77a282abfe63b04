"""The rollout controller on a real Postgres, over the leader's cache: a revision completes, a
crashing one is rolled back (keeping the instances that run the good spec) or held, one that
makes no progress fails with PROGRESS_DEADLINE, a waiting canary is promoted; every write is
fenced by the leader's epoch and by the revision still being current."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from plans import write_plan
from rollout_leader import Leader, leader_on

from controlplane.errors import NotLeader
from controlplane.reconcile import Term
from controlplane.rollout_pause import set_paused
from controlplane.store import Store
from keel.model import Resources, RolloutPolicy, Workload, WorkloadSpec


@pytest.fixture
async def leader(store: Store) -> Leader:
    return await leader_on(store)


def _web(
    version: str, *, policy: RolloutPolicy | None = None, replicas: int = 3, min_ready_ms: int = 0
) -> Workload:
    spec = WorkloadSpec(
        command=("sleep", "1000"),
        env={"V": version},
        resources=Resources(10, 16),
        min_ready_ms=min_ready_ms,
    )
    return Workload(
        name="web", replicas=replicas, spec=spec, rollout=policy or RolloutPolicy(),
        deadline_ms=300_000,
    )  # fmt: skip


async def _good_revision_one(leader: Leader, policy: RolloutPolicy | None = None) -> list[str]:
    await leader.store.apply_workload(_web("1", policy=policy))
    await leader.plan()
    ids = sorted(i.id for i in await leader.live())
    for iid in ids:
        await leader.report(iid)
    await leader.judge()
    return ids


async def _revision_two_crashing(leader: Leader) -> None:
    """Revision 1 ready, then revision 2 (no auto_rollback): its first instance crash-loops,
    and the controller judges it."""
    await _good_revision_one(leader)
    await leader.store.apply_workload(_web("2"))
    await leader.plan()
    [new] = [i for i in await leader.live() if i.generation == 2]
    await leader.report(new.id, crash=True)
    await leader.judge()


async def _revisions(store: Store) -> dict[int, Any]:
    return {r.number: r for r in await store.revisions("web")}


async def _events(store: Store, kind: str) -> list[Any]:
    return await store.pool.fetch(
        "SELECT actor, message FROM event WHERE kind = $1 ORDER BY id", kind
    )


async def test_a_revision_completes_once_the_workload_converged_on_it(leader: Leader) -> None:
    await leader.store.apply_workload(_web("1"))
    await leader.plan()
    ids = sorted(i.id for i in await leader.live())
    for iid in ids[:2]:
        await leader.report(iid)
    await leader.judge()
    assert (await _revisions(leader.store))[1].state == "PROGRESSING"
    await leader.report(ids[2])
    await leader.judge()
    rev = (await _revisions(leader.store))[1]
    assert rev.state == "COMPLETE" and rev.completed_at is not None
    [event] = await _events(leader.store, "RolloutComplete")
    assert event["actor"] == "keel/rollout"
    assert event["message"] == "revision 1 complete: 3 instances ready"
    assert leader.rollouts.counts() == {"COMPLETE": 1}
    # Settled: judged again, nothing is read or written.
    assert (await leader.judge()).idle


async def test_a_crash_looping_revision_is_rolled_back_keeping_the_good_instances(
    leader: Leader,
) -> None:
    """Revision 2 crashes: it ends ROLLED_BACK with a CRASH_LOOP record carrying the stderr
    tail; revision 3 runs revision 1's spec, so the revision-1 instances still running stay
    current (the workload controller then removes only revision 2's)."""
    policy = RolloutPolicy(auto_rollback=True)
    good = await _good_revision_one(leader, policy)
    await leader.store.apply_workload(_web("2", policy=policy), actor="alice")
    await leader.plan()
    new = [i for i in await leader.live() if i.generation == 2]
    assert len(new) == 1
    kept = sorted(i.id for i in await leader.live() if i.generation == 1)
    assert len(kept) == 2 and set(kept) <= set(good)  # max_unavailable 1 went down
    await leader.report(new[0].id, crash=True)
    await leader.judge()

    revs = await _revisions(leader.store)
    assert revs[2].state == "ROLLED_BACK"
    failure = revs[2].failure
    assert failure is not None
    assert failure["reason"] == "CRASH_LOOP"
    assert failure["rolled_back_to"] == 1
    assert failure["runbook"] == "runbooks/rollout-failed.md"
    assert failure["next_command"] == f"keelctl logs {new[0].id} --tail 50"
    [evidence] = failure["evidence"]
    assert evidence["instance"] == new[0].id and evidence["reason"] == "CRASH_LOOP"
    assert evidence["last_exit"] == "exit 1"
    assert "boom: config.yaml not found" in evidence["message"]
    assert (revs[3].same_as, revs[3].actor) == (1, "keel/rollout")
    [event] = await _events(leader.store, "RolloutRolledBack")
    assert event["actor"] == "keel/rollout"
    assert "CRASH_LOOP" in event["message"] and "boom: config.yaml not found" in event["message"]
    assert "rolled back to revision 1 (as revision 3)" in event["message"]
    assert leader.metrics.rollouts.rollbacks.labels("CRASH_LOOP")._value.get() == 1
    assert leader.rollouts.counts() == {"ROLLED_BACK": 1}

    # The workload controller removes the crashing instance and keeps the good ones.
    await leader.plan()
    live = await leader.live()
    assert not [i for i in live if i.generation == 2]
    assert set(kept) <= {i.id for i in live}
    row = await leader.store.get_workload("web")
    assert row.generation == 3 and row.spec_generations == frozenset({1, 3})
    assert not row.paused


async def test_without_auto_rollback_a_failed_rollout_holds(leader: Leader) -> None:
    """FAILED, paused as keel/rollout (nothing more replaced); the next apply lifts the hold."""
    await _revision_two_crashing(leader)
    rev = (await _revisions(leader.store))[2]
    assert rev.state == "FAILED" and rev.failure is not None
    assert rev.failure["rolled_back_to"] == 0
    assert rev.failure["next_command"] == "keelctl rollout undo web"
    row = await leader.store.get_workload("web")
    assert (row.paused, row.paused_by, row.generation) == (True, "keel/rollout", 2)
    [event] = await _events(leader.store, "RolloutFailed")
    assert "the rollout holds" in event["message"]
    assert leader.rollouts.counts() == {"FAILED": 1}
    # Judged again: nothing more is written.
    await leader.judge()
    assert len(await _events(leader.store, "RolloutFailed")) == 1

    await leader.store.apply_workload(_web("3"), actor="bob", reason="fix forward")
    await leader.cache.refresh(["web"])  # as the apply's NOTIFY has the cache do
    lifted = await leader.judge()
    assert lifted.requeue_after_s == 0  # looked at again at once, on the row as it is now
    await leader.judge()
    row = await leader.store.get_workload("web")
    assert not row.paused and row.generation == 3
    assert len(await _events(leader.store, "RolloutResumed")) == 1
    assert leader.rollouts.counts() == {"PROGRESSING": 1}


async def test_a_resumed_failed_rollout_is_judged_again_and_fails_again(leader: Leader) -> None:
    """An operator resumes a held FAILED rollout whose instance still crashes: the revision is
    PROGRESSING (as the gauge counts it), then the controller fails and holds it again, with
    a second RolloutFailed."""
    await _revision_two_crashing(leader)
    assert (await _revisions(leader.store))[2].state == "FAILED"

    await set_paused(leader.store.pool, "web", paused=False, actor="alice", reason="retry")
    await leader.cache.refresh(["web"])  # as the resume's NOTIFY has the cache do
    assert (await _revisions(leader.store))[2].state == "PROGRESSING"
    await leader.judge()
    rev = (await _revisions(leader.store))[2]
    assert rev.state == "FAILED" and rev.failure is not None
    assert rev.failure["reason"] == "CRASH_LOOP"
    assert len(await _events(leader.store, "RolloutFailed")) == 2
    row = await leader.store.get_workload("web")
    assert (row.paused, row.paused_by) == (True, "keel/rollout")
    assert leader.rollouts.counts() == {"FAILED": 1}


async def test_auto_rollback_with_no_fully_ready_revision_holds(leader: Leader) -> None:
    policy = RolloutPolicy(auto_rollback=True)
    await leader.store.apply_workload(_web("1", policy=policy))
    await leader.plan()
    for inst in await leader.live():
        await leader.report(inst.id, crash=True)
    await leader.judge()
    rev = (await _revisions(leader.store))[1]
    assert rev.state == "FAILED"
    [event] = await _events(leader.store, "RolloutFailed")
    assert "no earlier revision was fully ready" in event["message"]
    # A first rollout has no old instance to keep: not paused (its placements go on).
    assert "it stays" in event["message"]
    assert not (await leader.store.get_workload("web")).paused


async def test_no_progress_for_the_deadline_fails_with_progress_deadline(leader: Leader) -> None:
    """New instances never ready: looked at again at the deadline, then FAILED."""
    policy = RolloutPolicy(progress_deadline_ms=300)
    await _good_revision_one(leader, policy)
    await leader.store.apply_workload(_web("2", policy=policy))
    await leader.plan()
    [new] = [i for i in await leader.live() if i.generation == 2]
    await leader.report(new.id, ready=False)
    first = await leader.judge()
    assert first.requeue_after_s is not None and 0 < first.requeue_after_s <= 0.3
    await asyncio.sleep(first.requeue_after_s + 0.05)  # the requeue the runner would wait
    await leader.judge()
    rev = (await _revisions(leader.store))[2]
    assert rev.state == "FAILED" and rev.failure is not None
    assert rev.failure["reason"] == "PROGRESS_DEADLINE"
    assert [e["instance"] for e in rev.failure["evidence"]] == [new.id]


async def test_a_canary_is_promoted_once_it_stayed_ready(leader: Leader) -> None:
    """auto_promote: the canary ready, looked at again after min_ready, then promoted."""
    policy = RolloutPolicy(canary=1, auto_promote=True)
    await _good_revision_one(leader, policy)
    row, _ = await leader.store.apply_workload(_web("2", policy=policy, min_ready_ms=300))
    assert row.canary_pending
    # The canary, as the planner places it beside the old instances.
    await write_plan(leader.store, "web", create_on=["h4"])
    await leader.cache.refresh(["web"])  # as the NOTIFY of those writes has the cache do
    [canary] = [i for i in await leader.live() if i.generation == 2]
    await leader.report(canary.id)
    first = await leader.judge()
    assert first.requeue_after_s is not None and 0 < first.requeue_after_s <= 0.3
    assert (await leader.store.get_workload("web")).canary_pending
    await asyncio.sleep(first.requeue_after_s + 0.05)  # the requeue the runner would wait
    await leader.judge()
    assert not (await leader.store.get_workload("web")).canary_pending
    rev = (await _revisions(leader.store))[2]
    assert (rev.state, rev.promoted_by) == ("PROGRESSING", "keel/rollout")


async def test_a_deposed_leader_writes_nothing(leader: Leader) -> None:
    await leader.store.apply_workload(_web("1"))
    await leader.plan()
    for inst in await leader.live():
        await leader.report(inst.id)
    epoch = await leader.store.pool.fetchval("UPDATE leader SET epoch = 7 RETURNING epoch")
    with pytest.raises(NotLeader):
        await leader.judge(term=Term(epoch=epoch - 1, started_at=0.0))
    assert (await _revisions(leader.store))[1].state == "PROGRESSING"
    await leader.judge(term=Term(epoch=epoch, started_at=0.0))
    assert (await _revisions(leader.store))[1].state == "COMPLETE"


async def test_a_new_term_starts_the_clock_again(leader: Leader) -> None:
    """A leader that leads again judges the deadline from its new term's first look, not from
    a clock kept from before (another leader may have seen progress meanwhile)."""
    policy = RolloutPolicy(progress_deadline_ms=300)
    await _good_revision_one(leader, policy)
    await leader.store.apply_workload(_web("2", policy=policy))
    await leader.plan()
    await leader.judge(term=Term(epoch=None, started_at=1.0))
    await asyncio.sleep(0.4)  # past the deadline as the first term counted it
    again = await leader.judge(term=Term(epoch=None, started_at=2.0))
    assert again.requeue_after_s is not None and again.requeue_after_s > 0.2
    assert (await _revisions(leader.store))[2].state == "PROGRESSING"


async def test_a_new_apply_meanwhile_wins(leader: Leader) -> None:
    """A failure judged on revision 2 is not written once revision 3 is current."""
    from controlplane.rollout_judge import Fail

    await _good_revision_one(leader)
    await leader.store.apply_workload(_web("2"))
    await leader.store.apply_workload(_web("3"))
    fail = Fail("CRASH_LOOP", "m", (), roll_back=True)
    assert (
        await leader.store.fail_revision("web", 2, fail, judged_in="PROGRESSING", epoch=None)
        is None
    )
    revs = await _revisions(leader.store)
    assert revs[2].state == "SUPERSEDED" and revs[2].failure is None
