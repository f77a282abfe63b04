"""Agent status reports, written to Postgres in batches.

A batch is flushed as soon as the previous one commits (no fixed interval): under light load
each report is written at once; under heavy load reports pile up while a commit runs and go
out together in the next one. A failed write keeps its batch and retries with back-off, so a
report is never dropped while the process lives.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import structlog

from controlplane.errors import InvalidArgument
from controlplane.status import ReportOutcome, StatusStore
from controlplane.store import Report

log = structlog.get_logger("keel.reports")


class ReportWriter:
    def __init__(
        self,
        store: StatusStore,
        *,
        on_written: Callable[[ReportOutcome], None],
        retry_max_s: float = 5.0,
    ) -> None:
        self._store = store
        self._on_written = on_written
        self._retry_max_s = retry_max_s
        self._pending: list[Report] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, reports: Sequence[Report]) -> None:
        if not reports:
            return
        self._pending.extend(reports)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Writes batches until cancelled."""
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            while batch:
                try:
                    outcome = await self._store.write_reports(batch)
                except asyncio.CancelledError:
                    self._pending[:0] = batch
                    raise
                except InvalidArgument as exc:
                    # Not the database being down: a report it refuses. Retrying would block
                    # every later report; write the others one by one and drop the bad one.
                    batch = await self._isolate(batch, exc)
                    continue
                except Exception as exc:  # the database may be down: keep the batch, retry
                    log.warning("report batch failed; retrying", error=str(exc), size=len(batch))
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self._retry_max_s)
                    # Newer reports of the same instance replace the failed ones, so an outage
                    # grows the batch by instances, not by reports.
                    batch = list({r.instance_id: r for r in batch + self._pending}.values())
                    self._pending = []
                    continue
                delay = 0.05
                self._on_written(outcome)
                batch = []
            if not self._pending:
                self._idle.set()

    async def _isolate(self, batch: list[Report], exc: Exception) -> list[Report]:
        """Writes a refused batch report by report; returns what is left to retry (reports
        that failed for another reason than their data)."""
        if len(batch) == 1:
            r = batch[0]
            log.error("report refused by the database; dropped", instance=r.instance_id,
                      host=r.host, error=str(exc))  # fmt: skip
            return []
        retry: list[Report] = []
        for r in batch:
            try:
                self._on_written(await self._store.write_reports([r]))
            except InvalidArgument as one:
                log.error("report refused by the database; dropped", instance=r.instance_id,
                          host=r.host, error=str(one))  # fmt: skip
            except Exception:
                retry.append(r)
        return retry

    async def flush(self, timeout_s: float) -> bool:
        """Waits until everything submitted so far is committed. False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
