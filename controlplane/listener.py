"""LISTEN for desired-state changes and fan them out inside this replica.

`keel_host` notifications wake the Sync stream of that host; `keel_workload` ones go to the
leader's cache (`controlplane.cache`), which reads what changed and wakes the controllers;
`keel_operation` ones wake the operation's watchers and the drain controller; `keel_logs`
ones carry log requests and chunks between replicas (`controlplane.logbus`); `keel_token`
ones name a token revoked or replaced (`controlplane.revocation` ends its open calls). The
connection is re-made with back-off if it drops, and everything is woken (and read) again
then, since notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import asyncpg
import structlog

from controlplane.cancelling import end_if_cancelled
from controlplane.sql import LOGS_CHANNEL, TOKEN_CHANNEL
from controlplane.store import HOST_CHANNEL, OPERATION_CHANNEL, WORKLOAD_CHANNEL

log = structlog.get_logger("keel.listener")


class Listener:
    def __init__(
        self,
        database_url: str,
        *,
        on_host: Callable[[str], None],
        on_workload: Callable[[str], None],
        on_reconnect: Callable[[], None],
        on_operation: Callable[[str], None] = lambda op: None,
        on_logs: Callable[[str], None] = lambda payload: None,
        on_token: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._url = database_url
        self._on_host = on_host
        self._on_workload = on_workload
        self._on_reconnect = on_reconnect
        self._on_operation = on_operation
        self._on_logs = on_logs
        self._on_token = on_token

    def _dispatch(self, conn: object, pid: int, channel: str, payload: object) -> None:
        assert isinstance(payload, str)
        if channel == HOST_CHANNEL:
            self._on_host(payload)
        elif channel == WORKLOAD_CHANNEL:
            self._on_workload(payload)
        elif channel == OPERATION_CHANNEL:
            self._on_operation(payload)
        elif channel == LOGS_CHANNEL:
            self._on_logs(payload)
        elif channel == TOKEN_CHANNEL:
            self._on_token(payload)

    async def run(self) -> None:
        delay = 0.2
        first = True
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(HOST_CHANNEL, self._dispatch)
                await conn.add_listener(WORKLOAD_CHANNEL, self._dispatch)
                await conn.add_listener(OPERATION_CHANNEL, self._dispatch)
                await conn.add_listener(LOGS_CHANNEL, self._dispatch)
                await conn.add_listener(TOKEN_CHANNEL, self._dispatch)
                if not first:
                    log.info("listening again; waking every stream and controller")
                    self._on_reconnect()
                first, delay = False, 0.2
                while not lost.is_set():
                    # A cheap query now and then notices a half-open connection.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5.0):
                            await lost.wait()
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                end_if_cancelled()  # a cancel swallowed on the way (see `cancelling`)
                log.warning("notification listener lost", error=str(exc))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            first = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
