"""Retention on a real Postgres: what is older than the retention goes, in bounded batches, and
what is recent, still running or not yet confirmed stopped stays."""

from __future__ import annotations

import pytest
from plans import write_plan

from controlplane.errors import NotLeader
from controlplane.growth_metrics import EVENT, OPERATION, TOMBSTONE
from controlplane.metrics import Metrics
from controlplane.operations import DrainParams
from controlplane.reconcile import Term
from controlplane.retention import Retention, RetentionController
from controlplane.retention_store import RetentionStore
from controlplane.status import StatusStore
from controlplane.store import Report, Store
from keel.model import Phase, Resources, Workload, WorkloadSpec

DAY_S = 24 * 3600.0
OLD = "now() - interval '8 days'"


def _controller(store: Store, metrics: Metrics, *, batch: int = 1000) -> RetentionController:
    return RetentionController(
        RetentionStore(store.pool),
        now=store.now,
        settings=Retention(
            retention_s=7 * DAY_S, interval_s=600.0, batch=batch, gone_after_s=DAY_S
        ),
        metrics=metrics.growth,
    )


def _pruned(metrics: Metrics, table: str) -> float:
    value = metrics.registry.get_sample_value("keel_pruned_rows_total", {"table": table})
    return value or 0.0


async def _stopped(store: Store, *ids: str) -> None:
    """The agent of h1 reports these instances STOPPED (without confirming their removal)."""
    reports = [
        Report("h1", i, Phase.STOPPED, 0, 0, "", "", "", {}, False, False, None) for i in ids
    ]
    await StatusStore(store.pool).write_reports(reports)


async def _fleet(store: Store) -> list[str]:
    """Host h1 with four instances of `web`; returns their ids."""
    await store.register_host("h1", labels={}, capacity=Resources(4000, 8192), agent_version="t")
    spec = WorkloadSpec(command=("sleep", "1000"), resources=Resources(100, 64))
    await store.apply_workload(Workload(name="web", replicas=4, spec=spec))
    await write_plan(store, "web", create_on=["h1"] * 4)
    return [r["id"] for r in await store.pool.fetch("SELECT id FROM instance ORDER BY id")]


async def test_old_events_go_and_new_ones_stay(store: Store) -> None:
    """Events older than the retention are deleted; the others are kept, and counted."""
    await store.pool.execute(
        f"INSERT INTO event (at, object, kind) SELECT {OLD}, 'host/h' || g, 'Old' "
        "FROM generate_series(1, 25) g"
    )
    await store.pool.execute("INSERT INTO event (object, kind) VALUES ('host/h1', 'New')")
    metrics = Metrics()
    await _controller(store, metrics, batch=10).reconcile("prune", term=Term(None, 0.0))
    kinds = [r["kind"] for r in await store.pool.fetch("SELECT kind FROM event")]
    assert kinds == ["New"]
    assert _pruned(metrics, EVENT) == 25


async def test_one_batch_deletes_no_more_than_the_batch(store: Store) -> None:
    """A batch is bounded: the rest waits for the next batch of the same pass."""
    await store.pool.execute(
        f"INSERT INTO event (at, object, kind) SELECT {OLD}, 'host/h', 'Old' "
        "FROM generate_series(1, 25) g"
    )
    before = await store.now()
    deleted = await RetentionStore(store.pool).prune_batch(
        EVENT, before=before, batch=10, epoch=None
    )
    assert deleted == 10
    assert await store.pool.fetchval("SELECT count(*) FROM event") == 15


async def test_ended_operations_go_once_old_and_a_running_one_stays(store: Store) -> None:
    """An operation that ended long ago is deleted; one that ended lately, and one still
    running however old, are kept."""
    for name in ("h1", "h2", "h3"):
        await store.register_host(name, labels={}, capacity=Resources(1, 1), agent_version="t")
    ops = []
    for host in ("h1", "h2", "h3"):
        op, _ = await store.begin_drain([host], {}, params=DrainParams(), reason="", actor="a")
        ops.append(op.id)
    old_done, new_done, running = ops
    await store.pool.execute(
        f"UPDATE operation SET state = 'SUCCEEDED', finished_at = {OLD} WHERE id = $1", old_done
    )
    await store.pool.execute(
        "UPDATE operation SET state = 'FAILED', finished_at = now() WHERE id = $1", new_done
    )
    await store.pool.execute(
        f"UPDATE operation SET state = 'RUNNING', created_at = {OLD}, started_at = {OLD} "
        "WHERE id = $1",
        running,
    )
    metrics = Metrics()
    await _controller(store, metrics).reconcile("prune", term=Term(None, 0.0))
    left = {r["id"] for r in await store.pool.fetch("SELECT id FROM operation")}
    assert left == {new_done, running}
    assert _pruned(metrics, OPERATION) == 1


async def test_only_old_tombstones_the_agent_saw_stopped_go(store: Store) -> None:
    """A tombstone the agent reported STOPPED after its removal, past the retention, is
    deleted; an unconfirmed one (still running, or stopped only before it was removed), a
    recent one and a live instance are kept."""
    confirmed, running, stopped_before, recent = await _fleet(store)
    await _stopped(store, stopped_before)
    await write_plan(store, "web", remove=[confirmed, running, stopped_before, recent])
    await _stopped(store, confirmed, recent)
    await store.pool.execute(
        f"""UPDATE instance SET desired_changed_at = {OLD},
                  observed_at = CASE WHEN id = $2 THEN now() ELSE observed_at END
            WHERE id = ANY($1::text[])""",
        [confirmed, running, stopped_before],
        confirmed,
    )
    # Reported stopped 8 days and an hour ago: before its removal became desired.
    await store.pool.execute(
        f"UPDATE instance SET observed_at = {OLD} - interval '1 hour' WHERE id = $1",
        stopped_before,
    )
    await store.pool.execute("UPDATE instance SET phase = 'RUNNING' WHERE id = $1", running)
    version = await store.pool.fetchval("SELECT version FROM workload WHERE name = 'web'")
    metrics = Metrics()
    await _controller(store, metrics).reconcile("prune", term=Term(None, 0.0))
    left = {r["id"] for r in await store.pool.fetch("SELECT id FROM instance")}
    assert left == {running, stopped_before, recent}
    assert _pruned(metrics, TOMBSTONE) == 1
    # The leader's cache learns of it: the workload took a new version.
    assert await store.pool.fetchval("SELECT version FROM workload WHERE name = 'web'") > version


async def test_a_deposed_leader_prunes_nothing(store: Store) -> None:
    """Every batch is fenced by the leader epoch."""
    await store.pool.execute(f"INSERT INTO event (at, object, kind) VALUES ({OLD}, 'h', 'Old')")
    await store.pool.execute("UPDATE leader SET epoch = 5")
    with pytest.raises(NotLeader):
        await _controller(store, Metrics()).reconcile("prune", term=Term(4, 0.0))
    assert await store.pool.fetchval("SELECT count(*) FROM event") == 1
