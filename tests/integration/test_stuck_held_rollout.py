"""The stuck detector on a real Postgres, over the leader's cache: a rollout that the rollout
controller failed and holds (paused as keel/rollout) is the workload-level ROLLOUT_FAILED at
once, carrying the revision's failure record, and clears when the next revision lifts the hold."""

from __future__ import annotations

import pytest
from rollout_leader import TERM, Leader, leader_on

from controlplane.store import Store
from keel.model import Resources, Workload, WorkloadSpec


def _web(version: str) -> Workload:
    spec = WorkloadSpec(command=("sleep", "1000"), env={"V": version}, resources=Resources(10, 16))
    return Workload(name="web", replicas=3, spec=spec, deadline_ms=300_000)


@pytest.fixture
async def leader(store: Store) -> Leader:
    return await leader_on(store)


async def test_a_held_failed_rollout_is_rollout_failed_at_once_and_clears_with_the_fix(
    leader: Leader,
) -> None:
    """Revision 2 crashes without auto_rollback: Keel holds it, and the detector's next pass
    records workload/web ROLLOUT_FAILED (not ROLLOUT_PAUSED an hour later) with the failure's
    reason and message; the fix applied lifts the hold and the verdict clears."""
    await leader.store.apply_workload(_web("1"))
    await leader.workloads.reconcile("web", term=TERM)
    for i in await leader.live():
        await leader.report(i.id)
    await leader.rollouts.reconcile("web", term=TERM)
    await leader.store.apply_workload(_web("2"))
    await leader.workloads.reconcile("web", term=TERM)
    [new] = [i for i in await leader.live() if i.generation == 2]
    await leader.report(new.id, crash=True)
    await leader.rollouts.reconcile("web", term=TERM)
    row = await leader.store.get_workload("web")
    assert (row.paused, row.paused_by) == (True, "keel/rollout")
    await leader.cache.refresh(["web"])  # as the hold's NOTIFY has the cache do

    await leader.stuck.detect()
    row = await leader.store.get_workload("web")
    assert row.stuck is not None and row.stuck.reason == "ROLLOUT_FAILED"
    message = row.stuck.message
    assert message.startswith("rollout of revision 2 failed (CRASH_LOOP) and Keel holds it")
    assert f"{new.id} on {new.host}" in message  # the record's message, naming the instance
    assert "`keelctl rollout undo web`" in message
    # Judged again: the same verdict, not recorded anew.
    assert not [m for m in await _stuck_events(leader.store) if m != "StuckDetected"]
    await leader.stuck.detect()
    assert len(await _stuck_events(leader.store)) == 1

    await leader.store.apply_workload(_web("3"), reason="fix forward")
    await leader.cache.refresh(["web"])
    await leader.rollouts.reconcile("web", term=TERM)
    await leader.rollouts.reconcile("web", term=TERM)
    assert not (await leader.store.get_workload("web")).paused
    await leader.cache.refresh(["web"])
    await leader.stuck.detect()
    row = await leader.store.get_workload("web")
    assert row.stuck is None or row.stuck.reason != "ROLLOUT_FAILED"


async def _stuck_events(store: Store) -> list[str]:
    rows = await store.pool.fetch(
        "SELECT kind FROM event WHERE object = 'workload/web' AND kind LIKE 'Stuck%' ORDER BY id"
    )
    return [r["kind"] for r in rows]
