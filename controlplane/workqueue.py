"""A controller work queue: deduplicated keys in two priorities, and one timer per key.

Like client-go's work queue: a key added while queued is queued once; a key being processed
and added again is processed once more afterwards. Unlike it, keys come in two priorities, so a
fresh change (a NOTIFY, a report, an apply) never waits behind a periodic resync of unchanged
objects: `add` queues a key ahead of every key that `add_resync` queued. A resync key that
becomes fresh moves ahead. `add_after` is a per-key timer (a retry's back-off, a reconcile's
`requeue_after`); a key fires into the fresh queue. How long to wait is decided by the one
reconcile runner (`controlplane.reconcile`), which owns this queue; the queue only keeps order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class WorkQueue:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Insertion-ordered sets: the first key is the next one out, removal is O(1).
        self._fresh: dict[str, None] = {}
        self._resync: dict[str, None] = {}
        self._queued_at: dict[str, float] = {}
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._fresh) + len(self._resync)

    def add(self, key: str) -> None:
        """Queues a key ahead of the resync keys (something changed: look again soon)."""
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._fresh:
            return
        # A key waiting in the resync queue keeps its age but moves ahead.
        self._resync.pop(key, None)
        self._fresh[key] = None
        self._queued_at.setdefault(key, self._clock())
        self._ready.set()

    def add_resync(self, key: str) -> None:
        """Queues a key behind the fresh ones, unless it is already due to be looked at:
        queued, being processed (that pass reads fresh state), or waiting on its timer."""
        if key in self._processing or key in self._timers:
            return
        if key in self._fresh or key in self._resync:
            return
        self._resync[key] = None
        self._queued_at[key] = self._clock()
        self._ready.set()

    def add_after(self, key: str, delay_s: float) -> None:
        """Queues the key (fresh) after delay_s; replaces the key's earlier timer, if any."""
        self._cancel_timer(key)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_later(max(0.0, delay_s), fire)

    async def get(self) -> str:
        """The next key, fresh ones first; it is processing until `done` or `release`."""
        while not self._fresh and not self._resync:
            self._ready.clear()
            await self._ready.wait()
        source = self._fresh if self._fresh else self._resync
        key = next(iter(source))
        del source[key]
        self._queued_at.pop(key, None)
        self._processing.add(key)
        return key

    def done(self, key: str, *, after_s: float | None = None) -> None:
        """The key's pass ended: its timer (if any) is replaced by `after_s` (None: no timer),
        and a key added meanwhile is queued again at once."""
        self._processing.discard(key)
        self._cancel_timer(key)
        if after_s is not None:
            self.add_after(key, after_s)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def release(self, key: str) -> None:
        """The key's pass ended without an outcome (cancelled, leadership lost): queue it
        again as it was, so whoever processes the queue next picks it up."""
        self._processing.discard(key)
        self._dirty.discard(key)
        self.add(key)

    def waiting(self, key: str) -> float | None:
        """Seconds until the key's timer fires (None: no timer)."""
        timer = self._timers.get(key)
        if timer is None:
            return None
        return max(0.0, timer.when() - asyncio.get_running_loop().time())

    def oldest_s(self) -> float:
        """How long the longest-waiting queued key has waited (0 when nothing is queued).

        Read by the metrics server's thread at scrape time: one C-level copy of the stamps,
        which the event loop's thread cannot change halfway through.
        """
        stamps = tuple(self._queued_at.values())
        return max(0.0, self._clock() - min(stamps)) if stamps else 0.0

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
