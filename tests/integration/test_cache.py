"""The leader's cache on a real Postgres: list-then-watch sees every change concurrent writers
make, the resync repairs a lost notification, and a plan made from a stale read is refused and
made again, so the cache never makes the controller act on old state."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

from plans import loaded_cache, until, write_plan

from controlplane.cache import FleetCache
from controlplane.listener import Listener
from controlplane.liveness import Transition
from controlplane.metrics import Metrics
from controlplane.reconcile import Term
from controlplane.scheduler import usage_of
from controlplane.status import StatusStore
from controlplane.store import PlanResult, Report, Store
from controlplane.workload import WorkloadController
from keel.model import Desired, HostState, Kind, Phase, Resources, Workload, WorkloadSpec

TERM = Term(epoch=None, started_at=0.0)


def _workload(name: str = "web", *, replicas: int = 3, env: dict[str, str] | None = None,
              max_unavailable: int = 1, cpu: int = 100) -> Workload:  # fmt: skip
    spec = WorkloadSpec(command=("sleep", "1000"), env=env or {}, resources=Resources(cpu, 64))
    return Workload(name=name, replicas=replicas, max_unavailable=max_unavailable, spec=spec)


async def _hosts(store: Store, *names: str, cpu: int = 4000) -> None:
    for name in names:
        await store.register_host(
            name, labels={}, capacity=Resources(cpu, 8192), agent_version="test"
        )


def _report(host: str, iid: str, phase: Phase, *, ready: bool, removed: bool = False) -> Report:
    return Report(host, iid, phase, 7, 0, "", "", "", {}, ready, removed, None)


def _stale_writes(metrics: Metrics, controller: str = "workload") -> float:
    value = metrics.registry.get_sample_value(
        "keel_cache_stale_writes_total", {"controller": controller}
    )
    return value or 0.0


def _resyncs(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("keel_cache_resyncs_total") or 0.0


@contextlib.asynccontextmanager
async def _watching(
    store: Store,
    url: str,
    *,
    metrics: Metrics,
    resync_period_s: float = 300.0,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[FleetCache]:
    """A cache as the leader runs it: listed, kept current by a real LISTEN connection."""
    kwargs = {} if clock is None else {"clock": clock}
    cache = FleetCache(store, metrics=metrics, resync_period_s=resync_period_s, **kwargs)
    await cache.start()
    listening = asyncio.Event()
    # The listener is up once a notification sent now comes back through it.
    probe = "probe-listening"

    def seen(payload: str) -> None:
        if payload == probe:
            listening.set()
        else:
            cache.notified(payload)

    listener = Listener(
        url, on_host=lambda _h: None, on_workload=seen, on_reconnect=cache.resync_now
    )
    tasks = [asyncio.create_task(listener.run()), asyncio.create_task(cache.run())]
    try:
        async with asyncio.timeout(10):
            while not listening.is_set():
                await store.pool.execute("SELECT pg_notify('keel_workload', $1)", probe)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await listening.wait()
        yield cache
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cache.stop()


@contextlib.asynccontextmanager
async def _keeping_current(cache: FleetCache) -> AsyncIterator[None]:
    """The cache's loop running (re-reads of what it marked), without notifications."""
    task = asyncio.create_task(cache.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _matches_the_database(store: Store, cache: FleetCache) -> bool:
    """What the cache holds equals a fresh read of everything, usage included."""
    fresh = {r.view.name: r for r in await store.read_workloads()}
    index = cache.index
    held = {e.view.name: e for e in index.workloads()}
    if set(fresh) != set(held):
        return False
    for name, r in fresh.items():
        entry = held[name]
        if entry.version != r.row.version or entry.row != r.row:
            return False
        if dict(entry.instances) != {i.id: i for i in r.instances}:
            return False
    views = [i.view for r in fresh.values() for i in r.instances]
    # Host revisions aside: other writers' plans move them unannounced, and a plan on a host
    # whose revision moved is refused and the host read again (the tests below).
    hosts = {h.name: dataclasses.replace(h, revision=0) for h in await store.read_hosts()}
    held_hosts = {h.name: dataclasses.replace(h, revision=0) for h in index.host_records()}
    return dict(index.usage) == usage_of(views) and held_hosts == hosts


async def test_list_then_watch_sees_every_change_of_concurrent_writers(
    store: Store, migrated_database: str
) -> None:
    """Applies, plans, report batches, liveness and fencing from other writers, all at once:
    once they stop, the cache equals the database without a full resync."""
    await _hosts(store, "h1", "h2", "h3")
    for n in range(4):
        await store.apply_workload(_workload(f"w{n}"))
    metrics = Metrics()
    status = StatusStore(store.pool)
    async with _watching(store, migrated_database, metrics=metrics) as cache:

        async def operator(n: int) -> None:
            for replicas in range(2, 6):
                await store.apply_workload(_workload(f"w{n}", replicas=replicas))

        async def planner_and_agents(n: int) -> None:
            name = f"w{n}"
            for i in range(6):
                plan = await write_plan(store, name, create_on=[f"h{i % 3 + 1}"])
                [iid] = plan.created
                host = f"h{i % 3 + 1}"
                await status.write_reports([_report(host, iid, Phase.STARTING, ready=False)])
                await status.write_reports([_report(host, iid, Phase.RUNNING, ready=True)])
                if i % 2:
                    await write_plan(store, name, remove=[iid])
                    await status.write_reports(
                        [_report(host, iid, Phase.STOPPED, ready=False, removed=True)]
                    )

        async def liveness() -> None:
            # h3 goes silent: NOT_READY, then its service instances are fenced.
            await store.pool.execute(
                "UPDATE host SET last_heartbeat = now() - interval '1 hour' WHERE name = 'h3'"
            )
            [facts] = [h for h in await store.read_hosts(["h3"])]
            now = await store.now()
            was = Transition("h3", HostState.READY, HostState.NOT_READY, now, facts.last_heartbeat)
            assert await store.record_liveness([was], epoch=None) == [was]
            await store.fence_host("h3", [Kind.SERVICE], epoch=None)

        await asyncio.gather(
            *(operator(n) for n in range(4)),
            *(planner_and_agents(n) for n in range(4)),
            liveness(),
        )
        await until(
            lambda: _matches_the_database(store, cache),
            what="the cache to hold what the database holds",
        )
        assert _resyncs(metrics) == 1  # the list at the start only: notifications did the rest
        assert cache.index.host("h3").state is HostState.NOT_READY  # type: ignore[union-attr]


async def test_a_lost_notification_is_repaired_by_the_periodic_resync(
    store: Store, migrated_database: str
) -> None:
    """A change whose NOTIFY never came stays unseen until the resync period passes; then the
    resync finds its workload's version moved and reads it."""
    await _hosts(store, "h1")
    await store.apply_workload(_workload("quiet"))
    await store.apply_workload(_workload("loud"))
    [iid] = (await write_plan(store, "quiet", create_on=["h1"])).created
    now = [0.0]
    metrics = Metrics()
    async with _watching(
        store, migrated_database, metrics=metrics, resync_period_s=30.0, clock=lambda: now[0]
    ) as cache:
        # The agent's report as written by a replica whose NOTIFY was lost: version and row
        # change together, nobody is told.
        async with store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE instance SET phase = 'RUNNING', ready = true, observed_at = now() "
                "WHERE id = $1",
                iid,
            )
            await conn.execute(
                "UPDATE workload SET version = nextval('workload_version') WHERE name = 'quiet'"
            )
        # A notified change after it is seen, so the cache has looked since: still stale.
        await store.apply_workload(_workload("loud", replicas=5))

        async def loud_seen() -> bool:
            entry = cache.index.workload("loud")
            return entry is not None and entry.row.workload.replicas == 5

        await until(loud_seen, what="the notified change")
        quiet = cache.index.workload("quiet")
        assert quiet is not None and quiet.instances[iid].phase is Phase.PENDING
        assert _resyncs(metrics) == 1

        now[0] += 31.0  # the resync period passes
        await store.apply_workload(_workload("loud", replicas=6))  # anything that wakes it
        await until(
            lambda: _matches_the_database(store, cache), what="the resync to repair the cache"
        )
        assert _resyncs(metrics) == 2
        quiet = cache.index.workload("quiet")
        assert quiet is not None and quiet.instances[iid].view.ready


async def test_a_plan_on_a_host_that_changed_behind_the_cache_is_refused_and_made_again(
    store: Store,
) -> None:
    """The cache still thinks h2 READY (its notification was never read): the plan placing on
    it is refused, h2 is read again, and the new plan places on h1 only."""
    await _hosts(store, "h1", "h2")
    metrics = Metrics()
    cache = await loaded_cache(store, metrics=metrics)
    controller = WorkloadController(store, cache=cache, metrics=metrics)
    await store.pool.execute("UPDATE host SET state = 'NOT_READY' WHERE name = 'h2'")
    await store.apply_workload(_workload(replicas=2))
    await controller.reconcile("web", term=TERM)
    assert sorted(i.host for i in await store.list_instances()) == ["h1", "h1"]
    assert _stale_writes(metrics) == 1
    assert cache.index.host("h2").state is HostState.NOT_READY  # type: ignore[union-attr]


async def test_a_plan_on_a_host_filled_behind_the_cache_is_refused_and_made_again(
    store: Store,
) -> None:
    """Another writer filled h1 after the cache read it (its revision moved): placing there
    would overcommit it, so the plan is refused, what h1 holds is read again, and the new plan
    places on h3."""
    await _hosts(store, "h1", "h2", "h3", cpu=1000)
    await store.apply_workload(_workload("big", replicas=1, cpu=900))
    await store.apply_workload(_workload("web", replicas=1, cpu=200))
    await write_plan(store, "big", create_on=["h2"])
    metrics = Metrics()
    cache = await loaded_cache(store, metrics=metrics)  # h1 and h3 empty, h2 holds 900m
    controller = WorkloadController(store, cache=cache, metrics=metrics)
    await store.apply_workload(_workload("filler", replicas=1, cpu=900))
    await write_plan(store, "filler", create_on=["h1"])  # behind the cache's back
    # "web" is read afresh (its version is checked), but h1 looks empty in the cache and
    # comes first by name.
    await controller.reconcile("web", term=TERM)
    placed = {i.workload: i.host for i in await store.list_instances()}
    assert placed == {"big": "h2", "filler": "h1", "web": "h3"}
    assert _stale_writes(metrics) == 1


class _Racing(Store):
    """A store whose next plan write is preceded by another writer's commit: the moment
    between a controller's read and its write, made to happen."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.pool)
        self.before_write: list[Callable[[], object]] = []

    async def apply_plan(self, *args: object, **kwargs: object) -> PlanResult:  # type: ignore[override]
        while self.before_write:
            step = self.before_write.pop(0)
            result = step()
            if asyncio.iscoroutine(result):
                await result
        return await super().apply_plan(*args, **kwargs)  # type: ignore[arg-type]


async def test_a_report_between_read_and_write_refuses_the_plan_and_the_budget_holds(
    store: Store,
) -> None:
    """Rolling out with max_unavailable 1: the plan takes down one available old instance; an
    agent reports another one unready before the plan commits. The write is refused (its read
    is stale), the workload is read again, and the new plan removes the unready one instead,
    so no more than one instance is ever down."""
    await _hosts(store, "h1", "h2", "h3")
    await store.apply_workload(_workload(replicas=3))
    status = StatusStore(store.pool)
    ids = []
    for h in ("h1", "h2", "h3"):
        [iid] = (await write_plan(store, "web", create_on=[h])).created
        await status.write_reports([_report(h, iid, Phase.RUNNING, ready=True)])
        ids.append(iid)
    metrics = Metrics()
    racing = _Racing(store)
    cache = await loaded_cache(racing, metrics=metrics)
    controller = WorkloadController(racing, cache=cache, metrics=metrics)
    await store.apply_workload(_workload(replicas=3, env={"V": "2"}))  # generation 2
    # The first plan (made from a current read) would remove ids[0]; the agent of h2 reports
    # its instance unready just before that plan commits.
    racing.before_write.append(
        lambda: status.write_reports([_report("h2", ids[1], Phase.FAILED, ready=False)])
    )
    await controller.reconcile("web", term=TERM)
    assert _stale_writes(metrics) == 1
    by_id = {i.id: i for i in await store.list_instances()}
    removed = sorted(i for i in ids if by_id[i].desired is Desired.REMOVED)
    assert removed == [ids[1]]  # the unready one; both ready ones still serve
    up = [i for i in ids if by_id[i].desired is Desired.RUNNING and by_id[i].ready]
    assert len(up) >= 3 - 1
    # And the cache holds what was written.
    async with _keeping_current(cache):
        await until(lambda: _matches_the_database(racing, cache), what="the cache to be current")


async def test_reports_landing_before_a_scale_up_is_written_do_not_refuse_it(
    store: Store,
) -> None:
    """A plan that only creates depends on the desired state alone: agents' reports streaming
    in between its read and its write (a burst of starts) do not refuse it."""
    await _hosts(store, "h1", "h2")
    await store.apply_workload(_workload(replicas=1))
    [first] = (await write_plan(store, "web", create_on=["h1"])).created
    status = StatusStore(store.pool)
    metrics = Metrics()
    racing = _Racing(store)
    cache = await loaded_cache(racing, metrics=metrics)
    controller = WorkloadController(racing, cache=cache, metrics=metrics)
    await store.apply_workload(_workload(replicas=3))
    racing.before_write.append(
        lambda: status.write_reports([_report("h1", first, Phase.RUNNING, ready=True)])
    )
    await controller.reconcile("web", term=TERM)
    assert _stale_writes(metrics) == 0
    assert len(await store.list_instances()) == 3
    # The plan was made over an older version than it was written over: the cache does not
    # apply it blindly, it reads the workload again.
    async with _keeping_current(cache):
        await until(lambda: _matches_the_database(racing, cache), what="the cache to be current")
