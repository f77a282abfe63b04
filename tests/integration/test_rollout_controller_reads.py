"""What the rollout controller reads while a rollout is under way, on a real Postgres: the
current revision's row is kept between passes and read again only when the workload's
generation or desired version moves, after a write of its own, at a resync and in a new term;
database time is read once, not on every pass. And what that must never cost: a revision
written meanwhile by an RPC on another replica, by another leader, or by the controller itself
is seen at the next pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from plans import loaded_cache, write_plan
from rollout_leader import Leader
from test_rollout_controller import _events, _good_revision_one, _revisions, _web

from controlplane.reconcile import Term
from controlplane.rollout_pause import set_paused
from controlplane.store import Store, create_pool
from keel.model import Resources, RolloutPolicy


class Reads:
    """Counts the controller's workload-version, revision and database-time reads (the store
    is real)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.versions = 0
        self.revisions = 0
        self.clock = 0
        version, revision, now = store.workload_version, store.current_revision, store.now

        async def counted_version(*args: Any) -> Any:
            self.versions += 1
            return await version(*args)

        async def counted_revision(*args: Any) -> Any:
            self.revisions += 1
            return await revision(*args)

        async def counted_now() -> Any:
            self.clock += 1
            return await now()

        monkeypatch.setattr(store, "workload_version", counted_version)
        monkeypatch.setattr(store, "current_revision", counted_revision)
        monkeypatch.setattr(store, "now", counted_now)


async def _leader(store: Store) -> Leader:
    for h in ("h1", "h2", "h3", "h4"):
        await store.register_host(h, labels={}, capacity=Resources(4000, 8192), agent_version="t")
    return Leader(store, await loaded_cache(store))


@pytest.fixture
async def leader(store: Store) -> Leader:
    return await _leader(store)


@pytest.fixture
async def other_replica(migrated_database: str) -> AsyncIterator[Store]:
    """Another control plane replica: its own pool on the same database, no cache."""
    pool = await create_pool(migrated_database, min_size=1, max_size=2)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def test_a_rollout_under_way_reads_its_revision_again_only_when_the_workload_moves(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passes that only wait read nothing but the revision, once: reports (a new version, the
    same desired version) and timed passes cost no query; a plan written (a new desired
    version) one revision read; the pass that completes the revision checks the workload's
    version first."""
    reads = Reads(store, monkeypatch)  # before the controller takes `store.now` as its clock
    leader = await _leader(store)
    await store.apply_workload(_web("1"))
    await leader.plan()
    ids = sorted(i.id for i in await leader.live())
    await leader.report(ids[0])
    versions = reads.versions  # the workload controller's
    await leader.judge()
    assert (reads.versions - versions, reads.revisions, reads.clock) == (0, 1, 1)
    await leader.judge()
    await leader.report(ids[1])
    await leader.judge()
    assert (reads.versions - versions, reads.revisions, reads.clock) == (0, 1, 1)
    await store.apply_workload(_web("1", replicas=4))  # a scale-up: a new desired version
    await leader.plan()
    versions = reads.versions
    await leader.judge()
    assert (reads.versions - versions, reads.revisions, reads.clock) == (0, 2, 1)
    # The resync reads both again.
    await leader.rollouts.keys()
    await leader.judge()
    assert (reads.versions - versions, reads.revisions, reads.clock) == (0, 3, 2)
    assert (await _revisions(store))[1].state == "PROGRESSING"

    await leader.plan()
    for iid in sorted(i.id for i in await leader.live()):
        await leader.report(iid)
    versions = reads.versions
    await leader.judge()
    assert reads.versions - versions == 1  # confirmed against the database before it writes
    assert (await _revisions(store))[1].state == "COMPLETE"


async def test_a_pass_that_would_write_is_judged_again_on_the_database_s_workload(
    leader: Leader, other_replica: Store
) -> None:
    """The cache has not yet read a pause made through another replica when the canary's
    min_ready passes: auto_promote judges again on the workload as it is and does not
    promote."""
    policy = RolloutPolicy(canary=1, auto_promote=True)
    await _good_revision_one(leader, policy)
    await leader.store.apply_workload(_web("2", policy=policy, min_ready_ms=300))
    await write_plan(leader.store, "web", create_on=["h4"])
    await leader.cache.refresh(["web"])  # as the NOTIFY of those writes has the cache do
    [canary] = [i for i in await leader.live() if i.generation == 2]
    await leader.report(canary.id)
    first = await leader.judge()
    assert first.requeue_after_s is not None

    await set_paused(other_replica.pool, "web", paused=True, actor="alice")
    await asyncio.sleep(first.requeue_after_s + 0.05)  # the requeue the runner would wait
    await leader.judge()
    assert (await leader.store.get_workload("web")).canary_pending
    assert not await _events(leader.store, "RolloutPromoted")
    assert leader.cache.index.workload("web").row.paused  # type: ignore[union-attr]


async def test_a_promotion_through_another_replica_is_seen_at_the_next_pass(
    leader: Leader, other_replica: Store
) -> None:
    """The revision the controller kept as AWAITING_PROMOTION is promoted through another
    replica (same generation, a new desired version): the next pass judges it PROGRESSING."""
    policy = RolloutPolicy(canary=1)
    await _good_revision_one(leader, policy)
    await leader.store.apply_workload(_web("2", policy=policy))
    await write_plan(leader.store, "web", create_on=["h4"])
    await leader.cache.refresh(["web"])  # as the NOTIFY of those writes has the cache do
    [canary] = [i for i in await leader.live() if i.generation == 2]
    await leader.report(canary.id)
    await leader.judge()
    assert leader.rollouts.counts() == {"AWAITING_PROMOTION": 1}

    await other_replica.promote("web", actor="alice")
    await leader.cache.refresh(["web"])  # as the promotion's NOTIFY has the cache do
    await leader.judge()
    assert leader.rollouts.counts() == {"PROGRESSING": 1}


async def test_an_undo_through_another_replica_is_seen_at_the_next_pass(
    leader: Leader, other_replica: Store
) -> None:
    """A new generation written elsewhere: revision 3 (revision 1's spec) is judged, not the
    revision 2 kept from before, so revision 2's crashing instance fails nothing."""
    await _good_revision_one(leader)
    await leader.store.apply_workload(_web("2"))
    await leader.plan()
    [new] = [i for i in await leader.live() if i.generation == 2]
    await leader.judge()
    assert leader.rollouts.counts() == {"PROGRESSING": 1}

    await other_replica.roll_back("web", to_revision=None, actor="alice")
    await leader.cache.refresh(["web"])  # as the undo's NOTIFY has the cache do
    await leader.report(new.id, crash=True)
    await leader.judge()
    revs = await _revisions(leader.store)
    assert (revs[3].same_as, revs[3].state) == (1, "PROGRESSING")
    assert revs[2].state == "SUPERSEDED" and revs[2].failure is None
    assert not await _events(leader.store, "RolloutFailed")


async def test_a_revision_another_leader_completed_is_seen_in_a_new_term(
    leader: Leader, store: Store
) -> None:
    """Leader A keeps revision 1 as PROGRESSING; leader B completes it (a write that moves no
    version of the workload's); A, leading again, sees it COMPLETE and writes nothing."""
    await store.apply_workload(_web("1"))
    await leader.plan()
    ids = sorted(i.id for i in await leader.live())
    await leader.report(ids[0])
    await leader.judge(term=Term(epoch=None, started_at=1.0))
    assert leader.rollouts.counts() == {"PROGRESSING": 1}

    b = Leader(store, await loaded_cache(store))
    for iid in ids[1:]:
        await b.report(iid)
    await b.judge(term=Term(epoch=None, started_at=2.0))
    assert (await _revisions(store))[1].state == "COMPLETE"

    await leader.cache.refresh(["web"])  # the reports' NOTIFY, as the cache reads them
    await leader.judge(term=Term(epoch=None, started_at=3.0))
    assert leader.rollouts.counts() == {"COMPLETE": 1}
    assert len(await _events(store, "RolloutComplete")) == 1


async def test_a_failure_the_controller_wrote_without_moving_the_workload_is_seen(
    leader: Leader,
) -> None:
    """Paused by an operator, a crashing revision fails without Keel's hold (no write to the
    workload row): the revision kept as PROGRESSING is dropped with the controller's own write,
    so the next pass counts it FAILED and writes nothing more."""
    await _good_revision_one(leader)
    await leader.store.apply_workload(_web("2"))
    await leader.plan()
    [new] = [i for i in await leader.live() if i.generation == 2]
    await set_paused(leader.store.pool, "web", paused=True, actor="alice")
    await leader.cache.refresh(["web"])  # as the pause's NOTIFY has the cache do
    await leader.judge()
    assert leader.rollouts.counts() == {"PAUSED": 1}
    version = (await leader.store.get_workload("web")).desired_version

    await leader.report(new.id, crash=True)
    await leader.judge()
    row = await leader.store.get_workload("web")
    assert (row.paused_by, row.desired_version) == ("alice", version)
    assert (await _revisions(leader.store))[2].state == "FAILED"
    await leader.judge()
    assert leader.rollouts.counts() == {"FAILED": 1}
    assert len(await _events(leader.store, "RolloutFailed")) == 1
