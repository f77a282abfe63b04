"""The real `keel-agent` binary against an in-test AgentService: flags, SIGTERM, adoption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import psutil
import pytest
from waiting import eventually

from agent.main import main
from keel.convert import spec_to_pb
from keel.model import WorkloadSpec
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

AGENT = str(Path(sys.executable).with_name("keel-agent"))
SPEC = WorkloadSpec(command=(sys.executable, "-c", "import time; time.sleep(120)"))


class Servicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """Answers every Hello with one full set and records the statuses."""

    def __init__(self) -> None:
        self.hellos: list[agent_pb2.Hello] = []
        self.statuses: list[types_pb2.InstanceStatus] = []

    async def Sync(self, request_iterator: Any, context: Any) -> None:
        first = await context.read()
        self.hellos.append(first.hello)
        await context.write(
            agent_pb2.ControlMessage(
                assignments=agent_pb2.Assignments(
                    full=True,
                    revision=5,
                    assignments=[
                        agent_pb2.Assignment(
                            instance_id="web-1",
                            workload="web",
                            generation=1,
                            desired=types_pb2.DESIRED_RUNNING,
                            spec=spec_to_pb(SPEC),
                        )
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

    def running_pid(self) -> int:
        running = [s for s in self.statuses if s.phase == types_pb2.PHASE_RUNNING]
        return running[-1].pid if running else 0


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def reap(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Agents the test starts, and every workload under tmp_path, are killed at the end."""
    agents: list[subprocess.Popen[bytes]] = []
    yield agents
    for a in agents:
        if a.poll() is None:
            a.kill()
            a.wait(10)
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(str(tmp_path)):
                os.killpg(p.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


@pytest.fixture
async def controlplane() -> AsyncIterator[tuple[Servicer, str]]:
    servicer = Servicer()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


def start_agent(
    address: str,
    state_dir: Path,
    agents: list[subprocess.Popen[bytes]],
    *extra: str,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            AGENT,
            "--controlplane",
            address,
            "--host",
            "h1",
            "--state-dir",
            str(state_dir),
            "--driver",
            "process",
            "--probe-interval",
            "100ms",
            "--heartbeat-interval",
            "200ms",
            "--reconnect-max",
            "500ms",
            "--log-format",
            "json",
            "--metrics",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    agents.append(proc)
    return proc


async def stop_agent(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    await eventually(lambda: proc.poll() is not None)
    return proc.returncode


async def test_sigterm_leaves_workload_running_and_restart_adopts_it(
    tmp_path: Path, controlplane: tuple[Servicer, str], reap: list[subprocess.Popen[bytes]]
) -> None:
    """SIGTERM stops only the agent; the next agent adopts the same pid without a restart."""
    servicer, address = controlplane
    first = start_agent(address, tmp_path, reap)
    await eventually(lambda: servicer.running_pid() != 0)
    pid = servicer.running_pid()
    assert await stop_agent(first) == 0
    assert alive(pid)

    servicer.statuses.clear()
    second = start_agent(address, tmp_path, reap, "--stop-workloads-on-exit")
    await eventually(lambda: servicer.running_pid() != 0)
    assert servicer.hellos[-1].revision == 5
    last = [s for s in servicer.statuses if s.phase == types_pb2.PHASE_RUNNING][-1]
    assert (last.pid, last.restart_count) == (pid, 0)

    # --stop-workloads-on-exit: this time the workload goes with the agent.
    assert await stop_agent(second) == 0
    await eventually(lambda: not alive(pid))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--heartbeat-interval", "5"], "--heartbeat-interval: duration needs a unit"),
        (["--capacity", "gpu=1"], "--capacity: unknown resource 'gpu'"),
        (["--label", "novalue"], "--label: expected key=value"),
    ],
)
def test_bad_flag_is_a_usage_error_naming_it(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An invalid flag exits 2 with one line naming the flag and the rule."""
    argv = ["--controlplane", "127.0.0.1:1", "--host", "h1", "--state-dir", str(tmp_path)]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


async def test_second_agent_on_a_state_dir_refuses_naming_the_holder(
    tmp_path: Path, controlplane: tuple[Servicer, str], reap: list[subprocess.Popen[bytes]]
) -> None:
    """A second agent on a state dir exits 1 with one JSON line naming the holder's pid and
    never connects; after a kill -9 of the holder the lock is free, even though the holder's
    workload still runs, and the next agent adopts that workload."""
    servicer, address = controlplane
    first = start_agent(address, tmp_path, reap)
    await eventually(lambda: servicer.running_pid() != 0)
    workload = servicer.running_pid()

    second = start_agent(address, tmp_path, reap, stderr=subprocess.PIPE)
    _, err = await asyncio.to_thread(second.communicate, timeout=30)
    assert second.returncode == 1
    [line] = err.decode().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["holder_pid"] == first.pid
    assert f"pid {first.pid}" in entry["error"] and str(tmp_path) in entry["error"]
    assert len(servicer.hellos) == 1  # the second agent never claimed the host
    assert first.poll() is None

    first.kill()  # SIGKILL: no cleanup of any kind; the kernel drops the lock
    await asyncio.to_thread(first.wait, 10)
    assert alive(workload)  # and the workload it started keeps running, holding no lock
    servicer.statuses.clear()
    third = start_agent(address, tmp_path, reap)
    await eventually(lambda: len(servicer.hellos) == 2 and servicer.running_pid() != 0)
    assert servicer.running_pid() == workload  # adopted, not restarted
    assert await stop_agent(third) == 0


class DatabaseDown(Servicer):
    """Answers the first Hello with one full set; once `down` is set, ends that stream and
    every later one right after Hello with UNAVAILABLE, as a control plane whose database
    is unreachable would if it could not keep streams open."""

    def __init__(self) -> None:
        super().__init__()
        self.down = asyncio.Event()
        self.hello_times: list[float] = []

    async def Sync(self, request_iterator: Any, context: Any) -> None:
        if not self.down.is_set():
            reading = asyncio.ensure_future(super().Sync(request_iterator, context))
            stop = asyncio.ensure_future(self.down.wait())
            await asyncio.wait([reading, stop], return_when=asyncio.FIRST_COMPLETED)
            reading.cancel()
            stop.cancel()
        else:
            await context.read()
        self.hello_times.append(time.monotonic())
        await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable")


async def test_database_down_keeps_desired_state_without_a_reconnect_storm(
    tmp_path: Path, reap: list[subprocess.Popen[bytes]]
) -> None:
    """With streams dropped right after Hello, the agent keeps running its last desired state,
    reconnects ever more slowly (the back-off does not start over on each short stream), and
    every line it logs is JSON."""
    servicer = DatabaseDown()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        log_file = tmp_path / "agent.log"
        with log_file.open("wb") as err:
            agent = start_agent(
                address, tmp_path / "state", reap, "--reconnect-max", "2s", stderr=err
            )
        await eventually(lambda: servicer.running_pid() != 0)
        workload = servicer.running_pid()

        servicer.down.set()
        started = time.monotonic()
        await eventually(lambda: time.monotonic() - started >= 3.0, within=10)
        streams = [t for t in servicer.hello_times if started <= t < started + 3.0]
        # Waits of at least 0.1, 0.2, 0.4, 0.8, 1.0 s (half of each doubling ceiling, capped
        # at 2 s): at most 6 streams in 3 s. Starting over after every stream would give 15+.
        assert 2 <= len(streams) <= 6, servicer.hello_times
        assert alive(workload)
        assert agent.poll() is None
        assert await stop_agent(agent) == 0
    finally:
        await server.stop(None)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert list(state["desired"]) == ["web-1"] and state["revision"] == 5
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(e.get("error") == "UNAVAILABLE: database unavailable" for e in entries)
