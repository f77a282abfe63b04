"""Heartbeats written in batches (`controlplane.heartbeats`) on a real Postgres: one statement
per batch, a silent host made READY again with its event and notification, dropped and counted
while the database is away, only the host's current stream counted, and the leader's cache
learning the heartbeats it wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import asyncpg
from plans import all_hosts

from controlplane.heartbeats import HeartbeatWriter
from controlplane.hosts import Beat
from controlplane.metrics import Metrics
from controlplane.status import StatusStore
from controlplane.store import WORKLOAD_CHANNEL, Store, create_pool
from keel.model import HostState, Resources
from tests.integration.plans import loaded_cache

CAPS = Resources(4000, 8192)


class Counted:
    """The real store, counting the batch writes made through it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[int] = []

    async def write_heartbeats(self, beats: Sequence[tuple[str, str, int]]) -> list[Beat]:
        self.writes.append(len(beats))
        return await self.store.write_heartbeats(beats)


async def _register(store: Store, names: Sequence[str]) -> None:
    for name in names:
        await store.register_host(
            name, labels={}, capacity=CAPS, agent_version="t", stream_id=f"s-{name}"
        )


def _sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def _written(writer: HeartbeatWriter) -> None:
    assert await writer.flush(10), "heartbeats not written within 10s"


async def test_many_hosts_heartbeating_together_are_written_in_one_statement(
    store: Store,
) -> None:
    """Heartbeats that arrive while no batch is being written go out together: one write,
    one transaction (every host gets the same database time), every host's heartbeat moved."""
    names = [f"h{n:03}" for n in range(200)]
    await _register(store, names)
    await store.pool.execute("UPDATE host SET last_heartbeat = now() - interval '10 seconds'")
    counted, metrics = Counted(store), Metrics()
    learned: list[Beat] = []
    writer = HeartbeatWriter(counted, metrics=metrics, on_written=learned.extend)
    for name in names:
        writer.submit(name, stream_id=f"s-{name}", dropped=lambda: None)
    # A host heartbeating twice before the write is one row, not two.
    writer.submit("h000", stream_id="s-h000", dropped=lambda: None)
    task = asyncio.create_task(writer.run())
    try:
        await _written(writer)
    finally:
        task.cancel()
    assert counted.writes == [200]
    rows = await store.pool.fetch("SELECT DISTINCT last_heartbeat FROM host")
    assert len(rows) == 1 and rows[0]["last_heartbeat"] == learned[0].last_heartbeat
    assert sorted(b.host for b in learned) == names
    assert _sample(metrics, "keel_heartbeat_batch_size_count") == 1
    assert _sample(metrics, "keel_heartbeat_batch_size_sum") == 200
    assert _sample(metrics, "keel_heartbeat_flush_duration_seconds_count") == 1


async def test_a_heartbeat_makes_a_silent_host_ready_with_its_event_and_notification(
    store: Store, migrated_database: str
) -> None:
    """A NOT_READY (or UNKNOWN) host that heartbeats is READY again, from now, with a HostReady
    event and the `*` notification that makes the controllers look at every workload again; a
    host that was READY keeps its state_since and gets no event."""
    await _register(store, ["h1", "h2", "h3"])
    await store.pool.execute(
        """UPDATE host SET state = CASE name WHEN 'h1' THEN 'NOT_READY' ELSE 'UNKNOWN' END,
                          state_since = now() - interval '1 minute'
           WHERE name IN ('h1', 'h2')"""
    )
    ready_since = (await store.get_host("h3")).state_since
    listener = await asyncpg.connect(migrated_database)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(WORKLOAD_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        beats = await store.write_heartbeats(
            [("h1", "s-h1", 0), ("h2", "s-h2", 0), ("h3", "s-h3", 0)]
        )
        async with asyncio.timeout(10):
            assert await heard.get() == "*"
        # A batch in which no host came back notifies nothing (notifications arrive in commit
        # order: the next one heard is the marker sent after it).
        assert [b.was for b in await store.write_heartbeats([("h3", "s-h3", 0)])] == [
            HostState.READY
        ]
        await store.pool.execute("SELECT pg_notify($1, 'marker')", WORKLOAD_CHANNEL)
        async with asyncio.timeout(10):
            assert await heard.get() == "marker"
    finally:
        await listener.close()
    assert {b.host: b.was for b in beats} == {
        "h1": HostState.NOT_READY,
        "h2": HostState.UNKNOWN,
        "h3": HostState.READY,
    }
    for name in ("h1", "h2"):
        host = await store.get_host(name)
        assert host.state is HostState.READY and host.state_since == host.last_heartbeat
    assert (await store.get_host("h3")).state_since == ready_since
    events = await StatusStore(store.pool).list_events(obj=None, limit=20)
    assert [(e.object, e.kind, e.message) for e in events if e.kind == "HostReady"] == [
        ("host/h1", "HostReady", "heartbeat after NOT_READY"),
        ("host/h2", "HostReady", "heartbeat after UNKNOWN"),
    ]


async def test_only_the_hosts_current_open_stream_heartbeats(store: Store) -> None:
    """A heartbeat of a stream replaced since, or written after its stream ended, changes
    nothing: it neither moves the heartbeat nor marks the host connected again."""
    await _register(store, ["h1", "h2"])
    await store.register_host("h1", labels={}, capacity=CAPS, agent_version="t", stream_id="new")
    await store.disconnect_host("h2", stream_id="s-h2")
    await store.pool.execute("UPDATE host SET last_heartbeat = now() - interval '10 seconds'")

    async def beats() -> dict[str, tuple[object, bool]]:
        return {h.name: (h.last_heartbeat, h.connected) for h in await all_hosts(store)}

    before = await beats()
    assert await store.write_heartbeats([("h1", "s-h1", 0), ("h2", "s-h2", 0)]) == []
    assert await beats() == before
    assert before["h2"][1] is False
    [beat] = await store.write_heartbeats([("h1", "new", 0)])
    assert beat.host == "h1" and (await store.get_host("h1")).last_heartbeat == beat.last_heartbeat


async def test_heartbeats_are_dropped_and_counted_while_the_database_is_away(
    store: Store, migrated_database: str
) -> None:
    """With the database unreachable a batch is dropped, not retried: every heartbeat in it
    (those it coalesced included) is counted and each stream is told; the writer carries on
    with the next batch."""
    await _register(store, ["h1", "h2"])
    away = await create_pool(migrated_database, min_size=0, max_size=1)
    await away.close()  # every acquire now fails as with the database away
    metrics, told = Metrics(), []

    def telling(name: str) -> Callable[[], None]:
        return lambda: told.append(name)

    writer = HeartbeatWriter(Store(away), metrics=metrics, on_written=lambda beats: None)
    for name in ("h1", "h2", "h1"):
        writer.submit(name, stream_id=f"s-{name}", dropped=telling(name))
    task = asyncio.create_task(writer.run())
    try:
        await _written(writer)
        assert _sample(metrics, "keel_heartbeats_dropped_total") == 3
        assert sorted(told) == ["h1", "h2"]
        writer.submit("h2", stream_id="s-h2", dropped=telling("again"))
        await _written(writer)
        assert not task.done(), "the writer stopped on a failed write"
    finally:
        task.cancel()
    assert _sample(metrics, "keel_heartbeats_dropped_total") == 4
    assert told[-1] == "again"
    assert _sample(metrics, "keel_heartbeat_batch_size_count") == 0


async def test_the_leaders_cache_learns_the_heartbeats_it_wrote(store: Store) -> None:
    """The cache takes each host's new heartbeat (and READY) from the batch the leader wrote,
    so liveness judges from it; an older heartbeat never replaces a newer one it holds, and a
    follower (no cache loaded) holds nothing."""
    await _register(store, ["h1", "h2"])
    await store.pool.execute(
        """UPDATE host SET last_heartbeat = now() - interval '1 minute',
                          state = CASE name WHEN 'h2' THEN 'NOT_READY' ELSE state END"""
    )
    cache = await loaded_cache(store)
    generation = cache.index.hosts_generation
    beats = await store.write_heartbeats([("h1", "s-h1", 0), ("h2", "s-h2", 0)])
    cache.heartbeats_written(beats)
    facts = {f.name: f for f in cache.liveness_facts()}
    for b in beats:
        assert facts[b.host].last_heartbeat == b.last_heartbeat
        assert facts[b.host].state is HostState.READY
        assert facts[b.host].state_since == b.state_since
    assert cache.hosts["h2"].state is HostState.READY
    assert cache.index.hosts_generation > generation
    # A batch that committed before a read the cache holds: the read stands.
    await cache.refresh_hosts()
    newer = {f.name: f.last_heartbeat for f in cache.liveness_facts()}
    old = [Beat(b.host, b.was, b.state_since, b.last_heartbeat) for b in beats]
    await store.write_heartbeats([("h1", "s-h1", 0)])
    await cache.refresh_hosts()
    latest = cache.host("h1")
    assert latest is not None and newer["h1"] is not None
    assert latest.last_heartbeat is not None and latest.last_heartbeat > newer["h1"]
    cache.heartbeats_written(old)
    assert cache.host("h1") == latest
    cache.stop()
    cache.heartbeats_written(beats)  # a follower: nothing to learn, nothing raised
