"""The controllers' work queue: dedup, fresh keys before resync keys, one timer per key."""

from __future__ import annotations

import asyncio

from controlplane.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_added_twice_is_queued_once() -> None:
    """Duplicate adds collapse while the key waits."""
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_a_fresh_key_goes_ahead_of_a_queued_resync() -> None:
    """A resync of N unchanged keys is queued; a key added fresh is the very next one out."""
    q = WorkQueue()
    for n in range(500):
        q.add_resync(f"w{n}")
    q.add("fresh")
    assert await q.get() == "fresh"
    assert await q.get() == "w0"
    assert len(q) == 499


async def test_a_resync_key_that_changes_moves_ahead() -> None:
    """A key waiting for the resync that gets a fresh change is processed with the fresh ones."""
    q = WorkQueue()
    for key in ("a", "b", "c"):
        q.add_resync(key)
    q.add("c")
    assert [await q.get() for _ in range(3)] == ["c", "a", "b"]


async def test_a_resync_does_not_demote_or_duplicate_a_fresh_key() -> None:
    """A resync of a key already queued fresh leaves it where it is, once."""
    q = WorkQueue()
    q.add_resync("a")
    q.add("b")
    q.add_resync("b")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["b", "a"]


async def test_a_key_added_while_processing_comes_back_after_done() -> None:
    """A change seen mid-reconcile is not lost: the key is processed once more."""
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")
    assert len(q) == 0
    q.done(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_a_resync_while_processing_is_not_another_pass() -> None:
    """The pass in progress reads fresh state: a resync of its key adds nothing."""
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add_resync("a")
    q.done(key)
    assert len(q) == 0


async def test_a_timer_brings_the_key_back_fresh() -> None:
    """add_after queues the key when it fires, ahead of resync keys."""
    q = WorkQueue()
    q.add_resync("old")
    q.add_after("a", 0.01)
    assert q.waiting("a") is not None
    assert await asyncio.wait_for(q.get(), 1) == "old"  # nothing else is queued yet
    assert await asyncio.wait_for(q.get(), 1) == "a"
    assert q.waiting("a") is None


async def test_done_replaces_the_keys_timer() -> None:
    """One timer per key: the latest outcome decides its next turn; none clears it."""
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.done(key, after_s=60)
    waiting = q.waiting("a")
    assert waiting is not None and 59 < waiting <= 60
    q.add("a")
    key = await q.get()
    q.done(key, after_s=5)
    waiting = q.waiting("a")
    assert waiting is not None and waiting <= 5
    q.add("a")
    key = await q.get()
    q.done(key)
    assert q.waiting("a") is None
    q.close()


async def test_a_resync_skips_a_key_waiting_on_its_timer() -> None:
    """A key backing off (or due at its own deadline) is already scheduled: resync leaves it."""
    q = WorkQueue()
    q.add_after("a", 60)
    q.add_resync("a")
    assert len(q) == 0
    q.add("a")  # a fresh change does not wait for the timer
    assert await q.get() == "a"
    q.close()


async def test_a_released_key_is_handed_out_again() -> None:
    """A pass cut short (cancelled, leadership lost) does not strand its key."""
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # a change arrives mid-pass
    q.release(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.done("a")
    assert len(q) == 0


async def test_oldest_is_the_age_of_the_longest_waiting_key() -> None:
    """keel_workqueue_oldest_seconds: the wait of the oldest queued key, 0 when empty; a key
    moving ahead keeps the age it has."""
    clock = Clock()
    q = WorkQueue(clock=clock)
    assert q.oldest_s() == 0
    q.add_resync("a")
    clock.now += 10
    q.add("b")
    clock.now += 5
    assert q.oldest_s() == 15
    q.add("a")  # promoted: still waiting since the resync
    assert q.oldest_s() == 15
    assert await q.get() == "b"
    assert q.oldest_s() == 15
    assert await q.get() == "a"
    assert q.oldest_s() == 0
