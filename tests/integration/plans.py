"""Helpers the store's integration tests share: a plan written over the workload as it is now,
a live instance inserted as a plan would have placed it, a loaded cache of the fleet, and a
wait for a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from controlplane.cache import FleetCache
from controlplane.metrics import Metrics
from controlplane.store import HostRow, PlanResult, Store


async def live_instance(store: Store, id: str, generation: int, workload: str = "web") -> None:
    """A live instance of `generation` on host `h` (created if need be), as the workload
    controller would have placed it, with the workload's spec as it is now."""
    await store.pool.execute(
        """INSERT INTO host (name, cpu_millis, memory_mib) VALUES ('h', 1000, 1000)
           ON CONFLICT DO NOTHING"""
    )
    await store.pool.execute(
        """INSERT INTO instance (id, workload, generation, host, spec, cpu_millis, memory_mib,
                                 desired, revision)
           SELECT $1, name, $2, 'h', spec, 10, 16, 'RUNNING', 1 FROM workload
           WHERE name = $3""",
        id,
        generation,
        workload,
    )


async def write_plan(
    store: Store,
    workload: str,
    *,
    create_on: Sequence[str] = (),
    remove: Sequence[str] = (),
    epoch: int | None = None,
) -> PlanResult:
    """Writes a plan over the workload's current version, reading it again as long as a
    concurrent writer moves it first (as the workload controller does)."""
    for _ in range(100):
        row = await store.get_workload(workload)
        result = await store.apply_plan(row, create_on=create_on, remove=remove, epoch=epoch)
        if result.stale is None:
            return result
    raise AssertionError(f"every plan for {workload} was refused as stale")


async def loaded_cache(store: Store, *, metrics: Metrics | None = None) -> FleetCache:
    """A cache of the fleet as a new leader fills it: the full list done."""
    cache = FleetCache(store, metrics=metrics or Metrics(), resync_period_s=30.0)
    await cache.start()
    return cache


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 15.0, what: str) -> None:
    """Waits for an async condition, polling, up to a deadline (never a bare sleep)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:g}s: {what}")
        await asyncio.sleep(0.02)


async def all_hosts(store: Store) -> list[HostRow]:
    """Every host, as an operator's get of each would show it."""
    names = [r["name"] for r in await store.pool.fetch("SELECT name FROM host ORDER BY name")]
    return await store.get_hosts(names)
