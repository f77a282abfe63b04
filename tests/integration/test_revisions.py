"""Revisions on a real Postgres: every spec change is kept with its actor and cause, a spec
equal to an earlier revision's is a rollback to it (its instances stay current), and
`roll_back` applies an earlier revision's spec again."""

from __future__ import annotations

import pytest
from plans import live_instance

from controlplane import freeze
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.rowviews import workload_view
from controlplane.store import Store
from keel.model import Resources, RolloutPolicy, Workload, WorkloadSpec


def _workload(version: str, *, replicas: int = 2, canary: int = 0) -> Workload:
    spec = WorkloadSpec(command=("sleep", "1000"), env={"V": version}, resources=Resources(10, 16))
    return Workload(name="web", replicas=replicas, spec=spec, rollout=RolloutPolicy(canary=canary))


async def test_each_spec_change_is_a_revision_with_its_actor_and_cause(store: Store) -> None:
    await store.apply_workload(_workload("1"), actor="alice", reason="first")
    await store.apply_workload(_workload("1", replicas=3), actor="alice", reason="scale")
    row, result = await store.apply_workload(_workload("2"), actor="bob", reason="v2")
    assert result == "configured"
    assert row.generation == 2
    assert row.spec_generations == frozenset({2})
    revisions = await store.revisions("web")
    assert [(r.number, r.actor, r.reason, r.same_as) for r in revisions] == [
        (2, "bob", "v2", None),
        (1, "alice", "first", None),  # a scale is no revision
    ]
    assert revisions[0].state == "PROGRESSING"
    assert revisions[1].state == "SUPERSEDED"  # replaced before it completed
    assert revisions[0].spec.env == {"V": "2"}


async def _completed(store: Store, revision: int) -> None:
    """The revision was fully ready once (the rollout controller writes this)."""
    await store.pool.execute(
        "UPDATE workload_revision SET completed_at = now() WHERE revision = $1", revision
    )


async def test_a_spec_equal_to_an_earlier_revision_keeps_its_instances_current(
    store: Store,
) -> None:
    await store.apply_workload(_workload("1"))
    await _completed(store, 1)
    await store.apply_workload(_workload("2"))
    row, _ = await store.apply_workload(_workload("1"), reason="back to v1")
    assert row.generation == 3
    assert row.spec_generations == frozenset({1, 3})
    assert row.is_current(1) and row.is_current(3) and not row.is_current(2)
    view = workload_view(row)
    assert view.is_current(1) and not view.is_current(2)
    newest = (await store.revisions("web"))[0]
    assert (newest.number, newest.same_as, newest.reason) == (3, 1, "back to v1")
    events = await store.pool.fetch(
        "SELECT message FROM event WHERE kind = 'WorkloadApplied' ORDER BY id DESC LIMIT 1"
    )
    assert "revision 1" in events[0]["message"]


async def test_roll_back_returns_to_the_last_complete_revision(store: Store) -> None:
    await store.apply_workload(_workload("1"))
    await store.pool.execute("UPDATE workload_revision SET completed_at = now() WHERE revision = 1")
    await store.apply_workload(_workload("2"))
    await store.apply_workload(_workload("3"))
    row, to = await store.roll_back("web", to_revision=None, actor="carol")
    assert to == 1
    assert row.generation == 4
    assert row.workload.spec.env == {"V": "1"}
    assert row.spec_generations == frozenset({1, 4})
    newest = (await store.revisions("web"))[0]
    assert (newest.actor, newest.same_as, newest.reason) == ("carol", 1, "roll back to revision 1")


async def test_a_roll_back_names_the_revision_it_returns_to(store: Store) -> None:
    """Revision 3 ran revision 1's spec again and was fully ready: undoing revision 4 returns
    to revision 3, and its `same_as` says 3 (as the undo's answer does), not 1."""
    await store.apply_workload(_workload("1"))
    await _completed(store, 1)
    await store.apply_workload(_workload("2"))
    await store.roll_back("web", to_revision=1, actor="carol")
    await _completed(store, 3)
    await store.apply_workload(_workload("4"))
    row, to = await store.roll_back("web", to_revision=None, actor="carol")
    assert (to, row.generation) == (3, 5)
    assert (await store.revisions("web"))[0].same_as == 3


async def test_roll_back_without_a_complete_revision_takes_the_one_before(store: Store) -> None:
    await store.apply_workload(_workload("1"))
    await store.apply_workload(_workload("2"))
    row, to = await store.roll_back("web", to_revision=None, actor="carol")
    assert to == 1 and row.workload.spec.env == {"V": "1"}


async def test_roll_back_refuses_what_it_cannot_do_and_changes_nothing(store: Store) -> None:
    with pytest.raises(NotFound, match="not found"):
        await store.roll_back("nope", to_revision=None, actor="a")
    await store.apply_workload(_workload("1"))
    with pytest.raises(FailedPrecondition, match="no earlier revision"):
        await store.roll_back("web", to_revision=None, actor="a")
    with pytest.raises(NotFound, match="no revision 7"):
        await store.roll_back("web", to_revision=7, actor="a")
    with pytest.raises(FailedPrecondition, match="already runs the spec of revision 1"):
        await store.roll_back("web", to_revision=1, actor="a")
    assert (await store.get_workload("web")).generation == 1
    assert len(await store.revisions("web")) == 1


async def test_a_canary_waits_only_beside_instances_of_another_revision(store: Store) -> None:
    row, _ = await store.apply_workload(_workload("1", canary=1))
    assert not row.canary_pending  # a first rollout has nothing to run beside
    await live_instance(store, "web-1-000001", 1)
    row, _ = await store.apply_workload(_workload("2", canary=1))
    assert row.canary_pending
    assert workload_view(row).canary == 1
    assert (await store.revisions("web"))[0].state == "AWAITING_PROMOTION"
    row, _ = await store.apply_workload(_workload("3", canary=1))
    assert row.canary_pending  # revision 1 was never fully ready: 3 is a new rollout
    await _completed(store, 1)
    row, _ = await store.apply_workload(_workload("1", canary=1))
    assert not row.canary_pending  # a rollback needs no canary


async def test_an_earlier_spec_that_never_got_ready_is_a_new_rollout(store: Store) -> None:
    """Revision 2 crashed (never fully ready): its spec applied again keeps its instances
    current, but is no rollback: no `same_as`, a canary if the policy asks, and a freeze
    refuses it like any new spec."""
    await store.apply_workload(_workload("1", canary=1))
    await _completed(store, 1)
    await store.apply_workload(_workload("2", canary=1))
    await store.pool.execute(
        "UPDATE workload_revision SET state = 'ROLLED_BACK' WHERE revision = 2"
    )
    await store.apply_workload(_workload("1", canary=1), reason="back")  # a rollback to 1
    await live_instance(store, "web-3-000001", 3)
    await freeze.freeze(store.pool, reason="budget spent", until=None, actor="oncall")
    with pytest.raises(FailedPrecondition, match="frozen"):
        await store.apply_workload(_workload("2", canary=1), reason="try 2 again")
    assert (await store.get_workload("web")).generation == 3
    await freeze.unfreeze(store.pool, actor="oncall")
    row, _ = await store.apply_workload(_workload("2", canary=1), reason="try 2 again")
    assert row.generation == 4 and row.spec_generations == frozenset({2, 4})
    assert row.canary_pending
    assert (await store.revisions("web"))[0].same_as is None


async def test_promote_lets_a_waiting_canary_continue_once(store: Store) -> None:
    await store.apply_workload(_workload("1", canary=1))
    with pytest.raises(FailedPrecondition, match="no canary awaiting promotion"):
        await store.promote("web", actor="a")
    await live_instance(store, "web-1-000001", 1)
    before, _ = await store.apply_workload(_workload("2", canary=1))
    with pytest.raises(FailedPrecondition):
        await store.promote("web", actor="a", revision=1)  # judged an older revision
    row = await store.promote("web", actor="dave")
    assert not row.canary_pending and row.version > before.version
    newest = (await store.revisions("web"))[0]
    assert (newest.state, newest.promoted_by) == ("PROGRESSING", "dave")
    with pytest.raises(FailedPrecondition):
        await store.promote("web", actor="dave")


async def test_a_policy_without_canaries_lets_waiting_ones_go_on(store: Store) -> None:
    await store.apply_workload(_workload("1", canary=1))
    await live_instance(store, "web-1-000001", 1)
    await store.apply_workload(_workload("2", canary=1))
    row, result = await store.apply_workload(_workload("2", canary=0), actor="erin")
    assert result == "configured" and not row.canary_pending
    newest = (await store.revisions("web"))[0]
    assert (newest.number, newest.state, newest.promoted_by) == (2, "PROGRESSING", "erin")


async def test_a_freeze_holds_a_promotion_and_the_canaries_keep_running(store: Store) -> None:
    await store.apply_workload(_workload("1", canary=1))
    await live_instance(store, "web-1-000001", 1)
    await store.apply_workload(_workload("2", canary=1))
    await store.pool.execute(
        "INSERT INTO deploy_freeze (source, reason, actor) VALUES ('operator', 'INC-9', 'ops')"
    )
    with pytest.raises(FailedPrecondition, match="deploys are frozen") as refused:
        await store.promote("web", actor="dave")
    assert "INC-9" in str(refused.value) and "rollout abort web" in str(refused.value)
    assert (await store.get_workload("web")).canary_pending
    await store.pool.execute("DELETE FROM deploy_freeze")
    assert not (await store.promote("web", actor="dave")).canary_pending


async def test_the_history_keeps_ten_revisions_and_those_still_running(store: Store) -> None:
    """Like revisionHistoryLimit: the newest ten, an older one while its instances run, and
    the newest fully ready one (undo's default target)."""
    await store.apply_workload(_workload("1"))
    await live_instance(store, "web-1-000001", 1)
    await store.apply_workload(_workload("2"))
    await store.pool.execute("UPDATE workload_revision SET completed_at = now() WHERE revision = 2")
    for version in range(3, 21):
        await store.apply_workload(_workload(str(version)))
    kept = [r.number for r in await store.revisions("web")]
    assert kept == [*range(20, 10, -1), 2, 1]
    _, to = await store.roll_back("web", to_revision=None, actor="a")
    assert to == 2
