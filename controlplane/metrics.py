"""The control plane's Prometheus metrics and the HTTP endpoint that serves them.

`Metrics` holds every control-plane metric of issue 3 on a registry of its own (so tests can
build as many as they like, and nothing else in the process leaks into the endpoint). Who feeds
what:
- the gRPC interceptor (`controlplane.interceptors`): `observe_rpc`;
- the reconcile runner's outcome handler (`controlplane.reconcile`): `observe_reconcile`,
  `count_retry`, and `track_queue_depth` / `track_queue_oldest` for its work queues;
- the store's convergence tracking: `count_changes` at commit, `observe_convergence` when a
  report shows a change converged, `count_slow` once per change that passes 60 s;
- the periodic database scan: `set_hosts`, `set_backlog`, `set_stuck`;
- main.py: `track_sync_streams` with the agent stream registry, `set_database_up` from the
  database probe;
- the heartbeat writer (`controlplane.heartbeats`): `observe_heartbeat_batch` per batch written,
  `drop_heartbeat` for those it could not write while the database is away.

No metric carries a host, instance or workload name: the label sets stay small however large
the fleet. Label values that are known in advance are created at start-up so every series is
exported (at 0) from the first scrape; `rate()` and absent-series alerts need that.

`serve_metrics` starts prometheus-client's threaded HTTP server for `--metrics HOST:PORT`
(port 0 picks a free port; the bound address is returned for addresses.json).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from wsgiref.types import WSGIApplication

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from controlplane.drain_metrics import DrainMetrics
from controlplane.errors import KeelError
from controlplane.freeze_metrics import FreezeMetrics
from controlplane.growth_metrics import GrowthMetrics
from controlplane.rollout_metrics import RolloutMetrics
from keel import endpoint
from keel.endpoint import CONVERGENCE_BUCKETS
from keel.model import Change, HostState
from keel.stuck import Reason

# One reconcile pass is a few queries; 10 s would already be an outage.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Unary calls are milliseconds; streams (agent Sync, logs -f) live for minutes to days.
RPC_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
    600.0,
    3600.0,
)

# Heartbeats per batch: 1 on a quiet fleet; thousands when a write waits on a busy database.
HEARTBEAT_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

CHANGES = tuple(Change)
KINDS = ("instance", "workload")
CONTROLLERS = ("workload", "liveness", "stuck", "drain", "retention", "rollout")
RESULTS = ("success", "error")
HOST_STATES = tuple(s.value for s in HostState)
CACHE_KINDS = ("workload", "instance", "host")
DEFAULT_ADDRESS = "127.0.0.1:9464"


# revoked_open: a streaming call open when its token was revoked, ended then (revocation.py).
AUTH_DENIED_REASONS = (
    "missing", "malformed", "unknown", "revoked", "role", "host", "unlisted", "revoked_open",
)  # fmt: skip


class MetricsError(KeelError):
    """The --metrics address is not HOST:PORT or off."""


def _bool_label(value: bool) -> str:
    return "true" if value else "false"


class Metrics:
    """Every control-plane metric, on `self.registry`; see the module docstring for who sets what.

    The attributes are the prometheus-client objects themselves (for tests and for anything the
    methods do not cover); callers should prefer the methods, which keep label values in the
    documented sets.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        # The `_created` companion series double the exposition and no rule or panel uses them.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        r = self.registry = registry if registry is not None else CollectorRegistry()

        self.convergence = Histogram(
            "keel_convergence_seconds",
            "Time from when a desired change became desired (the operator's write of the "
            "workload for an apply, a scale or a delete; the fencing decision for a "
            "replacement; database time) to the report that shows it converged, by change "
            "(create, stop, remove). Time waiting in the control plane's queue counts.",
            ["change"],
            buckets=CONVERGENCE_BUCKETS,
            registry=r,
        )
        self.changes = Counter(
            "keel_changes_total",
            "Desired changes committed, by change (create, stop, remove).",
            ["change"],
            registry=r,
        )
        self.changes_slow = Counter(
            "keel_changes_slow_total",
            "Desired changes still unconverged 60 s after they became desired, counted once "
            "each whether they converge later or never.",
            ["change"],
            registry=r,
        )
        self.unconverged = Gauge(
            "keel_unconverged_objects",
            "Objects whose observed state does not yet match their desired state, by kind "
            "(instance, workload).",
            ["kind"],
            registry=r,
        )
        self.oldest_unconverged = Gauge(
            "keel_oldest_unconverged_seconds",
            "Age of the oldest unconverged desired change (0 when everything has converged).",
            registry=r,
        )
        self.reconcile_total = Counter(
            "keel_reconcile_total",
            "Controller reconcile passes, by controller and result (success, error).",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "keel_reconcile_duration_seconds",
            "Duration of one controller reconcile pass, by controller.",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_retries = Counter(
            "keel_reconcile_retries_total",
            "Reconcile passes that failed and were scheduled again with back-off, by controller.",
            ["controller"],
            registry=r,
        )
        self.workqueue_depth = Gauge(
            "keel_workqueue_depth",
            "Keys waiting in a controller's work queue (not counting those being processed).",
            ["controller"],
            registry=r,
        )
        self.workqueue_oldest = Gauge(
            "keel_workqueue_oldest_seconds",
            "How long the longest-waiting key in a controller's work queue has waited (0 when "
            "the queue is empty).",
            ["controller"],
            registry=r,
        )
        self.stuck = Gauge(
            "keel_stuck_objects",
            "Instances and workloads currently stuck, by reason.",
            ["reason"],
            registry=r,
        )
        self.hosts = Gauge(
            "keel_hosts",
            "Hosts by liveness state (READY, NOT_READY, UNKNOWN) and whether they accept new "
            "instances (schedulable: true, false).",
            ["state", "schedulable"],
            registry=r,
        )
        self.sync_streams = Gauge(
            "keel_sync_streams",
            "Agent Sync streams open on this control-plane replica.",
            registry=r,
        )
        self.secrets_unopenable = Counter(
            "keel_secret_open_failures_total",
            "secret_env values this replica could not open for an agent's assignment (a key "
            "missing from its key file, or an altered value): the host's stream fails.",
            registry=r,
        )
        self.heartbeats_dropped = Counter(
            "keel_heartbeats_dropped_total",
            "Agent heartbeats that could not be recorded because the database was unavailable "
            "(the stream stays open; the next heartbeat that lands counts).",
            registry=r,
        )
        self.requests_replayed = Counter(
            "keel_requests_replayed_total",
            "Mutating calls answered from the record of an earlier attempt with the same request "
            "id (keel-request-id): a retry of a write that had committed, not applied twice.",
            ["method"],
            registry=r,
        )
        self.request_records_pruned = Counter(
            "keel_request_records_pruned_total",
            "Request-id records deleted for being older than --request-retention.",
            registry=r,
        )
        self.heartbeat_batch_size = Histogram(
            "keel_heartbeat_batch_size",
            "Heartbeats written per batch (one statement each; a batch goes out as soon as the "
            "previous one committed, so it grows with the load, not with a timer).",
            buckets=HEARTBEAT_BATCH_BUCKETS,
            registry=r,
        )
        self.heartbeat_flush_duration = Histogram(
            "keel_heartbeat_flush_duration_seconds",
            "Duration of one heartbeat batch write (the wait for a pooled connection included); "
            "a heartbeat waits at most about two of these before it is recorded.",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "keel_leader",
            "1 while this replica leads (holds the leader lock and runs the controllers), else 0.",
            registry=r,
        )
        self.database_up = Gauge(
            "keel_database_up",
            "1 while this replica's probe of Postgres answers within --db-probe-timeout, else 0 "
            "(FleetService health is NOT_SERVING meanwhile).",
            registry=r,
        )
        self.grpc_requests = Counter(
            "keel_grpc_requests_total",
            "gRPC calls served, by service, method and status code.",
            ["service", "method", "code"],
            registry=r,
        )
        self.grpc_duration = Histogram(
            "keel_grpc_request_duration_seconds",
            "Duration of served gRPC calls (streams: until they end), by service and method.",
            ["service", "method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        # The leader's in-memory cache of the fleet (controlplane.cache).
        self.cache_objects = Gauge(
            "keel_cache_objects",
            "Objects in the leader's in-memory cache of the fleet, by kind (workload, instance, "
            "host); 0 on a replica that does not lead.",
            ["kind"],
            registry=r,
        )
        self.cache_resyncs = Counter(
            "keel_cache_resyncs_total",
            "Resyncs of the leader's cache of the fleet: the full read when leadership starts, "
            "then every --resync-period and after notifications may have been lost (every host, "
            "and every workload whose version moved without the cache reading it).",
            registry=r,
        )
        self.loop_lag = Histogram(
            "keel_event_loop_lag_seconds",
            "How much later than due this replica's event loop ran a timer, sampled every "
            "--loop-probe-interval: every reconcile, push to an agent and operator call waits "
            "about this long for the core (saturation).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.cache_resync_duration = Histogram(
            "keel_cache_resync_duration_seconds",
            "Duration of one resync of the leader's cache of the fleet.",
            buckets=(*RECONCILE_BUCKETS, 30.0, 60.0),
            registry=r,
        )
        self.cache_stale_writes = Counter(
            "keel_cache_stale_writes_total",
            "Writes refused because what they were decided from had changed since it was read "
            "(a plan over an older workload version or host state, a liveness decision over an "
            "older heartbeat), by controller; the controller reads again and decides again.",
            ["controller"],
            registry=r,
        )
        self.liveness_brake = Gauge(
            "keel_liveness_brake_engaged",
            "1 while the mass-failure brake holds (more than --max-unready-share of the hosts "
            "not READY, or none READY): nothing is fenced or replaced; else 0. Set by the leader.",
            registry=r,
        )
        self.hosts_unready_share = Gauge(
            "keel_hosts_unready_share",
            "Share of the hosts that are not READY (0 to 1), as the leader's liveness last "
            "judged them.",
            registry=r,
        )
        for kind in CACHE_KINDS:
            self.cache_objects.labels(kind)
        for controller in CONTROLLERS:
            self.cache_stale_writes.labels(controller)
        self.auth_denied = Counter(
            "keel_auth_denied_total",
            "Calls refused by authentication or authorization (controlplane.auth), by reason: "
            "missing (no token), malformed, unknown (no such token, or a wrong secret), "
            "revoked, role (too low for the call), host (a host credential naming another "
            "host), unlisted (a method no role may call), revoked_open (a streaming call "
            "open when its token was revoked, closed then).",
            ["reason"],
            registry=r,
        )
        for reason in AUTH_DENIED_REASONS:
            self.auth_denied.labels(reason)
        # Operations and drains (controlplane.drain_metrics, fed by the drain controller).
        self.drain = DrainMetrics(r)
        # Retention and gone hosts (controlplane.growth_metrics).
        self.growth = GrowthMetrics(r)
        # The deploy freeze and its webhook (controlplane.freeze_metrics).
        self.freeze = FreezeMetrics(r)
        # Rollouts and automatic rollbacks (controlplane.rollout_metrics, fed by the rollout
        # controller).
        self.rollouts = RolloutMetrics(r)
        # Standard process_* and python_info series: memory, CPU, open fds of this replica.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self._stuck_reasons: set[str] = {str(reason) for reason in Reason}
        for change in CHANGES:
            self.convergence.labels(change)
            self.changes.labels(change)
            self.changes_slow.labels(change)
        for kind in KINDS:
            self.unconverged.labels(kind)
        for controller in CONTROLLERS:
            for result in RESULTS:
                self.reconcile_total.labels(controller, result)
            self.reconcile_duration.labels(controller)
            self.reconcile_retries.labels(controller)
            self.workqueue_depth.labels(controller)
            self.workqueue_oldest.labels(controller)
        for reason in self._stuck_reasons:
            self.stuck.labels(reason)
        for state in HOST_STATES:
            for schedulable in (True, False):
                self.hosts.labels(state, _bool_label(schedulable))

    # --- convergence (called by the store's convergence tracking) -----------------------------

    def count_changes(self, change: str, n: int = 1) -> None:
        """n desired changes of this kind (create|stop|remove) were committed."""
        if n:
            self.changes.labels(change).inc(n)

    def observe_convergence(self, change: str, seconds: float) -> None:
        """One change converged `seconds` after its commit (both database time)."""
        self.convergence.labels(change).observe(max(0.0, seconds))

    def count_slow(self, change: str, n: int = 1) -> None:
        """n changes passed 60 s unconverged (call once per change)."""
        if n:
            self.changes_slow.labels(change).inc(n)

    # --- gauges computed from the database (set by the periodic scan) -------------------------

    def set_backlog(self, instances: int, workloads: int, oldest_s: float) -> None:
        """The unconverged backlog: counts by kind and the age of its oldest change (0 if none)."""
        self.unconverged.labels("instance").set(instances)
        self.unconverged.labels("workload").set(workloads)
        self.oldest_unconverged.set(max(0.0, oldest_s))

    def set_hosts(self, counts: Mapping[tuple[str, bool], int]) -> None:
        """Hosts by (state, schedulable); every combination not in counts is set to 0."""
        seen: set[tuple[str, str]] = set()
        for (state, schedulable), n in counts.items():
            key = (str(state), _bool_label(schedulable))
            seen.add(key)
            self.hosts.labels(*key).set(n)
        for state in HOST_STATES:
            for schedulable in (True, False):
                key = (state, _bool_label(schedulable))
                if key not in seen:
                    self.hosts.labels(*key).set(0)

    def set_liveness_brake(self, engaged: bool, unready_share: float) -> None:
        self.liveness_brake.set(1 if engaged else 0)
        self.hosts_unready_share.set(unready_share)

    def set_stuck(self, counts: Mapping[str, int]) -> None:
        """Stuck objects by reason; every reason ever seen but not in counts is set to 0."""
        self._stuck_reasons.update(str(r) for r in counts)
        for reason in self._stuck_reasons:
            self.stuck.labels(reason).set(counts.get(reason, 0))

    # --- callbacks read at scrape time ---------------------------------------------------------

    def track_sync_streams(self, count: Callable[[], int]) -> None:
        """keel_sync_streams reads count() at each scrape (from the HTTP server's thread)."""
        self.sync_streams.set_function(lambda: float(count()))

    def track_queue_depth(self, controller: str, depth: Callable[[], int]) -> None:
        """keel_workqueue_depth{controller} reads depth() at each scrape."""
        self.workqueue_depth.labels(controller).set_function(lambda: float(depth()))

    def track_queue_oldest(self, controller: str, oldest_s: Callable[[], float]) -> None:
        """keel_workqueue_oldest_seconds{controller} reads oldest_s() at each scrape."""
        self.workqueue_oldest.labels(controller).set_function(lambda: float(oldest_s()))

    # --- controllers (called by their single outcome handler) ---------------------------------

    def observe_reconcile(self, controller: str, *, ok: bool, seconds: float) -> None:
        """One reconcile pass of controller ended, successfully or not, after seconds."""
        self.reconcile_total.labels(controller, "success" if ok else "error").inc()
        self.reconcile_duration.labels(controller).observe(seconds)

    def count_retry(self, controller: str) -> None:
        """A failed pass was scheduled again (with back-off)."""
        self.reconcile_retries.labels(controller).inc()

    # --- the leader's cache (controlplane.cache) -------------------------------------------------

    def track_cache(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """keel_cache_objects{kind} reads counts() (by kind; empty when not leading) at scrape."""

        def count_of(kind: str) -> Callable[[], float]:
            return lambda: float(counts().get(kind, 0))

        for kind in CACHE_KINDS:
            self.cache_objects.labels(kind).set_function(count_of(kind))

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def observe_cache_resync(self, seconds: float) -> None:
        self.cache_resyncs.inc()
        self.cache_resync_duration.observe(seconds)

    def count_secret_open_failure(self) -> None:
        self.secrets_unopenable.inc()

    def count_stale_write(self, controller: str) -> None:
        """A write of `controller` was refused: what it was decided from had changed."""
        self.cache_stale_writes.labels(controller).inc()

    # --- the database edge (agent streams and the health probe) -------------------------------

    def drop_heartbeat(self, n: int = 1) -> None:
        """Heartbeats could not be written (the database is unavailable)."""
        self.heartbeats_dropped.inc(n)

    def observe_heartbeat_batch(self, size: int, seconds: float) -> None:
        """A batch of `size` heartbeats was written in `seconds`."""
        self.heartbeat_batch_size.observe(size)
        self.heartbeat_flush_duration.observe(seconds)

    def count_replay(self, method: str) -> None:
        """A retried call was answered from its request id's record."""
        self.requests_replayed.labels(method).inc()

    def count_pruned_requests(self, n: int) -> None:
        self.request_records_pruned.inc(n)

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def set_database_up(self, up: bool) -> None:
        self.database_up.set(1 if up else 0)

    # --- gRPC (called by the server interceptor) ------------------------------------------------

    def count_auth_denied(self, reason: str) -> None:
        self.auth_denied.labels(reason).inc()

    def observe_rpc(self, service: str, method: str, code: str, seconds: float) -> None:
        """One call ended with status `code` (a grpc.StatusCode name, e.g. "OK", "NOT_FOUND")."""
        self.grpc_requests.labels(service, method, code).inc()
        self.grpc_duration.labels(service, method).observe(seconds)


# --- the HTTP endpoint ---------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int] | None:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) as (host, port); `off` as None."""
    try:
        return endpoint.parse_address(text, "--metrics")
    except endpoint.EndpointError as exc:
        raise MetricsError(str(exc)) from exc


format_address = endpoint.format_address
MetricsServer = endpoint.MetricsServer


def serve_metrics(
    metrics: Metrics,
    address: str,
    *,
    routes: Mapping[str, WSGIApplication] | None = None,
    read_timeout_s: float | None = None,
) -> MetricsServer | None:
    """Serves metrics.registry on address (`HOST:PORT`, port 0 = any free port, or `off`).

    The server answers scrapes on its own thread, so a busy event loop never delays a scrape
    (and the scrape reads gauges and callbacks that are safe to read from another thread).
    Raises MetricsError if the address is malformed or cannot be bound. `routes`: other
    paths it serves (the Alertmanager webhook: `alert_hook`).
    """
    parsed = parse_address(address)
    if parsed is None:
        return None
    try:
        return endpoint.serve_metrics(
            metrics.registry, *parsed, routes=routes, read_timeout_s=read_timeout_s
        )
    except endpoint.EndpointError as exc:
        raise MetricsError(str(exc)) from exc
