"""Table tests for keel.spec: every validation rule, the scalar parsers, and the round trip."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.model import HealthCheck, Kind, Resources, Workload, WorkloadSpec
from keel.spec import (
    SpecError,
    format_duration,
    parse_cpu,
    parse_duration,
    parse_memory,
    parse_workload,
    workload_to_doc,
)

ROOT = Path(__file__).resolve().parents[2]


def web_doc() -> dict[str, Any]:
    """The DESIGN.md example, as a fresh mutable document."""
    return {
        "name": "web",
        "kind": "service",
        "replicas": 3,
        "max_unavailable": 1,
        "max_surge": 1,
        "selector": {"role": "web"},
        "deadline": "120s",
        "spec": {
            "command": ["python3", "-m", "http.server", "${KEEL_PORT_HTTP}"],
            "env": {"GREETING": "hello"},
            "ports": ["http"],
            "resources": {"cpu": "100m", "memory": "64Mi"},
            "health": {"tcp": "http"},
            "stop_grace": "10s",
            "min_ready": "10s",
        },
    }


def with_(path: str, value: Any) -> dict[str, Any]:
    """web_doc() with the dotted path set to value (or removed, for the DELETE marker)."""
    doc = web_doc()
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


DELETE = object()


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1m30s", 90_000),
        ("1h2m3s", 3_723_000),
        ("1.5s", 1_500),
        ("0s", 0),
        (" 10s ", 10_000),
    ],
)
def test_parse_duration_reads_units(text: str, ms: int) -> None:
    """A duration with a unit (or several) is read as milliseconds."""
    assert parse_duration(text, "d") == ms


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("10", "duration needs a unit (ms, s, m, h), got '10'"),
        (10, "duration needs a unit (ms, s, m, h), got '10'"),
        (1.5, "duration needs a unit (ms, s, m, h), got '1.5'"),
        ("-5s", "must not be negative, got '-5s'"),
        ("-5", "must not be negative, got '-5'"),
        ("abc", "not a duration (use e.g. 500ms, 10s, 5m, 1h or 1m30s), got 'abc'"),
        ("", "not a duration (use e.g. 500ms, 10s, 5m, 1h or 1m30s), got ''"),
        ("10x", "not a duration (use e.g. 500ms, 10s, 5m, 1h or 1m30s), got '10x'"),
        ("0.5ms", "must be a whole number of milliseconds, got '0.5ms'"),
        ("9000h", "must be at most 8760h, got '9000h'"),
        (True, "must be a duration string (use e.g. 500ms, 10s, 5m, 1h or 1m30s), got boolean"),
        ([], "must be a duration string (use e.g. 500ms, 10s, 5m, 1h or 1m30s), got list"),
    ],
)
def test_parse_duration_refuses_bad_input(value: object, rule: str) -> None:
    """A number without a unit, a negative or garbage is refused naming the field."""
    with pytest.raises(SpecError) as err:
        parse_duration(value, "spec.stop_grace")
    assert err.value.field == "spec.stop_grace"
    assert err.value.rule == rule
    assert str(err.value) == f"spec.stop_grace: {rule}"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (500, "500ms"),
        (1_000, "1s"),
        (1_500, "1.5s"),
        (1_001, "1.001s"),
        (10_000, "10s"),
        (90_000, "1m30s"),
        (120_000, "2m"),
        (3_600_000, "1h"),
        (3_723_000, "1h2m3s"),
        (3_600_500, "1h0.5s"),
    ],
)
def test_format_duration_is_short_and_parses_back(ms: int, text: str) -> None:
    """format_duration picks the readable form, and parse_duration reads it back."""
    assert format_duration(ms) == text
    assert parse_duration(text, "d") == ms


# --- CPU and memory --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "millis"),
    [("100m", 100), ("0.5", 500), (1, 1000), ("2", 2000), (0.25, 250), ("0", 0), ("0.0001", 1)],
)
def test_parse_cpu_reads_millicores(value: object, millis: int) -> None:
    """CPU is cores or millicores; a fraction of a millicore rounds up."""
    assert parse_cpu(value, "cpu") == millis


@pytest.mark.parametrize(
    ("value", "millis"),
    [("64Mi", 64), ("1Gi", 1024), ("512Ki", 1), ("128M", 123), ("1G", 954), (64, 64), ("32", 32)],
)
def test_parse_memory_reads_mib_rounding_up(value: object, millis: int) -> None:
    """Memory is binary or decimal units, or bare MiB; a partial MiB rounds up."""
    assert parse_memory(value, "memory") == millis


@pytest.mark.parametrize(
    ("parser", "value", "rule"),
    [
        (parse_cpu, "-1", "must not be negative, got '-1'"),
        (parse_cpu, "1 core", "not a CPU quantity (use e.g. 100m, 0.5 or 2), got '1 core'"),
        (parse_cpu, True, "must be a CPU quantity (use e.g. 100m, 0.5 or 2), got boolean"),
        (parse_memory, "-64Mi", "must not be negative, got '-64Mi'"),
        (parse_memory, "64MB", "not a memory quantity (use e.g. 64Mi, 1Gi or 128M), got '64MB'"),
        (parse_memory, None, "must be a memory quantity (use e.g. 64Mi, 1Gi or 128M), got null"),
    ],
)
def test_quantities_refuse_bad_input(parser: Any, value: object, rule: str) -> None:
    """A negative, unknown unit or wrong type is refused naming the field."""
    with pytest.raises(SpecError) as err:
        parser(value, "spec.resources.x")
    assert str(err.value) == f"spec.resources.x: {rule}"


# --- valid workloads -------------------------------------------------------------------------


def test_parse_workload_reads_the_design_example() -> None:
    """The DESIGN.md document becomes the expected Workload."""
    assert parse_workload(web_doc()) == Workload(
        name="web",
        kind=Kind.SERVICE,
        replicas=3,
        max_unavailable=1,
        max_surge=1,
        selector={"role": "web"},
        deadline_ms=120_000,
        spec=WorkloadSpec(
            command=("python3", "-m", "http.server", "${KEEL_PORT_HTTP}"),
            env={"GREETING": "hello"},
            ports=("http",),
            resources=Resources(cpu_millis=100, memory_mib=64),
            health=HealthCheck(tcp="http"),
            stop_grace_ms=10_000,
            min_ready_ms=10_000,
        ),
    )


def test_parse_workload_fills_defaults() -> None:
    """Only name and spec.command are required; everything else has its documented default."""
    w = parse_workload({"name": "a", "spec": {"command": ["sleep", "60"]}})
    assert w == Workload(
        name="a",
        kind=Kind.SERVICE,
        replicas=1,
        max_unavailable=1,
        max_surge=1,
        selector={},
        deadline_ms=120_000,
        spec=WorkloadSpec(
            command=("sleep", "60"),
            env={},
            ports=(),
            resources=Resources(0, 0),
            health=None,
            stop_grace_ms=10_000,
            min_ready_ms=10_000,
        ),
    )


def test_example_file_is_the_design_workload() -> None:
    """examples/web.yaml is the DESIGN.md workload, selector role=web included."""
    doc = yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())
    expected = parse_workload(with_("selector", {"role": "web"}))
    assert parse_workload(doc) == expected


@pytest.mark.parametrize(
    ("path", "value", "check"),
    [
        ("kind", "daemon", lambda w: w.kind is Kind.DAEMON),
        ("replicas", 0, lambda w: w.replicas == 0 and w.max_unavailable == 0),
        ("max_unavailable", 5, lambda w: w.max_unavailable == 3),  # clamped to replicas
        ("max_unavailable", 0, lambda w: w.max_unavailable == 0 and w.max_surge == 1),
        ("max_surge", 0, lambda w: w.max_surge == 0),
        ("selector", {}, lambda w: w.selector == {}),
        ("selector", None, lambda w: w.selector == {}),
        ("deadline", "1m30s", lambda w: w.deadline_ms == 90_000),
        ("spec.env", None, lambda w: w.spec.env == {}),
        ("spec.env", {"_X1": "y", "lower": ""}, lambda w: w.spec.env == {"_X1": "y", "lower": ""}),
        ("spec.ports", ["http", "admin_2"], lambda w: w.spec.ports == ("http", "admin_2")),
        ("spec.resources", {"cpu": 2}, lambda w: w.spec.resources == Resources(2000, 0)),
        ("spec.resources", {"memory": "1Gi"}, lambda w: w.spec.resources == Resources(0, 1024)),
        ("spec.health", None, lambda w: w.spec.health is None),
        (
            "spec.health",
            {"http": {"port": "http", "path": "/healthz"}},
            lambda w: w.spec.health == HealthCheck(http_port="http", http_path="/healthz"),
        ),
        (
            "spec.health",
            {"http": {"port": "http"}},
            lambda w: w.spec.health == HealthCheck(http_port="http", http_path="/"),
        ),
        (
            "spec.health",
            {"exec": ["test", "-f", "/tmp/ok"]},
            lambda w: w.spec.health == HealthCheck(exec=("test", "-f", "/tmp/ok")),
        ),
        ("spec.stop_grace", "0s", lambda w: w.spec.stop_grace_ms == 0),
        ("spec.min_ready", "500ms", lambda w: w.spec.min_ready_ms == 500),
        (
            "spec.on_disconnect",
            {"stop_after": "30s"},
            lambda w: w.spec.stop_after_disconnect_ms == 30_000,
        ),
        ("spec.on_disconnect", None, lambda w: w.spec.stop_after_disconnect_ms == 0),
        (
            "spec.command",
            ["sh", "-c", "echo ${GREETING} on ${KEEL_HOST}/${KEEL_WORKLOAD}/${KEEL_INSTANCE}"],
            lambda w: w.spec.command[0] == "sh",
        ),
        ("spec.command", ["echo", "$HOME", "$$"], lambda w: w.spec.command[1] == "$HOME"),
    ],
)
def test_parse_workload_accepts_valid_variations(path: str, value: Any, check: Any) -> None:
    """Each valid variation of the example parses to what it says."""
    assert check(parse_workload(with_(path, value)))


def test_max_unavailable_is_not_clamped_for_daemons() -> None:
    """A daemon's replicas means nothing, so its budget is kept as written."""
    doc = with_("kind", "daemon")
    doc["replicas"] = 1
    doc["max_unavailable"] = 4
    assert parse_workload(doc).max_unavailable == 4


# --- invalid workloads: each names exactly one field and one rule -----------------------------


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("name", DELETE, "name: required"),
        ("name", 7, "name: must be a string, got integer"),
        (
            "name",
            "Web_1",
            "name: must be lowercase letters, digits and '-', start and end with a letter or "
            "digit, at most 63 characters, got 'Web_1'",
        ),
        ("name", "-web", None),
        ("name", "a" * 64, None),
        ("kind", "job", "kind: must be service or daemon, got 'job'"),
        ("replicas", -1, "replicas: must be >= 0, got -1"),
        ("replicas", True, "replicas: must be an integer, got boolean"),
        ("replicas", "3", "replicas: must be an integer, got string"),
        ("replicas", 1.5, "replicas: must be an integer, got number"),
        ("replicas", 100_001, "replicas: must be <= 100000, got 100001"),
        ("max_unavailable", -1, "max_unavailable: must be >= 0, got -1"),
        ("max_surge", -2, "max_surge: must be >= 0, got -2"),
        ("selector", ["role"], "selector: must be a mapping, got list"),
        ("selector", {"tier": 1}, "selector.tier: must be a string (quote it), got integer"),
        ("deadline", "0s", "deadline: must be > 0, got '0s'"),
        ("deadline", 120, "deadline: duration needs a unit (ms, s, m, h), got '120'"),
        ("spec", DELETE, "spec: required"),
        ("spec", "run it", "spec: must be a mapping, got string"),
        ("bogus", 1, "bogus: unknown field"),
        ("spec.bogus", 1, "spec.bogus: unknown field"),
        ("spec.on_disconnect", "30s", "spec.on_disconnect: must be a mapping, got string"),
        ("spec.on_disconnect", {}, "spec.on_disconnect.stop_after: required"),
        ("spec.on_disconnect", {"after": "3s"}, "spec.on_disconnect.after: unknown field"),
        (
            "spec.on_disconnect",
            {"stop_after": 30},
            "spec.on_disconnect.stop_after: duration needs a unit (ms, s, m, h), got '30'",
        ),
        (
            "spec.on_disconnect",
            {"stop_after": "0s"},
            "spec.on_disconnect.stop_after: must be > 0 (leave on_disconnect out to keep "
            "running), got '0s'",
        ),
        ("spec.command", DELETE, "spec.command: required"),
        ("spec.command", [], "spec.command: must not be empty"),
        ("spec.command", "python3 -m http.server", None),
        (
            "spec.command",
            ["sleep", 60],
            "spec.command[1]: must be a string (quote it), got integer",
        ),
        ("spec.command", ["", "x"], "spec.command[0]: must not be empty (the program to run)"),
        (
            "spec.command",
            ["echo", "${NOPE}"],
            "spec.command[1]: ${NOPE} names no variable the instance has (available: GREETING, "
            "KEEL_HOST, KEEL_WORKLOAD, KEEL_INSTANCE, KEEL_PORT_HTTP)",
        ),
        ("spec.command", ["echo", "${KEEL_PORT_ADMIN}"], None),
        ("spec.command", ["echo", "${}"], None),
        ("spec.env", {"1X": "y"}, None),
        ("spec.env", {"A-B": "y"}, None),
        ("spec.env", {"PORT": 8080}, "spec.env.PORT: must be a string (quote it), got integer"),
        ("spec.env", {"KEEL_X": "y"}, "spec.env.KEEL_X: names starting with KEEL_ are reserved"),
        ("spec.env", ["A=b"], "spec.env: must be a mapping, got list"),
        ("spec.ports", "http", "spec.ports: must be a list of strings, got string"),
        ("spec.ports", ["http", "http"], "spec.ports[1]: duplicate port name 'http'"),
        ("spec.ports", ["HTTP"], None),
        ("spec.ports", ["a234567890123456"], None),
        ("spec.resources", {"gpu": 1}, "spec.resources.gpu: unknown field"),
        ("spec.resources", {"cpu": "-1"}, "spec.resources.cpu: must not be negative, got '-1'"),
        ("spec.resources", {"memory": "lots"}, None),
        ("spec.health", {"tcp": "http", "exec": ["true"]}, None),
        ("spec.health", {}, "spec.health: needs exactly one of tcp, http, exec (got none)"),
        ("spec.health", {"grpc": "http"}, "spec.health.grpc: unknown field"),
        (
            "spec.health",
            {"tcp": "admin"},
            "spec.health.tcp: names port 'admin', which spec.ports does not declare "
            "(declared: http)",
        ),
        ("spec.health", {"http": {"path": "/"}}, "spec.health.http.port: required"),
        (
            "spec.health",
            {"http": {"port": "admin"}},
            "spec.health.http.port: names port 'admin', which spec.ports does not declare "
            "(declared: http)",
        ),
        (
            "spec.health",
            {"http": {"port": "http", "path": "healthz"}},
            "spec.health.http.path: must start with '/', got 'healthz'",
        ),
        ("spec.health", {"http": {"port": "http", "x": 1}}, "spec.health.http.x: unknown field"),
        ("spec.health", {"exec": []}, "spec.health.exec: must not be empty (the program to run)"),
        (
            "spec.health",
            {"exec": "true"},
            "spec.health.exec: must be a list of strings, got string",
        ),
        (
            "spec.stop_grace",
            "10",
            "spec.stop_grace: duration needs a unit (ms, s, m, h), got '10'",
        ),
        ("spec.stop_grace", 10, "spec.stop_grace: duration needs a unit (ms, s, m, h), got '10'"),
        ("spec.min_ready", "-1s", "spec.min_ready: must not be negative, got '-1s'"),
        (
            "rollout",
            {"progress_deadline": "10s"},
            "rollout.progress_deadline: must be longer than spec.min_ready (10s), got 10s",
        ),
        (
            "spec.min_ready",
            "15m",
            "rollout.progress_deadline: must be longer than spec.min_ready (15m), got 10m",
        ),
        ("rollout", {"canary": 4}, "rollout.canary: must be at most replicas (3), got 4"),
        ("rollout", {"canary": 1, "auto_promote": 1}, None),
        ("rollout", {"auto_promote": True}, "rollout.auto_promote: needs rollout.canary > 0"),
    ],
)
def test_parse_workload_refuses_naming_field_and_rule(
    path: str, value: Any, message: str | None
) -> None:
    """A bad document raises SpecError naming the one field at fault (and the exact rule)."""
    with pytest.raises(SpecError) as err:
        parse_workload(with_(path, value))
    if message is None:
        # The rule's wording is checked elsewhere; here only the field must be right.
        assert str(err.value).startswith(path.split(".")[0])
        assert err.value.field.startswith(path)
    else:
        assert str(err.value).startswith(message)
        assert str(err.value) == f"{err.value.field}: {err.value.rule}"


def test_health_naming_a_port_with_none_declared_says_none() -> None:
    """With spec.ports empty the message says so, instead of an empty list."""
    doc = with_("spec.ports", [])
    doc["spec"]["command"] = ["sleep", "60"]
    with pytest.raises(SpecError, match=r"\(declared: none\)$"):
        parse_workload(doc)


@pytest.mark.parametrize("doc", [None, [], "name: web", 3])
def test_parse_workload_refuses_a_document_that_is_not_a_mapping(doc: object) -> None:
    """The document itself must be a mapping; the field is <document>."""
    with pytest.raises(SpecError) as err:
        parse_workload(doc)
    assert err.value.field == "<document>"


@pytest.mark.parametrize("kind", ["service", "daemon"])
def test_max_unavailable_and_max_surge_both_zero_is_refused(kind: str) -> None:
    """With nothing allowed down and nothing extra allowed up, a rollout cannot progress."""
    doc = with_("max_unavailable", 0)
    doc["max_surge"] = 0
    doc["kind"] = kind
    with pytest.raises(SpecError) as err:
        parse_workload(doc)
    assert err.value.field == "max_surge"
    assert "could never progress" in err.value.rule


def test_first_problem_is_the_one_reported() -> None:
    """With several problems the first in document order is reported, and only it."""
    doc = with_("replicas", -1)
    doc["spec"]["command"] = []
    with pytest.raises(SpecError) as err:
        parse_workload(doc)
    assert str(err.value) == "replicas: must be >= 0, got -1"


def test_parse_workload_does_not_change_its_input() -> None:
    """Parsing leaves the caller's document as it was."""
    doc = web_doc()
    before = copy.deepcopy(doc)
    parse_workload(doc)
    assert doc == before


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        web_doc(),
        with_("selector", {}),
        with_("replicas", 0),
        with_("max_unavailable", 9),
        with_("spec.health", {"http": {"port": "http", "path": "/x"}}),
        with_("spec.health", {"exec": ["true"]}),
        with_("spec.health", None),
        with_("spec.resources", {"cpu": "1.5", "memory": "2Gi"}),
        with_("spec.resources", {"cpu": "250m", "memory": "100M"}),
        with_("spec.stop_grace", "1m30s"),
        with_("spec.min_ready", "1.5s"),
        with_("spec.on_disconnect", {"stop_after": "2m"}),
        with_("deadline", "1h"),
        {"name": "d", "kind": "daemon", "max_unavailable": 3, "spec": {"command": ["x"]}},
        {"name": "single", "max_surge": 0, "spec": {"command": ["x"]}},
        {"name": "zero", "replicas": 0, "max_surge": 0, "spec": {"command": ["x"]}},
    ],
)
def test_workload_to_doc_round_trips(doc: dict[str, Any]) -> None:
    """parse_workload(workload_to_doc(w)) == w, and the document survives YAML."""
    w = parse_workload(doc)
    out = workload_to_doc(w)
    assert parse_workload(out) == w
    assert parse_workload(yaml.safe_load(yaml.safe_dump(out))) == w


def test_workload_to_doc_formats_for_people() -> None:
    """Durations and quantities come back in their operator-facing forms."""
    out = workload_to_doc(parse_workload(web_doc()))
    assert out["deadline"] == "2m"
    assert out["spec"]["stop_grace"] == "10s"
    assert out["spec"]["resources"] == {"cpu": "100m", "memory": "64Mi"}
    assert out["spec"]["health"] == {"tcp": "http"}
