"""Items submitted one at a time, taken in batches: the pending half of a batch writer.

A writer loop (`reports.ReportWriter` for agent reports, `heartbeats.HeartbeatWriter` for
heartbeats) takes everything pending as one batch, writes it, and takes the next batch as soon
as that write is done: no fixed interval, so under light load each item is written at once and
under heavy load items pile up while a commit runs and go out together in the next one. What
happens when a write fails is the writer's own policy (reports retry, heartbeats are dropped).

Items are keyed (an instance, a host): a newer item of the same key replaces a pending one
(`merge` says how), so a slow write grows the next batch by keys, not by messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def _newest(old: T, new: T) -> T:
    return new


class Batches(Generic[K, T]):
    def __init__(self, *, key: Callable[[T], K], merge: Callable[[T, T], T] = _newest) -> None:
        self._key = key
        self._merge = merge
        self._pending: dict[K, T] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, items: Iterable[T]) -> None:
        pending = self._pending
        for item in items:
            k = self._key(item)
            old = pending.get(k)
            pending[k] = item if old is None else self._merge(old, item)
        if pending:
            self._idle.clear()
            self._wake.set()

    async def take(self) -> list[T]:
        """The next batch: everything pending, once there is something."""
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        self._wake.clear()
        batch, self._pending = list(self._pending.values()), {}
        return batch

    def put_back(self, batch: Iterable[T]) -> None:
        """A batch not written, to be taken again: under what was submitted since (newer)."""
        self.submit(self.with_pending(batch))

    def with_pending(self, batch: Iterable[T]) -> list[T]:
        """A batch not written, with what was submitted since (newer) merged over it, taken
        now: what a writer retries."""
        pending, self._pending = self._pending, {}
        self.submit(batch)
        self.submit(pending.values())
        merged, self._pending = list(self._pending.values()), {}
        return merged

    def written(self) -> None:
        """The batch taken last is done with: idle when nothing came meanwhile."""
        if not self._pending:
            self._idle.set()

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, timeout_s: float) -> bool:
        """Waits until everything submitted so far is written. False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
