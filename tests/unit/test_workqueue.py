"""The controllers' work queue: dedup, re-queue while processing, back-off on failure."""

from __future__ import annotations

import asyncio

from controlplane.workqueue import WorkQueue


async def test_a_key_added_twice_is_queued_once() -> None:
    """Duplicate adds collapse while the key waits."""
    q = WorkQueue(base_s=0.01, max_s=1)
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_a_key_added_while_processing_comes_back_after_done() -> None:
    """A change seen mid-reconcile is not lost: the key is processed once more."""
    q = WorkQueue(base_s=0.01, max_s=1)
    q.add("a")
    key = await q.get()
    q.add("a")
    assert len(q) == 0
    q.done(key, ok=True)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_failures_back_off_exponentially_and_success_resets() -> None:
    """Each failure doubles the delay up to the cap; a success forgets the failures."""
    q = WorkQueue(base_s=0.01, max_s=0.04)
    delays = []
    q.add("a")
    for _ in range(4):
        key = await asyncio.wait_for(q.get(), 1)
        delays.append(q.done(key, ok=False))
    assert q.retries("a") == 4
    # Jitter keeps each delay within [half, full] of base * 2^n, capped.
    for n, d in enumerate(delays):
        full = min(0.01 * 2**n, 0.04)
        assert d is not None and full / 2 <= d <= full
    key = await asyncio.wait_for(q.get(), 1)
    assert q.done(key, ok=True) is None
    assert q.retries("a") == 0
    q.close()


async def test_a_released_key_is_handed_out_again() -> None:
    """A pass cut short (cancelled, leadership lost) does not strand its key."""
    q = WorkQueue(base_s=0.01, max_s=1)
    q.add("a")
    key = await q.get()
    q.add("a")  # a change arrives mid-pass
    q.release(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.done("a", ok=True)
    assert len(q) == 0
