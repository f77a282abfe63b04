"""The drains' Prometheus metrics: operations by state, what running drains have left, block on
and expect, how long drains take and how their moves went.

Registered on the control plane's registry by `metrics.Metrics` (its `drain` attribute); fed by
the drain controller (`drainer`): `set_operations` each resync (every operation by kind and
state, read from Postgres: the table is small), `set_running` after each pass (summed over the
running drains it holds, so no label names a host or an operation), `observe_finished` once
when a drain ends, `count_moves` per move written. On a replica that does not lead the gauges
read 0 (take the max over replicas).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controlplane.operations import OperationState

KINDS = ("drain",)
STATES = tuple(s.value for s in OperationState)
# How a drain ended: on time without force (the SLI's good events), forced at its deadline,
# failed at its deadline.
RESULTS = ("succeeded", "forced", "failed")
# How a move went: the instance stopped once its replacement was ready (make-before-break) or
# before it (stop-before-start), stopped at the deadline (forced), a daemon stopped, or the
# write refused as made from a stale read (made again).
MOVE_RESULTS = ("replaced", "stopped_first", "forced", "daemon", "stale")
# A drain of a host takes seconds to an hour.
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


@dataclass(frozen=True)
class Running:
    """One running drain's figures, as the controller last saw them."""

    remaining: int
    blocked: int
    eta_s: float | None
    blocked_s: float  # how long it has been blocked with no move finishing (0: not blocked)
    overdue_s: float  # how long past its deadline it still runs (0: not past it)


class DrainMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.operations = Gauge(
            "keel_operations",
            "Operations kept, by kind (drain) and state (PENDING, RUNNING, SUCCEEDED, FAILED, "
            "CANCELLED); 0 on a replica that does not lead.",
            ["kind", "state"],
            registry=r,
        )
        self.remaining = Gauge(
            "keel_drain_remaining_instances",
            "Instances still on the hosts of running drains that the drains must move or stop.",
            registry=r,
        )
        self.blocked = Gauge(
            "keel_drain_blocked_instances",
            "Instances running drains cannot move now (each has a blocker: keelctl op get).",
            registry=r,
        )
        self.eta = Gauge(
            "keel_drain_eta_seconds",
            "The longest estimated time left of a running drain (0 when none runs or none "
            "can say: a blocked drain has no estimate).",
            registry=r,
        )
        self.blocked_for = Gauge(
            "keel_drain_blocked_seconds",
            "How long the longest-blocked running drain has had blockers with no move finishing "
            "(0 when none is blocked).",
            registry=r,
        )
        self.overdue = Gauge(
            "keel_drain_overdue_seconds",
            "How long the running drain furthest past its deadline has been past it (0 when "
            "none is: a drain ends at its deadline, so this means it cannot).",
            registry=r,
        )
        self.duration = Histogram(
            "keel_drain_duration_seconds",
            "Duration of finished drains, from start to end, by result (succeeded: by the "
            "deadline without force; forced; failed at the deadline). Cancelled drains are not "
            "counted.",
            ["result"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.moves = Counter(
            "keel_drain_moves_total",
            "Moves drains wrote, by result (replaced, stopped_first, forced, daemon, stale).",
            ["result"],
            registry=r,
        )
        for kind in KINDS:
            for state in STATES:
                self.operations.labels(kind, state)
        for result in RESULTS:
            self.duration.labels(result)
        for result in MOVE_RESULTS:
            self.moves.labels(result)

    def set_operations(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Operations by (kind, state); every known pair not in counts is 0."""
        for kind in KINDS:
            for state in STATES:
                self.operations.labels(kind, state).set(counts.get((kind, state), 0))

    def set_running(self, drains: Iterable[Running]) -> None:
        running = list(drains)
        self.remaining.set(sum(d.remaining for d in running))
        self.blocked.set(sum(d.blocked for d in running))
        self.eta.set(max((d.eta_s for d in running if d.eta_s is not None), default=0.0))
        self.blocked_for.set(max((d.blocked_s for d in running), default=0.0))
        self.overdue.set(max((d.overdue_s for d in running), default=0.0))

    def observe_finished(self, result: str, seconds: float) -> None:
        self.duration.labels(result).observe(max(0.0, seconds))

    def count_moves(self, result: str, n: int = 1) -> None:
        if n:
            self.moves.labels(result).inc(n)
