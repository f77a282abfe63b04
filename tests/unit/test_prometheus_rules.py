"""The Prometheus rules, their promtool unit tests and the Grafana dashboard stay valid and honest.

Runs promtool (`check rules`, `test rules`, `check config`) on deploy/prometheus/, so a broken
rule or a failing rule test fails the suite with promtool's own output; `make test` installs
promtool first (deploy/prometheus/ensure-promtool). Also checks what promtool does not: every
alert's labels and annotations, that every alert is tested both firing and not firing, that
rules and panels use only the metric names issue 3 fixes, and that deploy/grafana/keel.json is a
dashboard with the panels an operator needs. Runbook links are tested in test_runbooks.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RECORDING = PROMETHEUS / "recording.rules.yml"
ALERTS = PROMETHEUS / "alerts.rules.yml"
RULE_FILES = (RECORDING, ALERTS)
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "keel.json"

# The metric names fixed by issue 3 (control plane, then agent). Nothing else may be queried.
CONTROL_PLANE_METRICS = frozenset(
    {
        "keel_convergence_seconds",
        "keel_changes_total",
        "keel_changes_slow_total",
        "keel_unconverged_objects",
        "keel_oldest_unconverged_seconds",
        "keel_reconcile_total",
        "keel_reconcile_duration_seconds",
        "keel_reconcile_retries_total",
        "keel_workqueue_depth",
        "keel_workqueue_oldest_seconds",
        "keel_stuck_objects",
        "keel_hosts",
        "keel_sync_streams",
        "keel_grpc_requests_total",
        "keel_grpc_request_duration_seconds",
        "keel_database_up",
        "keel_heartbeats_dropped_total",
        # Sealed secret_env values a replica could not open (the security issue).
        "keel_secret_open_failures_total",
        # Request ids (controlplane/idempotency.py).
        "keel_requests_replayed_total",
        "keel_request_records_pruned_total",
        # The leader's cache of the fleet (the scale issue).
        "keel_cache_objects",
        "keel_cache_resyncs_total",
        "keel_cache_resync_duration_seconds",
        "keel_cache_stale_writes_total",
        # Saturation of a replica's event loop.
        "keel_event_loop_lag_seconds",
        # Heartbeats written in batches (the scale issue).
        "keel_heartbeat_batch_size",
        "keel_heartbeat_flush_duration_seconds",
        # Operations and drains (the cordon/drain issue).
        "keel_leader",
        "keel_operations",
        "keel_drain_remaining_instances",
        "keel_drain_blocked_instances",
        "keel_drain_eta_seconds",
        "keel_drain_blocked_seconds",
        "keel_drain_overdue_seconds",
        "keel_drain_duration_seconds",
        "keel_drain_moves_total",
        "keel_auth_denied_total",
        # The mass-failure brake (issue 9: liveness without self-inflicted outages).
        "keel_liveness_brake_engaged",
        "keel_hosts_unready_share",
        # Bounded growth: retention and gone hosts.
        "keel_pruned_rows_total",
        "keel_hosts_gone",
        # The deploy freeze and its Alertmanager webhook (controlplane/freeze_metrics.py).
        "keel_deploy_frozen",
        "keel_deploy_frozen_since_seconds",
        "keel_deploy_freezes",
        "keel_alert_webhook_requests_total",
        # Rollouts and automatic rollbacks (change management).
        "keel_rollouts",
        "keel_rollbacks_total",
    }
)
AGENT_METRICS = frozenset(
    {
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
    }
)
KNOWN_METRICS = CONTROL_PLANE_METRICS | AGENT_METRICS
HISTOGRAMS = frozenset(
    {
        "keel_convergence_seconds",
        "keel_reconcile_duration_seconds",
        "keel_grpc_request_duration_seconds",
        "keel_agent_convergence_seconds",
        "keel_cache_resync_duration_seconds",
        "keel_event_loop_lag_seconds",
        "keel_heartbeat_batch_size",
        "keel_heartbeat_flush_duration_seconds",
        "keel_drain_duration_seconds",
    }
)
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
SLI_WINDOWS = ("5m", "30m", "1h", "6h", "1d", "3d", "30d")
SEVERITIES = frozenset({"page", "ticket"})

_METRIC = re.compile(r"\bkeel_[a-z0-9_]+")
_RECORDED = re.compile(r"\bkeel:[a-zA-Z0-9_:]+")


def load_rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for path in RULE_FILES for r in load_rules(path) if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for path in RULE_FILES for r in load_rules(path) if "record" in r}


def rule_id(rule: dict[str, Any]) -> str:
    labels = rule.get("labels", {})
    extra = "-".join(str(labels[k]) for k in ("component", "long_window") if k in labels)
    return "-".join(filter(None, [rule.get("alert") or rule.get("record"), extra]))


def unknown_names(expr: str, recorded: set[str]) -> list[str]:
    """The keel_ and keel: names in expr that are neither issue-3 metrics nor recording rules."""
    unknown = []
    for name in _METRIC.findall(expr):
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), "")
        if name not in KNOWN_METRICS and base not in HISTOGRAMS:
            unknown.append(name)
    unknown += [name for name in _RECORDED.findall(expr) if name not in recorded]
    return unknown


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run deploy/prometheus/ensure-promtool (make test does), "
            "or: apt-get install --no-install-recommends prometheus"
        )
    return path


def run_promtool(promtool: str, *args: str | Path) -> None:
    """Run promtool; on failure, fail with everything it printed."""
    argv = [promtool, *map(str, args)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (
        f"{' '.join(argv[1:])} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )


# --- promtool ----------------------------------------------------------------------------------


def test_promtool_accepts_the_rule_files(promtool: str) -> None:
    """`promtool check rules` passes on the recording and alerting rules (syntax and lint)."""
    run_promtool(promtool, "check", "rules", *RULE_FILES)


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """`promtool test rules` passes on every file under deploy/prometheus/tests/."""
    assert RULE_TESTS, "no promtool tests under deploy/prometheus/tests/"
    run_promtool(promtool, "test", "rules", *RULE_TESTS)


def test_promtool_accepts_the_sample_prometheus_config(promtool: str) -> None:
    """The sample prometheus.yml is valid and loads both rule files."""
    run_promtool(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert sorted(config["rule_files"]) == sorted(p.name for p in RULE_FILES)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"keel-controlplane", "keel-agent"}


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    """Each dashboard expression is valid PromQL (checked as a recording rule by promtool)."""
    rules = [{"record": f"dashboard:expr_{n}", "expr": e} for n, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", path)


# --- alert rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_every_alert_has_a_severity_and_the_operator_annotations(rule: dict[str, Any]) -> None:
    """severity is page or ticket; summary, description and runbook_url are all there."""
    assert rule.get("labels", {}).get("severity") in SEVERITIES, rule_id(rule)
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule_id(rule)} has no {key}"


def test_every_alert_fires_and_stays_quiet_in_a_promtool_test() -> None:
    """Each alert rule fires in some test (its labels matched) and some test expects silence."""
    fired: list[dict[str, str]] = []  # exp_labels with alertname
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if not expected:
                    quiet.add(check["alertname"])
                for alert in expected:
                    labels = {k: str(v) for k, v in alert.get("exp_labels", {}).items()}
                    fired.append({**labels, "alertname": check["alertname"]})
    for rule in alert_rules():
        want = {k: str(v) for k, v in rule.get("labels", {}).items()} | {"alertname": rule["alert"]}
        assert any(want.items() <= got.items() for got in fired), f"{rule_id(rule)} never fires"
        assert rule["alert"] in quiet, f"{rule['alert']} is never tested not firing"


@pytest.mark.parametrize(
    ("severity", "burn", "long", "short"),
    [
        ("page", "14.4", "1h", "5m"),
        ("page", "6", "6h", "30m"),
        ("ticket", "1", "3d", "6h"),
    ],
)
def test_burn_rate_alerts_follow_the_sre_workbook(
    severity: str, burn: str, long: str, short: str
) -> None:
    """Each burn-rate rule needs both its windows above burn x the 1% error budget."""
    rules = [
        r
        for r in alert_rules()
        if r["alert"] == "KeelConvergenceErrorBudgetBurn" and r["labels"]["long_window"] == long
    ]
    assert len(rules) == 1
    (rule,) = rules
    # The pages also freeze deploys (deploy/alertmanager/, docs/slos.md's budget policy).
    freeze = {"keel_action": "freeze"} if severity == "page" else {}
    assert rule["labels"] == {
        "severity": severity,
        "long_window": long,
        "short_window": short,
        "burn_rate": burn,
        **freeze,
    }
    expr = " ".join(rule["expr"].split())
    assert expr == (
        f"keel:convergence_error_ratio:rate{long} > ({burn} * 0.01) and "
        f"keel:convergence_error_ratio:rate{short} > ({burn} * 0.01)"
    )
    assert "for" not in rule, "the short window already debounces a burn-rate alert"


# --- metric names ------------------------------------------------------------------------------


def test_recording_rules_cover_every_sli_window_and_percentile() -> None:
    """The error ratio is recorded for every window, and p50/p90/p99 latency per change."""
    recorded = recorded_names()
    for window in SLI_WINDOWS:
        assert f"keel:convergence_error_ratio:rate{window}" in recorded
    for q in ("p50", "p90", "p99"):
        assert f"keel:convergence_seconds:{q}_rate5m" in recorded


@pytest.mark.parametrize("rule", [r for path in RULE_FILES for r in load_rules(path)], ids=rule_id)
def test_rules_use_only_known_metrics(rule: dict[str, Any]) -> None:
    """Every keel_ name is an issue-3 metric (histogram suffixes allowed), every keel: recorded."""
    assert not unknown_names(rule["expr"], recorded_names()), rule["expr"]


@pytest.mark.parametrize(
    ("expr", "unknown"),
    [
        ("sum(rate(keel_changes_total[5m]))", []),
        ("rate(keel_convergence_seconds_bucket[5m])", []),
        ("keel_agent_convergence_seconds_count", []),
        ("keel_changes_totl", ["keel_changes_totl"]),
        ("keel_hosts_bucket", ["keel_hosts_bucket"]),
        ("keel:convergence_error_ratio:rate5m", []),
        ("keel:convergence_error_ratio:rate2h", ["keel:convergence_error_ratio:rate2h"]),
        ('up{job="keel-controlplane"}', []),
    ],
)
def test_unknown_names_finds_misspelt_metrics(expr: str, unknown: list[str]) -> None:
    """The name check accepts real metrics and recording rules and reports anything else."""
    assert unknown_names(expr, recorded_names()) == unknown


# --- Grafana -----------------------------------------------------------------------------------

# Panels an operator needs, each found by words in its title (lower case).
REQUIRED_PANELS = [
    ("slo",),
    ("error budget remaining",),
    ("burn rate",),
    ("latency", "p50", "p90", "p99", "change"),
    ("backlog",),
    ("oldest unconverged",),
    ("stuck", "reason"),
    ("hosts by state",),
    ("agent connections",),
    ("reconcile errors",),
    ("retries",),
    ("work queue depth",),
    ("grpc", "requests"),
    ("grpc", "error"),
    ("grpc", "latency"),
    ("operations by state",),
    ("drains", "remaining", "blocked"),
    ("drains", "eta"),
    ("drain moves",),
    ("drains finished on time",),
    ("event loop lag",),
    ("deploy freeze",),
]


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    """keel.json loads, has a recent schema, and every panel queries ${DS_PROMETHEUS}."""
    doc = dashboard()
    assert doc["title"] and doc["uid"]
    assert 36 <= doc["schemaVersion"] <= 41
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(doc):
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize("words", REQUIRED_PANELS, ids=" ".join)
def test_dashboard_has_the_operator_panels(words: tuple[str, ...]) -> None:
    """The dashboard has a panel for each thing an operator looks at during an incident."""
    titles = [p["title"].lower() for p in panels(dashboard()) if p["type"] != "row"]
    assert any(all(w in t for w in words) for t in titles), f"no panel titled with {words}"


def test_dashboard_queries_use_only_known_metrics() -> None:
    """Every dashboard query names issue-3 metrics or recording rules, nothing else."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    recorded = recorded_names()
    bad = {e: unknown_names(e, recorded) for e in exprs if unknown_names(e, recorded)}
    assert not bad, bad
