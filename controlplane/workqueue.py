"""A controller work queue: deduplicated keys, per-key exponential back-off on failure.

Like client-go's rate-limited queue: a key added while queued is queued once; a key being
processed and added again is processed once more afterwards; a failed key comes back after
base * 2^failures (capped, jittered); success forgets its failures.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque


class WorkQueue:
    def __init__(self, *, base_s: float, max_s: float) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._ready.set()

    async def get(self) -> str:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str, *, ok: bool) -> float | None:
        """Marks the key processed. On failure schedules a retry; returns its delay."""
        self._processing.discard(key)
        delay: float | None = None
        if ok:
            self._failures.pop(key, None)
        else:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
            delay = min(self._base_s * (2**n), self._max_s) * (0.5 + random.random() / 2)
            self._schedule(key, delay)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
        return delay

    def release(self, key: str) -> None:
        """The key's pass ended without an outcome (cancelled, leadership lost): queue it
        again as it was, so whoever processes the queue next picks it up."""
        self._processing.discard(key)
        self._dirty.discard(key)
        self.add(key)

    def retries(self, key: str) -> int:
        return self._failures.get(key, 0)

    def _schedule(self, key: str, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_later(delay, fire)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
