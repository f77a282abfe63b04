"""The rollouts' Prometheus metrics: workloads by the state of their current rollout, and the
rollbacks Keel made.

Registered on the control plane's registry by `metrics.Metrics` (its `rollouts` attribute); fed
by the rollout controller (`controlplane.rollouts`): `track_states` reads its counts at each
scrape (kept as each workload's state changes, so no label names a workload), `count_rollback`
once per automatic rollback, by the failure's reason. On a replica that does not lead the gauge
reads 0 (take the max over replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from controlplane.rollout_judge import FAILING, PROGRESS_DEADLINE, ROLLOUT_STATES

ROLLBACK_REASONS = (*FAILING, PROGRESS_DEADLINE)


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rollouts = Gauge(
            "keel_rollouts",
            "Workloads by the state of their current rollout: PROGRESSING, PAUSED, "
            "AWAITING_PROMOTION (a canary), COMPLETE, FAILED (held: needs an operator), "
            "ROLLED_BACK (Keel returned to the last revision that was fully ready). 0 on a "
            "replica that does not lead.",
            ["state"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "keel_rollbacks_total",
            "Rollouts Keel rolled back on its own (rollout.auto_rollback), by the failure's "
            "reason (START_FAILED, CRASH_LOOP, HEALTH_CHECK_FAILING, PROGRESS_DEADLINE).",
            ["reason"],
            registry=registry,
        )
        for state in ROLLOUT_STATES:
            self.rollouts.labels(state)
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(reason)

    def track_states(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """keel_rollouts{state} reads counts() (by state; empty when not leading) at scrape."""

        def count_of(state: str) -> Callable[[], float]:
            return lambda: float(counts().get(state, 0))

        for state in ROLLOUT_STATES:
            self.rollouts.labels(state).set_function(count_of(state))

    def count_rollback(self, reason: str) -> None:
        self.rollbacks.labels(reason).inc()
