"""Instance ids and large scale-ups on a real Postgres: ids unique by construction, a failed
plan never blocks its workload, and a 10,000-replica scale-up is placed in bounded passes."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import asyncpg
import pytest
from plans import loaded_cache, write_plan

from controlplane import migrate
from controlplane.errors import Conflict
from controlplane.instance_store import instance_id
from controlplane.metrics import Metrics
from controlplane.reconcile import Term
from controlplane.rollout import MAX_CHANGES_PER_PASS
from controlplane.status import StatusStore
from controlplane.store import Store
from controlplane.workload import WorkloadController
from keel.model import Resources, Workload, WorkloadSpec

# What status.list_events matches a workload's instances by.
INSTANCE_OF_WEB = re.compile(r"^web-[0-9]+-[0-9a-f]+$")


def _workload(name: str = "web", *, replicas: int = 3) -> Workload:
    # No resources: hosts never fill up, so only the ids and the pass bound are under test.
    return Workload(name=name, replicas=replicas, spec=WorkloadSpec(command=("sleep", "1000")))


async def _hosts(store: Store, n: int) -> list[str]:
    names = [f"h{i}" for i in range(1, n + 1)]
    for name in names:
        await store.register_host(
            name, labels={}, capacity=Resources(1_000_000, 1_000_000), agent_version="test"
        )
    return names


def test_instance_ids_are_short_hex_and_match_the_events_pattern() -> None:
    """WORKLOAD-GENERATION-NUMBER in hex, six digits at least, longer only when it must be."""
    assert instance_id("web", 1, 1) == "web-1-000001"
    assert instance_id("web", 12, 0xABCDEF) == "web-12-abcdef"
    assert instance_id("web", 2, 0x1234567) == "web-2-1234567"
    assert all(INSTANCE_OF_WEB.match(instance_id("web", g, n)) for g, n in [(1, 1), (9, 2**40)])
    assert not INSTANCE_OF_WEB.match(instance_id("web-1", 2, 3))  # another workload's


async def test_ids_from_concurrent_plans_never_collide(store: Store) -> None:
    """Many plans writing at once, across workloads, get distinct ids every time."""
    hosts = await _hosts(store, 2)
    rows = [(await store.apply_workload(_workload(f"w{n}")))[0] for n in range(4)]

    async def writer(n: int) -> list[str]:
        created: list[str] = []
        for _ in range(10):
            plan = await write_plan(store, rows[n % 4].workload.name, create_on=hosts * 50)
            created += plan.created
        return created

    ids = [i for batch in await asyncio.gather(*(writer(n) for n in range(8))) for i in batch]
    assert len(ids) == 8 * 10 * 100
    assert len(set(ids)) == len(ids)
    assert len(await store.list_instances()) == len(ids)


async def test_a_failed_plan_does_not_block_its_workload(store: Store) -> None:
    """If a plan's insert fails, the retry uses fresh ids: the sequence never gives one twice."""
    [host] = await _hosts(store, 1)
    await store.apply_workload(_workload())
    # Squat on the id the next plan would take (as a restore from an old backup might).
    upcoming = await store.pool.fetchval("SELECT last_value + 1 FROM instance_number")
    squatter = instance_id("web", 1, upcoming)
    await store.pool.execute(
        """INSERT INTO instance (id, workload, generation, host, spec, cpu_millis, memory_mib,
                                 desired, revision)
           VALUES ($1, 'web', 1, $2, '{"command": ["x"]}', 0, 0, 'RUNNING', 0)""",
        squatter,
        host,
    )
    with pytest.raises(Conflict):
        await write_plan(store, "web", create_on=[host, host])
    retried = await write_plan(store, "web", create_on=[host, host])
    assert len(retried.created) == 2 and squatter not in retried.created
    assert len(await store.list_instances()) == 3


async def test_upgrade_numbers_new_ids_past_every_random_suffix(fresh_database: str) -> None:
    """Migrating a database with random-suffix ids starts the sequence past all of them."""
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate.migrate(conn, to=2)
        await conn.execute(
            """INSERT INTO host (name) VALUES ('h1');
               INSERT INTO workload (name, kind, replicas, max_unavailable, max_surge,
                                     deadline_ms, spec)
               VALUES ('web', 'service', 2, 1, 1, 60000, '{"command": ["x"]}');
               INSERT INTO instance (id, workload, generation, host, spec, cpu_millis,
                                     memory_mib, desired, revision)
               VALUES ('web-1-00c0de', 'web', 1, 'h1', '{}', 0, 0, 'RUNNING', 0),
                      ('web-3-fa11ed', 'web', 1, 'h1', '{}', 0, 0, 'RUNNING', 0)"""
        )
        await migrate.migrate(conn)
        assert await conn.fetchval("SELECT nextval('instance_number')") == 0xFA11ED + 1
    finally:
        await conn.close()


async def test_10000_replica_scale_up_is_placed_in_bounded_passes(store: Store) -> None:
    """replicas: 10000 is placed in full, at most MAX_CHANGES_PER_PASS per transaction, spread."""
    hosts = await _hosts(store, 4)
    await store.apply_workload(_workload("big", replicas=10))
    controller = WorkloadController(store, cache=await loaded_cache(store), metrics=Metrics())
    passes = await _drain(controller, "big")
    assert (passes, len(await store.list_instances())) == (1, 10)

    await store.apply_workload(_workload("big", replicas=10_000))
    passes = await _drain(controller, "big")
    instances = await store.list_instances()
    assert len(instances) == 10_000
    assert len({i.id for i in instances}) == 10_000
    assert Counter(i.host for i in instances) == {h: 2500 for h in hosts}
    # Each pass wrote at most the bound, and the controller came back for the rest by itself.
    assert passes == -(-9_990 // MAX_CHANGES_PER_PASS)
    # Every one is a desired change waiting for its agent.
    assert (await StatusStore(store.pool).backlog()).instances == 10_000


async def _drain(controller: WorkloadController, key: str) -> int:
    """Passes over the key for as long as a pass asks to come back at once (as the runner
    would requeue it); returns the passes."""
    term = Term(epoch=None, started_at=time.monotonic())
    passes = 0
    while True:
        result = await controller.reconcile(key, term=term)
        passes += 1
        assert passes < 100, "the scale-up did not finish"
        if result.requeue_after_s != 0:
            return passes
