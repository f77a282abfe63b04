"""Agent status reports, written to Postgres in batches (`batching.Batches`).

A batch is flushed as soon as the previous one commits (no fixed interval): under light load
each report is written at once; under heavy load reports pile up while a commit runs and go
out together in the next one. A failed write keeps its batch and retries with back-off, so a
report is never dropped while the process lives. Heartbeats are batched the same way, with
the opposite failure policy (`heartbeats`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import structlog

from controlplane.batching import Batches
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
        # The last report per instance wins, in a batch and across a failed write's retries:
        # an outage grows the batch by instances, not by reports.
        self._batches: Batches[str, Report] = Batches(key=lambda r: r.instance_id)

    def submit(self, reports: Sequence[Report]) -> None:
        self._batches.submit(reports)

    async def run(self) -> None:
        """Writes batches until cancelled."""
        delay = 0.05
        while True:
            batch = await self._batches.take()
            while batch:
                try:
                    outcome = await self._store.write_reports(batch)
                except asyncio.CancelledError:
                    self._batches.put_back(batch)
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
                    batch = self._batches.with_pending(batch)
                    continue
                delay = 0.05
                self._on_written(outcome)
                batch = []
            self._batches.written()

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
        return await self._batches.flush(timeout_s)
