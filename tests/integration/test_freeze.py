"""The deploy freeze on a real Postgres: a spec change is refused while frozen and changes
nothing; scale changes, deletes and rollbacks go through; an override needs a reason and is
recorded; a freeze with an end lifts by itself; alert freezes are set and lifted by
fingerprint, once each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane import freeze
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.store import Store
from keel.model import Resources, Workload, WorkloadSpec


def _workload(version: str, *, replicas: int = 2, name: str = "web") -> Workload:
    spec = WorkloadSpec(command=("sleep", "1000"), env={"V": version}, resources=Resources(10, 16))
    return Workload(name=name, replicas=replicas, spec=spec)


async def _events(store: Store, kind: str) -> list[tuple[str, str, str]]:
    rows = await store.pool.fetch(
        "SELECT object, actor, message FROM event WHERE kind = $1 ORDER BY id", kind
    )
    return [(r["object"], r["actor"], r["message"]) for r in rows]


async def _snapshot(store: Store) -> tuple[object, ...]:
    row = await store.get_workload("web")
    revisions = await store.revisions("web")
    events = await store.pool.fetchval("SELECT count(*) FROM event")
    return row.generation, row.workload, row.version, len(revisions), events


async def test_a_spec_change_is_refused_while_frozen_and_changes_nothing(store: Store) -> None:
    """The refusal names the freeze, who set it, why and since when, and the way through."""
    await store.apply_workload(_workload("1"), actor="alice")
    await freeze.freeze(store.pool, reason="incident 42", until=None, actor="oncall")
    before = await _snapshot(store)
    with pytest.raises(FailedPrecondition) as refused:
        await store.apply_workload(_workload("2"), actor="bob", reason="v2")
    message = str(refused.value)
    assert "deploys are frozen" in message
    assert "operator freeze by oncall since 20" in message and '"incident 42"' in message
    assert "keelctl apply --override-freeze --reason TEXT" in message
    assert "keelctl unfreeze" in message
    assert await _snapshot(store) == before


async def test_a_new_workload_is_a_deploy_and_is_refused_while_frozen(store: Store) -> None:
    """Creating a workload deploys a new spec: refused, and no row is left behind."""
    await freeze.freeze(store.pool, reason="", until=None, actor="oncall")
    with pytest.raises(FailedPrecondition, match="no reason given"):
        await store.apply_workload(_workload("1", name="new"), actor="bob")
    assert await store.pool.fetchval("SELECT count(*) FROM workload") == 0
    assert await store.pool.fetchval("SELECT count(*) FROM workload_revision") == 0


async def test_scale_delete_and_rollbacks_go_through_while_frozen(store: Store) -> None:
    """Nothing new is deployed by a scale, a delete, an apply of an earlier spec that was
    fully ready once, roll_back to one."""
    await store.apply_workload(_workload("1"))
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await store.apply_workload(_workload("2"))
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await freeze.freeze(store.pool, reason="budget spent", until=None, actor="oncall")
    row, result = await store.apply_workload(_workload("2", replicas=5), actor="bob")
    assert (result, row.generation, row.workload.replicas) == ("configured", 2, 5)
    row, _ = await store.apply_workload(_workload("1", replicas=5), actor="bob", reason="back")
    assert row.generation == 3 and row.workload.spec.env == {"V": "1"}
    row, to = await store.roll_back("web", to_revision=2, actor="carol")
    assert (to, row.generation, row.workload.spec.env) == (2, 4, {"V": "2"})
    deleted = await store.delete_workload("web", actor="dave")
    assert deleted.deleting
    assert await _events(store, "FreezeOverridden") == []


async def test_an_override_needs_a_reason_and_is_recorded(store: Store) -> None:
    """Without a reason: INVALID_ARGUMENT naming `reason`, nothing changed; with one: applied,
    and a FreezeOverridden event names the actor, the reason and the freeze."""
    await store.apply_workload(_workload("1"))
    await freeze.freeze(store.pool, reason="incident 42", until=None, actor="oncall")
    before = await _snapshot(store)
    with pytest.raises(InvalidArgument, match=r"^reason: --override-freeze needs a reason"):
        await store.apply_workload(_workload("2"), actor="bob", override_freeze=True)
    assert await _snapshot(store) == before
    row, _ = await store.apply_workload(
        _workload("2"), actor="bob", reason="hotfix for incident 42", override_freeze=True
    )
    assert row.generation == 2
    [(obj, actor, message)] = await _events(store, "FreezeOverridden")
    assert (obj, actor) == ("workload/web", "bob")
    assert "hotfix for incident 42" in message and "incident 42" in message


async def test_an_override_when_not_frozen_records_nothing(store: Store) -> None:
    await store.apply_workload(_workload("1"))
    await store.apply_workload(_workload("2"), actor="bob", reason="x", override_freeze=True)
    assert await _events(store, "FreezeOverridden") == []


async def test_a_freeze_with_an_end_lifts_by_itself(store: Store) -> None:
    """`until` must lie ahead; once it has passed (database time) the freeze no longer holds."""
    await store.apply_workload(_workload("1"))
    past = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(InvalidArgument, match=r"^until: must be in the future"):
        await freeze.freeze(store.pool, reason="", until=past, actor="oncall")
    assert await freeze.status(store.pool) == []
    ahead = datetime.now(UTC) + timedelta(hours=2)
    [held] = await freeze.freeze(store.pool, reason="window", until=ahead, actor="oncall")
    assert held.until is not None and abs((held.until - ahead).total_seconds()) < 0.01
    with pytest.raises(FailedPrecondition, match="until 20"):
        await store.apply_workload(_workload("2"))
    # Two hours pass (the row is moved back rather than the test waiting for them).
    await store.pool.execute("UPDATE deploy_freeze SET until = now() - interval '1 second'")
    assert await freeze.status(store.pool) == []
    row, _ = await store.apply_workload(_workload("2"))
    assert row.generation == 2


async def test_freeze_twice_is_one_freeze_and_unfreeze_names_what_still_holds(
    store: Store,
) -> None:
    """A second freeze changes the reason but not since; unfreeze lifts only the operator's
    and answers the alert freezes that still hold; each change is an event with its actor."""
    [first] = await freeze.freeze(store.pool, reason="one", until=None, actor="alice")
    [second] = await freeze.freeze(store.pool, reason="two", until=None, actor="bob")
    assert (second.reason, second.actor, second.since) == ("two", "bob", first.since)
    await freeze.alerts_changed(
        store.pool,
        firing=[freeze.AlertFreeze("KeelBurn", "abc123", "KeelBurn: budget burning")],
        resolved=[],
        actor="webhook",
    )
    done = await freeze.unfreeze(store.pool, actor="carol")
    assert [(f.source, f.reason) for f in done.lifted] == [("operator", "two")]
    remaining = done.holding
    assert [(f.source, f.fingerprint) for f in remaining] == [("alert:KeelBurn", "abc123")]
    # Safe to repeat: nothing more is lifted.
    assert await freeze.unfreeze(store.pool, actor="carol") == freeze.Unfrozen([], remaining)
    frozen = await _events(store, "DeployFrozen")
    assert [(o, a) for o, a, _ in frozen] == [
        ("fleet/freeze", "alice"),
        ("fleet/freeze", "bob"),
        ("fleet/freeze", "webhook"),
    ]
    [(obj, actor, message)] = await _events(store, "DeployUnfrozen")
    assert (obj, actor) == ("fleet/freeze", "carol")
    assert "still frozen by alert:KeelBurn" in message


async def test_alert_freezes_are_set_and_lifted_by_fingerprint_once_each(store: Store) -> None:
    """A re-sent firing changes nothing; a resolve lifts exactly its own alert's freeze."""
    fast = freeze.AlertFreeze("KeelBurn", "aaa", "fast window")
    slow = freeze.AlertFreeze("KeelBurn", "bbb", "slow window")
    outcome = await freeze.alerts_changed(
        store.pool, firing=[fast, slow], resolved=[], actor="webhook"
    )
    assert (outcome.set, outcome.lifted, len(outcome.freezes)) == (2, 0, 2)
    again = await freeze.alerts_changed(store.pool, firing=[fast], resolved=[], actor="webhook")
    assert (again.set, again.lifted) == (0, 0)
    await store.apply_workload(_workload("1"), override_freeze=True, reason="needed")
    with pytest.raises(FailedPrecondition, match="an alert's freeze lifts when the alert resolves"):
        await store.apply_workload(_workload("2"))
    lifted = await freeze.alerts_changed(
        store.pool, firing=[], resolved=[("KeelBurn", "aaa")], actor="webhook"
    )
    assert (lifted.set, lifted.lifted) == (0, 1)
    assert [f.fingerprint for f in lifted.freezes] == ["bbb"]
    repeat = await freeze.alerts_changed(
        store.pool, firing=[], resolved=[("KeelBurn", "aaa")], actor="webhook"
    )
    assert repeat.lifted == 0
    await freeze.alerts_changed(store.pool, firing=[], resolved=[("KeelBurn", "bbb")], actor="x")
    row, _ = await store.apply_workload(_workload("2"))
    assert row.generation == 2
    assert len(await _events(store, "DeployFrozen")) == 2
    assert len(await _events(store, "DeployUnfrozen")) == 2


async def test_an_alerts_freeze_can_be_lifted_by_hand_and_freezes_again_if_it_fires(
    store: Store,
) -> None:
    """Its resolved notification lost: `unfreeze --alert NAME` lifts every freeze of that alert
    (not the operator's, not another alert's), recorded with its actor; a re-sent firing
    freezes again; `--all` lifts every freeze; a name that holds nothing changes nothing."""
    await freeze.freeze(store.pool, reason="ops", until=None, actor="alice")
    burn = [freeze.AlertFreeze("KeelBurn", fp, "burning") for fp in ("aaa", "bbb")]
    other = freeze.AlertFreeze("KeelSlow", "ccc", "slow")
    await freeze.alerts_changed(store.pool, firing=[*burn, other], resolved=[], actor="webhook")
    done = await freeze.unfreeze(store.pool, actor="carol", alert="KeelBurn")
    assert sorted(f.fingerprint for f in done.lifted) == ["aaa", "bbb"]
    assert sorted(f.source for f in done.holding) == ["alert:KeelSlow", "operator"]
    [(obj, actor, message)] = await _events(store, "DeployUnfrozen")
    assert (obj, actor) == ("fleet/freeze", "carol")
    assert "alert:KeelBurn freeze" in message and "freezes again" in message
    nothing = await freeze.unfreeze(store.pool, actor="carol", alert="KeelBurn")
    assert nothing.lifted == [] and len(await _events(store, "DeployUnfrozen")) == 1
    again = await freeze.alerts_changed(store.pool, firing=burn[:1], resolved=[], actor="webhook")
    assert again.set == 1
    every = await freeze.unfreeze(store.pool, actor="dave", every=True)
    assert len(every.lifted) == 3 and every.holding == []
    assert await freeze.status(store.pool) == []
    with pytest.raises(InvalidArgument, match=r"^alert: must be an alert name"):
        await freeze.unfreeze(store.pool, actor="dave", alert="Keel Burn")
    with pytest.raises(InvalidArgument, match=r"^alert: give an alert's name or all"):
        await freeze.unfreeze(store.pool, actor="dave", alert="KeelBurn", every=True)
