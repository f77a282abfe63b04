"""Agent heartbeats, written to Postgres in batches: one statement per batch, not per heartbeat.

`sync` submits each heartbeat as it arrives on a stream; the writer takes every host that
heartbeated since the last batch (`batching.Batches`, keyed by host: a second heartbeat of the
same host before the write only replaces the first) and writes them in one statement
(`hosts.HostStore.write_heartbeats`), as soon as the previous batch committed. Under light load
a heartbeat is written at once; at thousands of agents, heartbeats pile up while a commit runs
and go out together.

The failure policy is the opposite of the report writer's: a heartbeat the database cannot
take now (`Unavailable`) is dropped and counted (`keel_heartbeats_dropped_total`), and its
stream is told (its outage is logged once). Buffering it would only delay the truth: the next
heartbeat that lands says the host is alive, and liveness judges by database time (and gives
hosts one grace from the database's return, `liveness`). The same holds at SIGTERM: what is
pending is dropped, not flushed: the streams have ended by then (their hosts are marked
disconnected, which a late heartbeat would not change anyway), and the agents' registration
on another replica stamps a fresh heartbeat.

On the leader, the hosts written (with the heartbeat and the state the statement returned)
are handed to the fleet cache (`cache.FleetCache.heartbeats_written`), so liveness judges
from the heartbeat just written rather than one a resync read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from controlplane.batching import Batches
from controlplane.errors import Unavailable
from controlplane.hosts import Beat
from controlplane.metrics import Metrics
from keel.model import HostState

log = structlog.get_logger("keel.heartbeats")


class HeartbeatStore(Protocol):
    async def write_heartbeats(self, beats: Sequence[tuple[str, str, int]]) -> list[Beat]:
        """Writes (host, stream id, revision acted on) heartbeats in one statement; returns
        the hosts written."""
        ...


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A heartbeat waiting for the next batch. `count`: the heartbeats of this host it stands
    for (a newer one replaces an older one not written yet); `dropped` is called when it could
    not be written, `written` once it is recorded (the stream acknowledges it)."""

    host: str
    stream_id: str
    dropped: Callable[[], None]
    count: int = 1
    revision: int = 0
    written: Callable[[], None] = _nothing


def _merge(old: Heartbeat, new: Heartbeat) -> Heartbeat:
    return Heartbeat(
        new.host, new.stream_id, new.dropped, old.count + new.count, new.revision, new.written
    )


class HeartbeatWriter:
    def __init__(
        self,
        store: HeartbeatStore,
        *,
        metrics: Metrics,
        on_written: Callable[[Sequence[Beat]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._on_written = on_written
        self._clock = clock
        self._batches: Batches[str, Heartbeat] = Batches(key=lambda b: b.host, merge=_merge)

    def submit(
        self,
        host: str,
        *,
        stream_id: str,
        dropped: Callable[[], None],
        revision: int = 0,
        written: Callable[[], None] = _nothing,
    ) -> None:
        """A heartbeat from the stream `stream_id` of `host`, whose agent has acted on
        `revision`."""
        self._batches.submit((Heartbeat(host, stream_id, dropped, 1, revision, written),))

    @property
    def pending(self) -> int:
        """Hosts whose heartbeat waits for the next batch."""
        return len(self._batches)

    async def run(self) -> None:
        """Writes batches until cancelled; never ends on a failed write."""
        while True:
            batch = await self._batches.take()
            started = self._clock()
            try:
                written = await self._store.write_heartbeats(
                    [(b.host, b.stream_id, b.revision) for b in batch]
                )
            except Exception as exc:
                self._drop(batch, exc)
            else:
                self._metrics.observe_heartbeat_batch(len(batch), self._clock() - started)
                for beat in written:
                    if beat.was is not HostState.READY and beat.state is HostState.READY:
                        log.info("host ready again", host=beat.host, was=beat.was.value)
                self._on_written(written)
                recorded = {beat.host for beat in written}
                for b in batch:
                    if b.host in recorded:
                        b.written()
            self._batches.written()

    def _drop(self, batch: Sequence[Heartbeat], exc: Exception) -> None:
        self._metrics.drop_heartbeat(sum(b.count for b in batch))
        if not isinstance(exc, Unavailable):
            # Not the database being away: a bug or a refused value. Still dropped (the next
            # heartbeat is as good), but loudly.
            log.error("heartbeat batch failed; dropped", error=str(exc), size=len(batch))
        for b in batch:
            b.dropped()

    async def flush(self, timeout_s: float) -> bool:
        """Waits until every heartbeat submitted so far is written or dropped (for tests)."""
        return await self._batches.flush(timeout_s)
