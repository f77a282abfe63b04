"""The control plane's metrics: names, HELP, buckets and label sets exactly as issue 3 has them."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.metrics import (
    Metrics,
    MetricsError,
    format_address,
    parse_address,
    serve_metrics,
)
from keel.stuck import Reason

# (exposed name, type, label names), copied from issue 3.
EXPECTED = [
    ("keel_convergence_seconds", "histogram", {"change"}),
    ("keel_changes_total", "counter", {"change"}),
    ("keel_changes_slow_total", "counter", {"change"}),
    ("keel_unconverged_objects", "gauge", {"kind"}),
    ("keel_oldest_unconverged_seconds", "gauge", set()),
    ("keel_reconcile_total", "counter", {"controller", "result"}),
    ("keel_reconcile_duration_seconds", "histogram", {"controller"}),
    ("keel_reconcile_retries_total", "counter", {"controller"}),
    ("keel_workqueue_depth", "gauge", {"controller"}),
    ("keel_workqueue_oldest_seconds", "gauge", {"controller"}),
    ("keel_stuck_objects", "gauge", {"reason"}),
    ("keel_hosts", "gauge", {"state", "schedulable"}),
    ("keel_sync_streams", "gauge", set()),
    ("keel_grpc_requests_total", "counter", {"service", "method", "code"}),
    ("keel_grpc_request_duration_seconds", "histogram", {"service", "method"}),
    # The database edge: the health probe's verdict and heartbeats dropped while it is away.
    ("keel_database_up", "gauge", set()),
    ("keel_heartbeats_dropped_total", "counter", set()),
    ("keel_secret_open_failures_total", "counter", set()),
    ("keel_heartbeat_batch_size", "histogram", set()),
    ("keel_heartbeat_flush_duration_seconds", "histogram", set()),
    # The leader's cache of the fleet (controlplane.cache).
    ("keel_cache_objects", "gauge", {"kind"}),
    ("keel_cache_resyncs_total", "counter", set()),
    ("keel_cache_resync_duration_seconds", "histogram", set()),
    ("keel_cache_stale_writes_total", "counter", {"controller"}),
]
CONVERGENCE_BUCKETS = "0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 120 300 600"


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(("name", "kind", "labels"), EXPECTED)
def test_every_issue_metric_is_exposed_with_help_and_type(
    name: str, kind: str, labels: set[str]
) -> None:
    """Each metric named in issue 3 appears with a HELP line, its TYPE and its label names."""
    metrics = Metrics()
    metrics.observe_rpc("keel.v1.FleetService", "ListWorkloads", "OK", 0.01)
    text = exposition(metrics)
    base = name.removesuffix("_total") if kind == "counter" else name
    help_lines = [line for line in text.splitlines() if line.startswith(f"# HELP {name} ")]
    assert help_lines and len(help_lines[0]) > len(f"# HELP {name} ") + 10
    assert f"# TYPE {name} {kind}" in text
    family = next(f for f in text_string_to_metric_families(text) if f.name == base)
    assert family.samples, f"{name} has no series"
    for sample in family.samples:
        assert set(sample.labels) - {"le"} == labels


def test_no_metric_carries_a_per_object_label() -> None:
    """No host, instance or workload label: the series count does not grow with the fleet."""
    text = exposition(Metrics())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert not {"host", "instance", "workload"} & set(sample.labels), sample


def test_convergence_histogram_has_exactly_the_issue_buckets() -> None:
    """keel_convergence_seconds buckets are the issue's list (60 s, the SLO, among them)."""
    metrics = Metrics()
    les = [
        s.labels["le"]
        for f in text_string_to_metric_families(exposition(metrics))
        if f.name == "keel_convergence_seconds"
        for s in f.samples
        if s.name.endswith("_bucket") and s.labels["change"] == "create"
    ]
    assert [float(le) for le in les] == [
        *(float(b) for b in CONVERGENCE_BUCKETS.split()),
        float("inf"),
    ]


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        *[("keel_changes_total", {"change": c}) for c in ("create", "stop", "remove")],
        *[("keel_changes_slow_total", {"change": c}) for c in ("create", "stop", "remove")],
        *[("keel_convergence_seconds_count", {"change": c}) for c in ("create", "stop", "remove")],
        *[("keel_unconverged_objects", {"kind": k}) for k in ("instance", "workload")],
        *[
            ("keel_reconcile_total", {"controller": c, "result": r})
            for c in ("workload", "liveness", "stuck")
            for r in ("success", "error")
        ],
        *[
            ("keel_reconcile_retries_total", {"controller": c})
            for c in ("workload", "liveness", "stuck")
        ],
        *[("keel_workqueue_depth", {"controller": c}) for c in ("workload", "liveness", "stuck")],
        *[
            ("keel_workqueue_oldest_seconds", {"controller": c})
            for c in ("workload", "liveness", "stuck")
        ],
        *[("keel_stuck_objects", {"reason": str(r)}) for r in Reason],
        *[
            ("keel_hosts", {"state": s, "schedulable": b})
            for s in ("READY", "NOT_READY", "UNKNOWN")
            for b in ("true", "false")
        ],
        ("keel_oldest_unconverged_seconds", {}),
        ("keel_sync_streams", {}),
        *[("keel_cache_objects", {"kind": k}) for k in ("workload", "instance", "host")],
        *[
            ("keel_cache_stale_writes_total", {"controller": c})
            for c in ("workload", "liveness", "stuck")
        ],
        ("keel_cache_resyncs_total", {}),
    ],
)
def test_known_series_exist_at_zero_from_the_start(name: str, labels: dict[str, str]) -> None:
    """Series whose label values are known are exported at 0 before anything happens."""
    assert value(Metrics(), name, **labels) == 0.0


def test_recording_methods_update_their_series() -> None:
    """The methods the store, controllers and interceptor call move the documented series."""
    m = Metrics()
    m.count_changes("create", 3)
    m.count_changes("stop", 0)
    m.observe_convergence("create", 0.3)
    m.count_slow("remove")
    m.observe_reconcile("workload", ok=False, seconds=0.002)
    m.count_retry("workload")
    m.observe_rpc("keel.v1.FleetService", "GetHost", "NOT_FOUND", 0.004)
    assert value(m, "keel_changes_total", change="create") == 3
    assert value(m, "keel_changes_total", change="stop") == 0
    assert value(m, "keel_convergence_seconds_bucket", change="create", le="0.25") == 0
    assert value(m, "keel_convergence_seconds_bucket", change="create", le="0.5") == 1
    assert value(m, "keel_changes_slow_total", change="remove") == 1
    assert value(m, "keel_reconcile_total", controller="workload", result="error") == 1
    assert value(m, "keel_reconcile_duration_seconds_count", controller="workload") == 1
    assert value(m, "keel_reconcile_retries_total", controller="workload") == 1
    labels = {"service": "keel.v1.FleetService", "method": "GetHost"}
    assert value(m, "keel_grpc_requests_total", **labels, code="NOT_FOUND") == 1
    assert value(m, "keel_grpc_request_duration_seconds_count", **labels) == 1


def test_database_gauges_reset_what_is_no_longer_counted() -> None:
    """set_hosts/set_stuck zero the combinations absent from a scan; set_backlog sets all three."""
    m = Metrics()
    m.set_hosts({("READY", True): 3, ("NOT_READY", False): 1})
    m.set_stuck({"CRASH_LOOP": 2, "DRAIN_BLOCKED": 1})
    m.set_backlog(4, 1, 12.5)
    assert value(m, "keel_hosts", state="READY", schedulable="true") == 3
    assert value(m, "keel_hosts", state="NOT_READY", schedulable="false") == 1
    assert value(m, "keel_stuck_objects", reason="DRAIN_BLOCKED") == 1
    assert value(m, "keel_unconverged_objects", kind="instance") == 4
    assert value(m, "keel_unconverged_objects", kind="workload") == 1
    assert value(m, "keel_oldest_unconverged_seconds") == 12.5
    m.set_hosts({("READY", True): 2})
    m.set_stuck({})
    m.set_backlog(0, 0, 0.0)
    assert value(m, "keel_hosts", state="READY", schedulable="true") == 2
    assert value(m, "keel_hosts", state="NOT_READY", schedulable="false") == 0
    assert value(m, "keel_stuck_objects", reason="CRASH_LOOP") == 0
    assert value(m, "keel_stuck_objects", reason="DRAIN_BLOCKED") == 0
    assert value(m, "keel_oldest_unconverged_seconds") == 0


def test_the_database_edge_metrics_follow_their_calls() -> None:
    """set_database_up flips keel_database_up; drop_heartbeat counts."""
    m = Metrics()
    m.set_database_up(True)
    assert value(m, "keel_database_up") == 1
    m.set_database_up(False)
    m.drop_heartbeat()
    m.drop_heartbeat()
    assert value(m, "keel_database_up") == 0
    assert value(m, "keel_heartbeats_dropped_total") == 2


def test_callback_gauges_read_their_source_at_scrape_time() -> None:
    """keel_sync_streams, keel_workqueue_depth and _oldest_seconds follow their callbacks."""
    m = Metrics()
    streams = [1, 2]
    queue = ["a"]
    m.track_sync_streams(lambda: len(streams))
    m.track_queue_depth("workload", lambda: len(queue))
    m.track_queue_oldest("workload", lambda: 2.5 * len(queue))
    assert value(m, "keel_workqueue_oldest_seconds", controller="workload") == 2.5
    assert value(m, "keel_sync_streams") == 2
    assert value(m, "keel_workqueue_depth", controller="workload") == 1
    streams.append(3)
    queue.clear()
    assert value(m, "keel_sync_streams") == 3
    assert value(m, "keel_workqueue_depth", controller="workload") == 0


def test_the_cache_metrics_follow_the_cache() -> None:
    """keel_cache_objects reads the cache's counts at scrape time (0 when it holds nothing);
    resyncs and stale writes count their calls."""
    m = Metrics()
    counts: dict[str, int] = {}
    m.track_cache(lambda: counts)
    assert value(m, "keel_cache_objects", kind="instance") == 0
    counts.update(workload=2, instance=7, host=3)
    assert value(m, "keel_cache_objects", kind="instance") == 7
    assert value(m, "keel_cache_objects", kind="host") == 3
    m.observe_cache_resync(0.3)
    m.observe_cache_resync(1.7)
    m.count_stale_write("workload")
    assert value(m, "keel_cache_resyncs_total") == 2
    assert value(m, "keel_cache_resync_duration_seconds_sum") == 2.0
    assert value(m, "keel_cache_stale_writes_total", controller="workload") == 1
    assert value(m, "keel_cache_stale_writes_total", controller="liveness") == 0


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two Metrics (two controllers in one test) never clash on metric names."""
    a, b = Metrics(), Metrics(registry=CollectorRegistry())
    a.count_changes("create")
    assert value(a, "keel_changes_total", change="create") == 1
    assert value(b, "keel_changes_total", change="create") == 0


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:9464", ("::1", 9464)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_metrics_address_parses(text: str, parsed: tuple[str, int] | None) -> None:
    """--metrics takes HOST:PORT (IPv6 in brackets) or off."""
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["9464", ":9464", "host:", "host:port", "host:70000", ""])
def test_metrics_address_rejects_malformed(text: str) -> None:
    """Anything but HOST:PORT or off is refused with a message naming the flag."""
    with pytest.raises(MetricsError, match="--metrics"):
        parse_address(text)


def test_format_address_brackets_ipv6() -> None:
    """The recorded address can be split again: IPv6 hosts are bracketed."""
    assert format_address("::1", 9) == "[::1]:9"
    assert format_address("127.0.0.1", 9) == "127.0.0.1:9"


def test_metrics_server_on_port_zero_serves_and_reports_its_port() -> None:
    """Port 0 binds a free port, reported in the address; /metrics answers; close stops it."""
    m = Metrics()
    server = serve_metrics(m, "127.0.0.1:0")
    assert server is not None
    try:
        host, port = server.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert "# HELP keel_convergence_seconds " in body
    finally:
        server.close()


def test_metrics_off_serves_nothing() -> None:
    """--metrics off: no server."""
    assert serve_metrics(Metrics(), "off") is None


def test_metrics_server_on_a_taken_port_fails_clearly() -> None:
    """A port already in use is a MetricsError naming the address, not a traceback."""
    m = Metrics()
    first = serve_metrics(m, "127.0.0.1:0")
    assert first is not None
    try:
        with pytest.raises(MetricsError, match=first.address):
            serve_metrics(m, first.address)
    finally:
        first.close()
