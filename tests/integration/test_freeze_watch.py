"""The freeze's watch on a real Postgres: a freeze that reaches its `until` is ended with one
DeployUnfrozen event however many replicas notice it, and the gauges follow a change made on
this replica at once and an end at its `until`, not at the next `--freeze-poll`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from waiting import eventually

from controlplane import freeze
from controlplane.freeze_watch import FreezeWatch
from controlplane.store import Store


async def _ended(store: Store) -> list[tuple[str, str]]:
    rows = await store.pool.fetch(
        "SELECT actor, message FROM event WHERE kind = 'DeployUnfrozen' ORDER BY id"
    )
    return [(r["actor"], r["message"]) for r in rows]


async def test_a_freeze_that_reaches_its_until_is_ended_once_with_an_event(store: Store) -> None:
    """Three replicas notice at the same moment: one event, by keel/freeze, naming the freeze;
    the next freeze starts a new one (since: now)."""
    ahead = datetime.now(UTC) + timedelta(hours=2)
    [first] = await freeze.freeze(store.pool, reason="window", until=ahead, actor="oncall")
    # Two hours pass (the row is moved back rather than the test waiting for them).
    await store.pool.execute("UPDATE deploy_freeze SET until = now() - interval '1 second'")
    found = await asyncio.gather(*(freeze.expire(store.pool) for _ in range(3)))
    assert all(f.holding == [] and f.next_end_s is None for f in found)
    [(actor, message)] = await _ended(store)
    assert actor == "keel/freeze"
    assert message.startswith("the operator freeze by oncall since ")
    assert message.endswith('"window" ended at its until')
    assert (await freeze.expire(store.pool)).holding == []
    assert len(await _ended(store)) == 1
    [again] = await freeze.freeze(store.pool, reason="again", until=None, actor="oncall")
    assert again.since > first.since


async def test_a_write_ends_a_freeze_past_its_until_before_it_replaces_it(store: Store) -> None:
    """No watch ran: the next freeze records the old one's end first, then starts anew."""
    ahead = datetime.now(UTC) + timedelta(hours=2)
    await freeze.freeze(store.pool, reason="one", until=ahead, actor="oncall")
    await store.pool.execute("UPDATE deploy_freeze SET until = now() - interval '1 second'")
    await freeze.freeze(store.pool, reason="two", until=None, actor="oncall")
    [(actor, message)] = await _ended(store)
    assert actor == "keel/freeze" and '"one" ended at its until' in message


async def test_the_watch_follows_a_change_at_once_and_an_end_at_its_until(store: Store) -> None:
    """With an hour between reads, the gauges still follow `changed` within a moment, and a
    freeze ending in a second is ended (with its event) when it ends."""
    seen: list[list[freeze.Freeze]] = []
    watch = FreezeWatch(store.pool, interval_s=3600.0, on_freezes=seen.append)
    task = asyncio.create_task(watch.run(), name="freeze-watch-test")
    try:
        await eventually(lambda: len(seen) == 1, 5.0, what="the first read")
        assert seen[-1] == []
        await freeze.freeze(store.pool, reason="now", until=None, actor="oncall")
        watch.changed()
        await eventually(lambda: len(seen) == 2 and len(seen[-1]) == 1, 3.0, what="the change")
        await freeze.freeze(store.pool, reason="soon", until=timedelta(seconds=1), actor="oncall")
        watch.changed()
        await eventually(lambda: bool(seen[-1]) and seen[-1][0].reason == "soon", 3.0)
        await eventually(lambda: seen[-1] == [], 5.0, what="the end at its until")
        [(actor, message)] = await _ended(store)
        assert actor == "keel/freeze" and '"soon"' in message
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
