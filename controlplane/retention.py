"""Retention: the leader's periodic pass that keeps Keel's tables from growing for ever.

Every `interval_s` the pass deletes what is older than `retention_s` (database time): events,
operations that ended, and confirmed tombstones (`retention_store` says which rows those are and
why the others stay). It deletes in batches of at most `batch` rows, each its own short
transaction fenced by the leader epoch, until a batch comes back short; so one prune never
holds a long lock, and a deposed leader stops at its next batch. Run by `reconcile.Runner`
while this replica leads (`leader.Leadership`), so only the leader prunes. Counts what it
deleted in `keel_pruned_rows_total{table}` (`growth_metrics`) and logs each table it pruned;
it also counts the hosts gone past `--gone-after` (`keel_hosts_gone`), which an operator
removes (`host_delete`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from controlplane.growth_metrics import TABLES, GrowthMetrics
from controlplane.reconcile import Result, Term, requeue_after
from controlplane.retention_store import RetentionStore, count_gone

log = structlog.get_logger("keel.retention")

# The one key: every pass prunes every table.
KEY = "prune"


@dataclass(frozen=True)
class Retention:
    retention_s: float  # rows older than this go
    interval_s: float  # how often the pass runs
    batch: int  # the most rows one transaction deletes
    gone_after_s: float  # hosts not READY this long are counted gone (keel_hosts_gone)


class RetentionController:
    name = "retention"
    key_label = "pass"

    def __init__(
        self,
        store: RetentionStore,
        *,
        now: Callable[[], Awaitable[datetime]],
        settings: Retention,
        metrics: GrowthMetrics,
    ) -> None:
        self._store = store
        self._now = now
        self._settings = settings
        self._metrics = metrics

    async def keys(self) -> list[str]:
        return [KEY]

    async def reconcile(self, key: str, *, term: Term) -> Result:
        s = self._settings
        before = await self._now() - timedelta(seconds=s.retention_s)
        total = 0
        for table in TABLES:
            rows = batches = 0
            while True:
                n = await self._store.prune_batch(
                    table, before=before, batch=s.batch, epoch=term.epoch
                )
                rows += n
                batches += 1
                self._metrics.count_pruned(table, n)
                if n < s.batch:
                    break
            if rows:
                log.info(
                    "pruned",
                    table=table,
                    rows=rows,
                    batches=batches,
                    older_than=before.isoformat(),
                    retention_s=s.retention_s,
                )
            total += rows
        # The hosts an operator may remove, counted here: they are part of what grows.
        self._metrics.set_gone_hosts(
            await count_gone(self._store.pool, gone_after_s=s.gone_after_s)
        )
        return requeue_after(s.interval_s, idle=total == 0)
