"""The real `keel-agent` binary's /metrics, trace file and log hygiene, against an in-test
AgentService."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from waiting import eventually

from agent.metrics import NAMES
from keel.convert import spec_to_pb
from keel.model import HealthCheck, WorkloadSpec
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

AGENT = str(Path(sys.executable).with_name("keel-agent"))
SECRET = "s3cr3t-value-7f1d0c"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SLEEP = (sys.executable, "-c", "import time; time.sleep(120)")

ASSIGNMENTS = {
    # Converges (no health check), and its start joins the operator's trace.
    "ok-1": (
        WorkloadSpec(command=SLEEP, env={"API_TOKEN": SECRET}),
        f"00-{TRACE_ID}-{PARENT_ID}-01",
    ),
    # Runs, but its exec health check (which names the secret's variable) fails.
    "sick-1": (
        WorkloadSpec(
            command=SLEEP,
            env={"API_TOKEN": SECRET},
            health=HealthCheck(exec=("false", "${API_TOKEN}")),
        ),
        "",
    ),
    # The command is the secret itself: the start fails, and the error must not show it.
    "bad-1": (WorkloadSpec(command=("${API_TOKEN}",), env={"API_TOKEN": SECRET}), ""),
}


class Servicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """Answers Hello with ASSIGNMENTS and records the statuses."""

    def __init__(self) -> None:
        self.statuses: list[types_pb2.InstanceStatus] = []

    async def Sync(self, request_iterator: Any, context: Any) -> None:
        await context.read()
        await context.write(
            agent_pb2.ControlMessage(
                assignments=agent_pb2.Assignments(
                    full=True,
                    revision=7,
                    assignments=[
                        agent_pb2.Assignment(
                            instance_id=iid,
                            workload=iid.split("-")[0],
                            generation=1,
                            desired=types_pb2.DESIRED_RUNNING,
                            spec=spec_to_pb(spec),
                            trace_context=tp,
                        )
                        for iid, (spec, tp) in ASSIGNMENTS.items()
                    ],
                )
            )
        )
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            if msg.HasField("report"):
                self.statuses.extend(msg.report.instances)

    def last(self, iid: str) -> types_pb2.InstanceStatus | None:
        mine = [s for s in self.statuses if s.instance_id == iid]
        return mine[-1] if mine else None


@pytest.fixture
async def controlplane() -> AsyncIterator[tuple[Servicer, str]]:
    servicer = Servicer()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
def agent_proc(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts one keel-agent (stdout to agent.log); it and its workloads are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(address: str) -> subprocess.Popen[bytes]:
        state = tmp_path / "state"
        with (tmp_path / "agent.log").open("wb") as out:
            proc = subprocess.Popen(
                [
                    AGENT,
                    "--controlplane",
                    address,
                    "--host",
                    "h1",
                    "--state-dir",
                    str(state),
                    "--probe-interval",
                    "100ms",
                    "--heartbeat-interval",
                    "200ms",
                    "--health-stuck-after",
                    "300ms",
                    "--metrics",
                    "127.0.0.1:0",
                    "--trace-file",
                    str(tmp_path / "spans.jsonl"),
                    "--log-format",
                    "json",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(str(tmp_path)):
                os.killpg(p.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def scrape(state: Path) -> str:
    address = json.loads((state / "addresses.json").read_text())["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


async def test_agent_metrics_stuck_traces_and_no_secret_in_logs(
    tmp_path: Path,
    controlplane: tuple[Servicer, str],
    agent_proc: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    """/metrics has every agent metric with HELP; the agent reports its stuck states; the
    traced start is a child span of the assignment's context; no log line holds a secret."""
    servicer, address = controlplane
    proc = agent_proc(address)
    state = tmp_path / "state"

    def reason_of(iid: str) -> str:
        s = servicer.last(iid)
        return s.stuck.reason if s is not None and s.HasField("stuck") else ""

    await eventually(
        lambda: (
            reason_of("bad-1") == "START_FAILED"
            and reason_of("sick-1") == "HEALTH_CHECK_FAILING"
            and (s := servicer.last("ok-1")) is not None
            and s.ready
        )
    )
    bad = servicer.last("bad-1")
    assert bad is not None
    assert "executable file not found" in bad.stuck.message
    assert bad.stuck.runbook == "runbooks/stuck/start-failed.md"
    assert bad.stuck.next_command == "keelctl describe instance bad-1"
    assert bad.reason == "START_FAILED" and bad.stuck.since.seconds > 0

    await eventually(lambda: (state / "addresses.json").exists())
    text = await asyncio.to_thread(scrape, state)
    for name in NAMES:
        assert f"# HELP {name} " in text, name
    assert sample(text, "keel_agent_connected") == 1.0
    assert sample(text, "keel_agent_desired_revision") == 7.0
    assert sample(text, 'keel_agent_convergence_seconds_count{change="create"}') == 1.0
    assert sample(text, 'keel_agent_stuck_instances{reason="START_FAILED"}') == 1.0
    assert sample(text, 'keel_agent_stuck_instances{reason="HEALTH_CHECK_FAILING"}') == 1.0
    assert sample(text, "keel_agent_unconverged_instances") == 2.0
    promtool = shutil.which("promtool")
    if promtool is not None:
        check = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    proc.send_signal(signal.SIGTERM)
    await eventually(lambda: proc.poll() is not None)
    assert proc.returncode == 0

    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    [start] = [s for s in spans if s["name"] == "agent.start_instance"]
    assert (start["trace_id"], start["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert start["service"] == "keel-agent"
    assert start["attributes"] == {
        "keel.instance": "ok-1",
        "keel.workload": "ok",
        "keel.host": "h1",
        "keel.pid": start["attributes"]["keel.pid"],
    }
    assert any(s["name"] == "agent.reconcile" and s["parent_span_id"] == "" for s in spans)

    logs = (tmp_path / "agent.log").read_text()
    assert "executable file not found" in logs  # the lines about the secret's workloads exist
    assert SECRET not in logs
