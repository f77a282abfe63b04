"""Who leads: exactly one replica runs the controllers, and stops them the moment it may not.

Leadership is a Postgres advisory lock held on a dedicated connection plus an epoch in the
`leader` row (`store.take_leadership`) that every controller transaction checks
(`sql.check_epoch`), so a deposed leader cannot write. While it holds the lock, the replica
fills its cache of the fleet (`cache.FleetCache`: a full list first, after the epoch bump, so
it sees every write of the leader before), keeps it current, and runs one `reconcile.Runner`
per controller (workload, liveness, stuck) on it; losing the lock's connection, or a write
refused with NotLeader, stops them all at once, the cache is dropped, and the replica
campaigns again every `leader_retry_s`. Neighbours: main.py builds the runners; the runners'
queues outlive a term, so a key cut short is looked at again by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Sequence

import asyncpg
import structlog

from controlplane.cache import FleetCache
from controlplane.cancelling import end_if_cancelled
from controlplane.reconcile import Runner
from controlplane.settings import Settings
from controlplane.store import Store

log = structlog.get_logger("keel.leader")

_LEADER_LOCK_KEY = 0x6B65656C_6C656164  # "keellead"


class Leadership:
    """Campaigns for leadership and runs the controllers while it holds it."""

    def __init__(
        self,
        store: Store,
        *,
        database_url: str,
        settings: Settings,
        runners: Sequence[Runner],
        cache: FleetCache,
        on_leading: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        self._on_leading = on_leading
        self._store = store
        self._cache = cache
        self._url = database_url
        self._settings = settings
        self._runners = list(runners)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.epoch: int | None = None

    async def run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=self._settings.db_timeout_s)
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK_KEY):
                    self.epoch = await self._store.take_leadership(conn, self.holder)
                    log.info("leadership acquired", epoch=self.epoch, holder=self.holder)
                    await self._lead(conn, self.epoch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                end_if_cancelled()  # a cancel swallowed on the way (see `cancelling`)
                log.warning("leadership lost or unavailable", error=str(exc))
            finally:
                self.epoch = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=self._settings.db_timeout_s)
            await asyncio.sleep(self._settings.leader_retry_s)

    async def _lead(self, conn: asyncpg.Connection, epoch: int) -> None:
        tasks: list[asyncio.Task[None]] = []
        self._on_leading(True)
        try:
            # Before any controller reads: the full list, made after this term's epoch bump.
            await self._cache.start()
            tasks = [
                *(
                    asyncio.create_task(r.run(epoch), name=f"runner-{r.name}")
                    for r in self._runners
                ),
                asyncio.create_task(self._cache.run(), name="fleet-cache"),
                asyncio.create_task(self._watch(conn), name="leader-watch"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    raise exc
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._cache.stop()
            self._on_leading(False)

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Ends (and so stops the controllers) when the lock's connection is gone."""
        while True:
            await asyncio.sleep(self._settings.leader_watch_interval_s)
            await conn.fetchval("SELECT 1", timeout=self._settings.db_timeout_s)
