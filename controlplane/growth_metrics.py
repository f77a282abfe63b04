"""The bounded-growth metrics: rows the retention pass deleted, and hosts gone for long.

Registered on the control plane's registry by `metrics.Metrics` (its `growth` attribute); fed
by the retention controller (`retention`: `count_pruned` per batch) and by the periodic host
count (`set_gone_hosts`). No label names a host.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# The tables the retention pass prunes (`retention_store`), as the `table` label names them.
EVENT = "event"
OPERATION = "operation"
TOMBSTONE = "instance"
TABLES = (EVENT, OPERATION, TOMBSTONE)


class GrowthMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.pruned = Counter(
            "keel_pruned_rows_total",
            "Rows the leader's retention pass deleted because they were older than --retention, "
            "by table (event; operation: ended operations; instance: confirmed tombstones).",
            ["table"],
            registry=registry,
        )
        for table in TABLES:
            self.pruned.labels(table)
        self.gone_hosts = Gauge(
            "keel_hosts_gone",
            "Hosts not READY for longer than --gone-after: listed GONE, removable with "
            "`keelctl delete host`. Read by the leader (0 on the others).",
            registry=registry,
        )

    def count_pruned(self, table: str, n: int) -> None:
        if n:
            self.pruned.labels(table).inc(n)

    def set_gone_hosts(self, n: int) -> None:
        self.gone_hosts.set(n)
