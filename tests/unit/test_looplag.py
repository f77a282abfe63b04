"""`controlplane.looplag.watch`: how late the event loop ran its timer."""

from __future__ import annotations

import asyncio
import contextlib
import time

from controlplane.looplag import watch


async def test_a_blocked_loop_is_observed_as_late_by_about_how_long_it_was_blocked() -> None:
    """A loop held for 200 ms runs the 10 ms timer about 190 ms late, and says so."""
    seen: list[float] = []
    got_two = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        if len(seen) >= 2:
            got_two.set()

    task = asyncio.create_task(watch(interval_s=0.01, observe=observe))
    try:
        await asyncio.sleep(0)  # the watcher sets its timer
        time.sleep(0.2)  # noqa: ASYNC251 (blocks the loop on purpose: what saturation looks like)
        async with asyncio.timeout(5):
            await got_two.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen[0] >= 0.15  # the timer was due 10 ms in, and ran after the 200 ms block
    assert all(lag >= 0 for lag in seen)
