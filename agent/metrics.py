"""The agent's Prometheus metrics and its `/metrics` endpoint (--metrics HOST:PORT).

Every metric lives in a registry of its own (not prometheus_client's global one), so a test can
run several agents in one process. They are updated in two places only: the reconciler's
outcome handler after every pass (`pass_done`, with a `PassOutcome`) and after every start
(`started`), and the sync client's connection handler (`connection` / `heard_from_controlplane`);
keel_agent_disconnected_seconds is computed from the latter when scraped.
The README's metrics table explains each and names the alert that uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.convergence import CHANGES, Converged
from agent.stuck import AGENT_REASONS
from keel.endpoint import CONVERGENCE_BUCKETS
from keel.model import Phase

NAMES = (
    "keel_agent_convergence_seconds",
    "keel_agent_unconverged_instances",
    "keel_agent_oldest_unconverged_seconds",
    "keel_agent_reconcile_total",
    "keel_agent_reconcile_retries_total",
    "keel_agent_workload_restarts_total",
    "keel_agent_instances",
    "keel_agent_stuck_instances",
    "keel_agent_connected",
    "keel_agent_last_sync_timestamp_seconds",
    "keel_agent_disconnected_seconds",
    "keel_agent_desired_revision",
)


@dataclass(frozen=True)
class PassOutcome:
    """What one reconcile pass found and did, for the metrics."""

    ok: bool
    retries: int  # actions that retry something that failed before
    converged: list[Converged] = field(default_factory=list)
    unconverged: int = 0
    oldest_unconverged_s: float = 0.0
    phases: Mapping[Phase, int] = field(default_factory=dict)
    stuck: Mapping[str, int] = field(default_factory=dict)  # reason -> instances
    revision: int = 0


class AgentMetrics:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Until the first stream opens the agent runs on what local state holds: it counts as
        # disconnected since it started.
        self._down_since: float | None = clock()
        r = self.registry = CollectorRegistry()
        self.convergence = Histogram(
            "keel_agent_convergence_seconds",
            "Seconds from the agent receiving a desired change to its instance matching it "
            "(create: running and ready; stop: stopped; remove: stopped and confirmed).",
            ["change"],
            buckets=CONVERGENCE_BUCKETS,
            registry=r,
        )
        self.unconverged = Gauge(
            "keel_agent_unconverged_instances",
            "Desired instances on this host whose actual state does not match yet.",
            registry=r,
        )
        self.oldest_unconverged = Gauge(
            "keel_agent_oldest_unconverged_seconds",
            "Age in seconds of the oldest unconverged desired instance on this host (0: none).",
            registry=r,
        )
        self.reconcile = Counter(
            "keel_agent_reconcile_total",
            "Reconcile passes of the agent, by result (success or error).",
            ["result"],
            registry=r,
        )
        self.retries = Counter(
            "keel_agent_reconcile_retries_total",
            "Actions the agent retried after a failure (a start after a start failure).",
            registry=r,
        )
        self.restarts = Counter(
            "keel_agent_workload_restarts_total",
            "Workload processes the agent restarted after they exited.",
            registry=r,
        )
        self.instances = Gauge(
            "keel_agent_instances",
            "Desired instances on this host by observed phase.",
            ["phase"],
            registry=r,
        )
        self.stuck = Gauge(
            "keel_agent_stuck_instances",
            "Instances this agent itself reports stuck, by reason.",
            ["reason"],
            registry=r,
        )
        self.connected = Gauge(
            "keel_agent_connected",
            "1 while the agent has its stream to the control plane open, else 0.",
            registry=r,
        )
        self.last_sync = Gauge(
            "keel_agent_last_sync_timestamp_seconds",
            "Unix time of the last message received from the control plane (0: never).",
            registry=r,
        )
        self.disconnected = Gauge(
            "keel_agent_disconnected_seconds",
            "Seconds since the stream to the control plane was lost (since the agent started, "
            "before its first stream); 0 while connected. How long this host has been running "
            "its last known desired state.",
            registry=r,
        )
        # Computed at scrape time, so it grows between the agent's own updates.
        self.disconnected.set_function(self._disconnected_s)
        self.revision = Gauge(
            "keel_agent_desired_revision",
            "The desired-state revision the agent holds and runs.",
            registry=r,
        )
        # Every label value exists from the start, so rates and alerts see zeros, not gaps.
        for change in CHANGES:
            self.convergence.labels(change)
        for result in ("success", "error"):
            self.reconcile.labels(result)
        for phase in Phase:
            self.instances.labels(phase.value)
        for reason in AGENT_REASONS:
            self.stuck.labels(reason.value)

    # Outcome handlers ------------------------------------------------------------------------

    def pass_done(self, o: PassOutcome) -> None:
        self.reconcile.labels("success" if o.ok else "error").inc()
        if o.retries:
            self.retries.inc(o.retries)
        for c in o.converged:
            self.convergence.labels(c.change).observe(c.seconds)
        self.unconverged.set(o.unconverged)
        self.oldest_unconverged.set(o.oldest_unconverged_s)
        for phase in Phase:
            self.instances.labels(phase.value).set(o.phases.get(phase, 0))
        for reason in {*(r.value for r in AGENT_REASONS), *o.stuck}:
            self.stuck.labels(reason).set(o.stuck.get(reason, 0))
        self.revision.set(o.revision)

    def started(self, *, restart: bool) -> None:
        if restart:
            self.restarts.inc()

    def connection(self, up: bool, *, at: float) -> None:
        self.connected.set(1 if up else 0)
        self._down_since = None if up else at
        if up:
            self.last_sync.set(at)

    def _disconnected_s(self) -> float:
        down_since = self._down_since
        return 0.0 if down_since is None else max(0.0, self._clock() - down_since)

    def heard_from_controlplane(self, at: float) -> None:
        self.last_sync.set(at)
