"""keelctl: argument parsing, output formatting, and commands against an in-test FleetService."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from keel.convert import spec_to_pb, ts
from keel.ctl import observe, output
from keel.ctl.main import build_parser, main
from keel.spec import SpecError, parse_workload
from keel.traceconfig import OTLP_ENDPOINT_ENV, TRACE_FILE_ENV
from keel.v1 import fleet_pb2, fleet_pb2_grpc
from keel.v1 import types_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- hand-built messages -----------------------------------------------------------------------


def an_instance(n: int = 1, **status: Any) -> pb.Instance:
    """Instance web-<n> on host-<n>, running, created five minutes before NOW."""
    s = {"phase": pb.PHASE_RUNNING, "pid": 4200 + n, "ready": True, **status}
    return pb.Instance(
        id=f"web-{n}",
        workload="web",
        generation=2,
        host=f"host-{n}",
        desired=pb.DESIRED_RUNNING,
        desired_changed_at=ts(NOW - timedelta(minutes=5)),
        created_at=ts(NOW - timedelta(minutes=5)),
        converged=True,
        status=pb.InstanceStatus(instance_id=f"web-{n}", **s),
    )


def a_host(n: int = 1, **fields: Any) -> pb.Host:
    values: dict[str, Any] = {
        "name": f"host-{n}",
        "labels": {"zone": "a"},
        "capacity": pb.Resources(cpu_millis=4000, memory_mib=8192),
        "allocated": pb.Resources(cpu_millis=100, memory_mib=64),
        "schedulable": True,
        "state": "READY",
        "last_heartbeat": ts(NOW - timedelta(seconds=3)),
        "connected": True,
        "agent_version": "0.1.0",
        "instances": 1,
        "revision": 7,
        **fields,
    }
    return pb.Host(**values)


def a_workload(name: str = "web") -> pb.Workload:
    doc = yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())
    doc["name"] = name
    w = parse_workload(doc)

    return pb.Workload(
        name=w.name,
        kind=w.kind.value,
        replicas=w.replicas,
        max_unavailable=w.max_unavailable,
        max_surge=w.max_surge,
        selector=w.selector,
        deadline_ms=w.deadline_ms,
        spec=spec_to_pb(w.spec),
        generation=2,
        created_at=ts(NOW - timedelta(hours=3)),
        updated_at=ts(NOW - timedelta(minutes=5)),
        status=pb.WorkloadStatus(desired=3, instances=3, running=3, ready=2, updated=3),
    )


# --- argument parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["get", "workloads"], {"command": "get", "resource": "workloads", "output": "table"}),
        (["get", "wl"], {"resource": "wl"}),
        (["get", "inst", "--workload", "web", "--host", "h1"], {"workload": "web", "host": "h1"}),
        (["-o", "json", "get", "hosts"], {"output": "json"}),
        (["get", "hosts", "-o", "json"], {"output": "json"}),
        (["--controlplane", "h:1", "get", "host"], {"controlplane": "h:1"}),
        (["get", "host", "--controlplane", "h:2"], {"controlplane": "h:2"}),
        (["get", "hosts"], {"controlplane": None, "timeout": 10.0}),
        (["--timeout", "500ms", "get", "hosts"], {"timeout": 0.5}),
        (["get", "hosts", "--timeout", "1m"], {"timeout": 60.0}),
        (["apply", "-f", "x.yaml"], {"command": "apply", "filename": "x.yaml"}),
        (["apply", "--filename", "-"], {"filename": "-"}),
        (["describe", "instance", "web-1"], {"resource": "instance", "name": "web-1"}),
        (["describe", "wl", "web"], {"resource": "wl", "name": "web"}),
        (["delete", "workload", "web"], {"command": "delete", "name": "web"}),
    ],
)
def test_parser_accepts_valid_commands(argv: list[str], expected: dict[str, Any]) -> None:
    """Valid command lines parse, with global options before or after the subcommand."""
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["get"],
        ["get", "pods"],
        ["apply"],
        ["apply", "x.yaml"],
        ["describe", "workload"],
        ["delete", "instance", "web-1-a"],
        ["delete", "workload"],
        ["-o", "yaml", "get", "hosts"],
        ["--timeout", "10", "get", "hosts"],
        ["--timeout", "0s", "get", "hosts"],
        ["get", "hosts", "--bogus"],
        ["get", "hosts", "--limit", "-1"],
        ["get", "hosts", "--limit", "many"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed command line exits 2 with a usage message and never calls the server."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the usage and succeeds."""
    assert main(["--help"]) == 0
    assert "apply" in capsys.readouterr().out


# --- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=3), "3h"),
        (timedelta(days=3), "3d"),
        (timedelta(seconds=-5), "0s"),  # clock skew: never a negative age
    ],
)
def test_age_is_short(delta: timedelta, text: str) -> None:
    """Ages read like kubectl's."""
    assert output.age(NOW - delta, now=NOW) == text


def test_instances_table_aligns_columns() -> None:
    """The instances table has the documented columns, aligned, one row per instance."""
    rows = [
        an_instance(1),
        an_instance(
            2,
            phase=pb.PHASE_FAILED,
            pid=0,
            ready=False,
            restart_count=3,
            reason="CRASH_BACKOFF",
        ),
    ]
    assert output.instances_table(rows, now=NOW) == (
        "ID     WORKLOAD  GEN  HOST    DESIRED  PHASE    READY  RESTARTS  PID   AGE  REASON\n"
        "web-1  web       2    host-1  RUNNING  RUNNING  yes    0         4201  5m   -\n"
        "web-2  web       2    host-2  RUNNING  FAILED   no     3         -     5m   CRASH_BACKOFF"
    )


def test_instance_without_a_report_shows_dashes() -> None:
    """An instance the agent has not reported yet shows `-` for phase and pid."""
    inst = pb.Instance(id="web-9", workload="web", generation=1, desired=pb.DESIRED_RUNNING)
    line = output.instances_table([inst], now=NOW).splitlines()[1].split()
    assert line == ["web-9", "web", "1", "-", "RUNNING", "-", "no", "0", "-", "-", "-"]


def test_hosts_table_shows_allocation_and_heartbeat() -> None:
    """The hosts table shows state, schedulability, cpu/memory allocated of capacity."""
    hosts = [
        a_host(1),
        a_host(2, schedulable=False, state="NOT_READY", last_heartbeat=None),
        a_host(3, schedulable=False, cordoned_at=ts(NOW - timedelta(minutes=7))),
        a_host(4, schedulable=False, cordoned_at=ts(NOW - timedelta(hours=2)), drained=True),
    ]
    assert output.hosts_table(hosts, now=NOW) == (
        "NAME    STATE      SCHEDULABLE           CPU(alloc/cap)  MEMORY       INSTANCES  "
        "HEARTBEAT\n"
        "host-1  READY      yes                   100m/4000m      64Mi/8192Mi  1          3s ago\n"
        "host-2  NOT_READY  no (cordoned)         100m/4000m      64Mi/8192Mi  1          -\n"
        "host-3  READY      no (cordoned 7m ago)  100m/4000m      64Mi/8192Mi  1          3s ago\n"
        "host-4  READY      no (drained 2h ago)   100m/4000m      64Mi/8192Mi  1          3s ago"
    )


def test_workloads_table_shows_status_counts() -> None:
    """The workloads table shows generation and desired/ready/updated counts."""
    deleting = a_workload("old")
    deleting.deleting = True
    assert output.workloads_table([a_workload(), deleting], now=NOW) == (
        "NAME            KIND     GEN  DESIRED  READY  UPDATED  AGE\n"
        "web             service  2    3        2      3        3h\n"
        "old (deleting)  service  2    3        2      3        3h"
    )


def test_events_table_names_who_made_each_change() -> None:
    """An ACTOR column: the token's name, Keel's own controller, `-` for what nobody asked."""
    events = [
        fleet_pb2.Event(at=ts(NOW - timedelta(minutes=3)), object="workload/web",
                        kind="WorkloadApplied", actor="alice", message="configured"),
        fleet_pb2.Event(at=ts(NOW - timedelta(minutes=2)), object="workload/web",
                        kind="RolloutFailed", actor="keel/rollout", message="CRASH_LOOP: x"),
        fleet_pb2.Event(at=ts(NOW - timedelta(minutes=1)), object="instance/web-2-1",
                        kind="StuckDetected", message="CRASH_LOOP"),
    ]  # fmt: skip
    lines = observe.events_table(events, now=NOW).splitlines()
    assert lines[0].split() == ["WHEN", "OBJECT", "EVENT", "ACTOR", "MESSAGE"]
    assert lines[1].split()[4:] == ["WorkloadApplied", "alice", "configured"]
    assert lines[2].split()[4:6] == ["RolloutFailed", "keel/rollout"]
    assert lines[3].split()[4:] == ["StuckDetected", "-", "CRASH_LOOP"]


def test_describe_instance_shows_everything_an_operator_needs() -> None:
    """describe instance shows restarts, last exit, reason, message, ports, pid and times."""
    inst = an_instance(
        1,
        restart_count=2,
        last_exit="signal 9 (SIGKILL)",
        reason="CRASH_BACKOFF",
        message="restarting in 20s",
        ports={"http": 34567},
        started_at=ts(NOW - timedelta(seconds=30)),
    )
    text = output.describe_instance(inst, now=NOW)
    for line in [
        "ID:               web-1",
        "Restart count:    2",
        "Last exit:        signal 9 (SIGKILL)",
        "Reason:           CRASH_BACKOFF",
        "Message:          restarting in 20s",
        "Ports:            http=34567",
        "PID:              4201",
        "Started:          2025-01-02T03:03:35Z (30s ago)",
        "Desired changed:  2025-01-02T02:59:05Z (5m ago)",
    ]:
        assert line in text.splitlines()


def test_describe_workload_shows_spec_as_yaml_and_instances() -> None:
    """describe workload shows the spec in the form apply takes, then its instances."""
    text = output.describe_workload(a_workload(), [an_instance(1)], now=NOW)
    lines = text.splitlines()
    assert "Generation:       2" in lines
    assert "Spec:" in lines
    assert "  command: [python3, -m, http.server, '${KEEL_PORT_HTTP}']" in lines
    assert "  resources: {cpu: 100m, memory: 64Mi}" in lines
    assert "  stop_grace: 10s" in lines
    assert "Instances:" in lines
    assert any(line.startswith("  web-1  web") for line in lines)


def test_describe_host_shows_cordon_reason() -> None:
    """describe host says why a host is unschedulable."""
    text = output.describe_host(a_host(1, schedulable=False, cordon_reason="disk"), [], now=NOW)
    assert "Schedulable:     no (cordoned: disk)" in text.splitlines()
    assert "Instances on host-1:\n  (none)" in text


def test_json_output_keeps_proto_names_and_zero_values() -> None:
    """-o json uses proto field names, includes zero values and gives int64 as numbers."""
    data = json.loads(output.to_json(an_instance(1)))
    assert data["status"]["restart_count"] == 0
    assert data["generation"] == 2
    assert data["desired"] == "DESIRED_RUNNING"


# --- against a FleetService --------------------------------------------------------------------


class FakeFleet(fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]
    """Canned answers; validates manifests with keel.spec like the real control plane."""

    # The fake answers instance lists two at a time, whatever page size is asked for (a page
    # may hold fewer), so keelctl has to read on.
    INSTANCE_PAGE = 2

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.request_ids: list[str] = []
        self.instance_requests: list[fleet_pb2.ListInstancesRequest] = []
        self.lock = threading.Lock()

    def ApplyWorkload(self, request: Any, context: Any) -> fleet_pb2.ApplyWorkloadResponse:
        with self.lock:
            self.applied.append(request.manifest_json)
            self.request_ids.append(dict(context.invocation_metadata()).get("keel-request-id", ""))
        try:
            w = parse_workload(json.loads(request.manifest_json))
        except SpecError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        result = "created" if len(self.applied) == 1 else "configured"
        resp = fleet_pb2.ApplyWorkloadResponse(result=result)
        resp.workload.name = w.name
        resp.workload.generation = len(self.applied)
        return resp

    def GetWorkload(self, request: Any, context: Any) -> pb.Workload:
        if request.name != "web":
            context.abort(grpc.StatusCode.NOT_FOUND, f'workload "{request.name}" not found')
        return a_workload()

    def ListWorkloads(self, request: Any, context: Any) -> fleet_pb2.ListWorkloadsResponse:
        return fleet_pb2.ListWorkloadsResponse(workloads=[a_workload()])

    def GetRolloutStatus(self, request: Any, context: Any) -> fleet_pb2.RolloutStatus:
        if request.workload != "web":
            context.abort(grpc.StatusCode.NOT_FOUND, f'workload "{request.workload}" not found')
        return fleet_pb2.RolloutStatus(workload="web", revision=2, state="COMPLETE", desired=3)

    def DeleteWorkload(self, request: Any, context: Any) -> fleet_pb2.DeleteWorkloadResponse:
        if request.name != "web":
            context.abort(grpc.StatusCode.NOT_FOUND, f'workload "{request.name}" not found')
        return fleet_pb2.DeleteWorkloadResponse(workload=a_workload())

    def GetHost(self, request: Any, context: Any) -> pb.Host:
        return a_host(1)

    def ListHosts(self, request: Any, context: Any) -> fleet_pb2.ListHostsResponse:
        return fleet_pb2.ListHostsResponse(hosts=[a_host(1), a_host(2)])

    def GetInstance(self, request: Any, context: Any) -> pb.Instance:
        if request.id != "web-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f'instance "{request.id}" not found')
        return an_instance(1, restart_count=1, last_exit="exit code 1")

    def ListInstances(self, request: Any, context: Any) -> fleet_pb2.ListInstancesResponse:
        with self.lock:
            self.instance_requests.append(request)
        insts = [an_instance(1), an_instance(2), an_instance(3)]
        if request.workload == "none":
            insts = []
        if request.host:
            insts = [i for i in insts if i.host == request.host]
        start = int(request.page_token or 0)
        end = start + min(request.page_size or 500, self.INSTANCE_PAGE)
        token = str(end) if end < len(insts) else ""
        return fleet_pb2.ListInstancesResponse(instances=insts[start:end], next_page_token=token)


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[FakeFleet, str]]:
    """A FleetService on a free loopback port; stopped when the module's tests are done."""
    servicer = FakeFleet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)


def run(addr: str, *argv: str) -> int:
    return main(["--controlplane", addr, *argv])


def test_apply_sends_the_document_as_json_and_reports_the_generation(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """apply sends the YAML document as JSON and prints the result and generation."""
    servicer, addr = fleet
    servicer.applied.clear()
    path = str(ROOT / "examples" / "web.yaml")
    assert run(addr, "apply", "-f", path) == 0
    assert capsys.readouterr().out == "workload/web created (generation 1)\n"
    assert json.loads(servicer.applied[-1]) == yaml.safe_load(Path(path).read_text())
    assert run(addr, "apply", "-f", path) == 0
    assert capsys.readouterr().out == "workload/web configured (generation 2)\n"


def test_apply_reads_json_from_stdin(
    fleet: tuple[FakeFleet, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apply -f - reads the manifest (JSON here, tab-indented) from stdin."""
    _, addr = fleet
    doc = {"name": "api", "spec": {"command": ["sleep", "60"]}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(doc, indent="\t")))
    assert run(addr, "apply", "-f", "-") == 0
    assert capsys.readouterr().out.startswith("workload/api ")


def test_apply_invalid_spec_is_a_control_plane_error(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The server's INVALID_ARGUMENT (naming field and rule) is printed on one line, exit 1."""
    _, addr = fleet
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: web\nreplicas: -1\nspec: {command: [x]}\n")
    assert run(addr, "apply", "-f", str(bad)) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "error: replicas: must be >= 0, got -1 (INVALID_ARGUMENT)\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: web\n  spec: [\n", ":2: not valid YAML"),
        ("", ": the file holds no document"),
        ("a: 1\n---\nb: 2\n", ":2: not valid YAML: expected a single document"),
    ],
)
def test_apply_syntax_error_is_a_usage_error(
    fleet: tuple[FakeFleet, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str,
    message: str,
) -> None:
    """A manifest that is not YAML exits 2 naming the file and line; nothing is sent."""
    servicer, addr = fleet
    before = len(servicer.applied)
    path = tmp_path / "m.yaml"
    path.write_text(content)
    assert run(addr, "apply", "-f", str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}{message}")
    assert err.count("\n") == 1
    assert len(servicer.applied) == before


def test_apply_missing_file_is_a_usage_error(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file that cannot be read exits 2 and says why."""
    _, addr = fleet
    missing = tmp_path / "nope.yaml"
    assert run(addr, "apply", "-f", str(missing)) == 2
    assert capsys.readouterr().err == f"error: cannot read {missing}: No such file or directory\n"


def test_get_instances_prints_a_table(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """get instances prints the header and one row per instance; --host filters."""
    _, addr = fleet
    assert run(addr, "get", "instances") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "WORKLOAD",
        "GEN",
        "HOST",
        "DESIRED",
        "PHASE",
        "READY",
        "RESTARTS",
        "PID",
        "AGE",
        "REASON",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["web-1", "web-2", "web-3"]
    assert run(addr, "get", "inst", "--host", "host-2") == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["web-2"]


def test_get_reads_every_page_and_limit_stops_early(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A list answered a page at a time is printed whole; --limit N prints the first N and
    asks for no more than it needs."""
    servicer, addr = fleet
    servicer.instance_requests.clear()
    assert run(addr, "get", "instances") == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "web-1",
        "web-2",
        "web-3",
    ]
    assert [r.page_token for r in servicer.instance_requests] == ["", "2"]
    assert {r.page_size for r in servicer.instance_requests} == {1000}
    servicer.instance_requests.clear()
    assert run(addr, "get", "instances", "--limit", "1") == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["web-1"]
    assert [(r.page_size, r.page_token) for r in servicer.instance_requests] == [(1, "")]
    assert run(addr, "-o", "json", "get", "instances", "--limit", "2") == 0
    data = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in data["instances"]] == ["web-1", "web-2"]


def test_get_with_nothing_found_prints_a_note(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty list leaves stdout empty, says so on stderr, and succeeds."""
    _, addr = fleet
    assert run(addr, "get", "instances", "--workload", "none") == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "No instances found.\n")


def test_get_filter_on_other_resources_is_a_usage_error(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--workload/--host only filter instances."""
    _, addr = fleet
    assert run(addr, "get", "hosts", "--workload", "web") == 2
    assert capsys.readouterr().err == "error: --workload and --host filter instances only\n"


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["get", "hosts"], "hosts"),
        (["get", "wl"], "workloads"),
        (["get", "instances"], "instances"),
        (["describe", "host", "host-1"], "capacity"),
        (["describe", "workload", "web"], "spec"),
        (["describe", "instance", "web-1"], "status"),
    ],
)
def test_json_output_is_the_message(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str], argv: list[str], key: str
) -> None:
    """-o json prints the protobuf message as JSON."""
    _, addr = fleet
    assert run(addr, "-o", "json", *argv) == 0
    assert key in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["describe", "instance", "web-1"], "Last exit:        exit code 1"),
        (["describe", "workload", "web"], "  ports: [http]"),
        (["describe", "host", "host-1"], "Labels:          zone=a"),
        (["get", "hosts"], "host-2  READY  yes          100m/4000m      64Mi/8192Mi"),
        # (AGE is left out: the fake's times are fixed, the clock is not.)
        (["get", "workloads"], "web   service  2    3        2      3"),
        (["delete", "workload", "web"], "workload/web deleted"),
    ],
)
def test_commands_print_readable_text(
    fleet: tuple[FakeFleet, str],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
) -> None:
    """describe, get and delete print what the operator needs, exit 0."""
    _, addr = fleet
    assert run(addr, *argv) == 0
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "err"),
    [
        (["describe", "workload", "x"], 'error: workload "x" not found (NOT_FOUND)\n'),
        (["describe", "inst", "web-9"], 'error: instance "web-9" not found (NOT_FOUND)\n'),
        (["delete", "workload", "x"], 'error: workload "x" not found (NOT_FOUND)\n'),
    ],
)
def test_not_found_is_one_line_and_exit_1(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str], argv: list[str], err: str
) -> None:
    """A NOT_FOUND from the control plane is one line on stderr with its code, exit 1."""
    _, addr = fleet
    assert run(addr, *argv) == 1
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", err)


def test_unreachable_control_plane_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """With nothing listening, the error names the address keelctl tried, exit 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    # The port is closed now: connections are refused.
    assert run(addr, "get", "hosts") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the control plane at {addr}: ")
    assert err.count("\n") == 1


def test_controlplane_address_comes_from_the_environment(
    fleet: tuple[FakeFleet, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --controlplane, KEEL_CONTROLPLANE is the address."""
    _, addr = fleet
    monkeypatch.setenv("KEEL_CONTROLPLANE", addr)
    assert main(["get", "hosts"]) == 0
    assert "host-1" in capsys.readouterr().out


def test_console_entry_exits_with_the_status(fleet: tuple[FakeFleet, str]) -> None:
    """Run as a program, keelctl's process exit status is 0, 1 or 2 as documented."""
    _, addr = fleet
    base = [sys.executable, "-m", "keel.ctl.main", "--controlplane", addr]
    for argv, code in [
        (["get", "hosts"], 0),
        (["describe", "workload", "x"], 1),
        (["get", "pods"], 2),
    ]:
        proc = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, proc.stderr


@pytest.mark.parametrize(
    "argv",
    [["get", "instances"], ["describe", "workload", "web"], ["--help"]],
    ids=["get", "describe", "help"],
)
def test_a_reader_gone_away_ends_keelctl_quietly(
    fleet: tuple[FakeFleet, str], argv: list[str]
) -> None:
    """`keelctl ... | head` where head has already exited: no BrokenPipeError traceback and no
    "Exception ignored" on stderr, and no exit status beyond the documented ones."""
    _, addr = fleet
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before keelctl writes a byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "keel.ctl.main", "--controlplane", addr, *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode in (0, 1)  # argparse's --help already ignores a closed stdout


# What `keelctl get hosts` has no use for: tracing (OpenTelemetry, and structlog behind it),
# YAML, protobuf's JSON printer, and anything of the server side or the agent. Each is a
# measurable share of start-up, which is most of a short command's time.
NOT_FOR_GET_HOSTS = (
    "opentelemetry",
    "structlog",
    "rich",
    "yaml",
    "psutil",
    "google.protobuf.json_format",
    "keel.tracing",
    "keel.ctl.documents",
    "keel.v1.agent_pb2",
    "controlplane",
    "agent",
    "asyncpg",
)


def modules_after(addr: str, argv: list[str], tmp_path: Path, **env: str) -> set[str]:
    """The modules a keelctl process has imported once its command is done (exit status 0)."""
    listing = tmp_path / "modules.json"
    script = (
        "import json, sys\n"
        "from keel.ctl.main import main\n"
        f"code = main({['--controlplane', addr, *argv]!r})\n"
        f"open({str(listing)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in (TRACE_FILE_ENV, OTLP_ENDPOINT_ENV)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(listing.read_text()))


def heavy(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if any(m == h or m.startswith(h + ".") for h in NOT_FOR_GET_HOSTS)
    )


def test_get_hosts_imports_only_what_it_needs(fleet: tuple[FakeFleet, str], tmp_path: Path) -> None:
    """`keelctl get hosts` imports no tracing, YAML, JSON printer, server or agent code."""
    _, addr = fleet
    assert heavy(modules_after(addr, ["get", "hosts"], tmp_path)) == []


def test_tracing_and_describe_still_import_what_they_use(
    fleet: tuple[FakeFleet, str], tmp_path: Path
) -> None:
    """The check above can fail: with a trace file, keelctl loads OpenTelemetry; describe
    workload loads YAML for the spec; -o json loads protobuf's JSON printer."""
    _, addr = fleet
    traced = modules_after(
        addr, ["get", "hosts"], tmp_path, KEEL_TRACE_FILE=str(tmp_path / "spans.jsonl")
    )
    assert {"opentelemetry.trace", "keel.tracing"} <= traced
    assert "yaml" in modules_after(addr, ["describe", "workload", "web"], tmp_path)
    json_out = modules_after(addr, ["-o", "json", "get", "hosts"], tmp_path)
    assert "google.protobuf.json_format" in json_out


def test_a_list_of_replicas_fails_over_to_one_that_answers(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--controlplane A,B: A cannot be reached (nothing listens), so B answers."""
    _, addr = fleet
    assert main(["--controlplane", f"127.0.0.1:1, {addr}", "get", "hosts"]) == 0
    assert "host-1" in capsys.readouterr().out


def test_when_no_replica_answers_the_last_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """Every replica unreachable: exit 1, naming the last one tried."""
    assert main(["--controlplane", "127.0.0.1:1,127.0.0.1:2", "get", "hosts"]) == 1
    assert "cannot reach the control plane at 127.0.0.1:2" in capsys.readouterr().err


def test_each_invocation_sends_its_own_request_id_or_the_one_given(
    fleet: tuple[FakeFleet, str],
) -> None:
    """Two applies send two fresh ids (UUIDs); --request-id sends the one named, every time."""
    servicer, addr = fleet
    path = ROOT / "examples" / "web.yaml"
    before = len(servicer.request_ids)
    for argv in (["apply", "-f", str(path)], ["apply", "-f", str(path)]):
        assert run(addr, *argv) == 0
    assert run(addr, "--request-id", "release-42", "apply", "-f", str(path)) == 0
    assert run(addr, "apply", "-f", str(path), "--request-id", "release-42") == 0
    fresh_1, fresh_2, named_1, named_2 = servicer.request_ids[before:]
    assert fresh_1 != fresh_2
    assert str(uuid.UUID(fresh_1)) == fresh_1 and uuid.UUID(fresh_1).version == 4
    assert named_1 == named_2 == "release-42"


def test_a_malformed_request_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An id the control plane would refuse is refused before any call: exit status 2."""
    assert main(["--request-id", "a/b", "get", "hosts"]) == 2
    assert "--request-id" in capsys.readouterr().err


class _AwayFleet(fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]
    """A replica whose database is away: every call answers UNAVAILABLE; records the ids."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    def ApplyWorkload(self, request: Any, context: Any) -> fleet_pb2.ApplyWorkloadResponse:
        self.request_ids.append(dict(context.invocation_metadata()).get("keel-request-id", ""))
        context.abort(grpc.StatusCode.UNAVAILABLE, "the control plane's database is unreachable")


def test_a_replica_that_cannot_serve_hands_the_call_to_the_next_with_the_same_id(
    fleet: tuple[FakeFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--controlplane A,B with A answering UNAVAILABLE: B applies it, under the id A got."""
    servicer, addr = fleet
    away = _AwayFleet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(away, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        path = str(ROOT / "examples" / "web.yaml")
        assert main(["--controlplane", f"127.0.0.1:{port},{addr}", "apply", "-f", path]) == 0
    finally:
        server.stop(grace=None).wait(5)
    assert "workload/web" in capsys.readouterr().out
    assert len(away.request_ids) == 1
    assert servicer.request_ids[-1] == away.request_ids[0]
