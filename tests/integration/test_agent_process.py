"""The process driver and adoption with real processes: environment, session, stop, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from waiting import eventually

from agent.errors import StartFailed
from agent.health import probe
from agent.reconciler import Reconciler
from agent.runtime.base import FIXED_PATH, Handle, instance_env
from agent.runtime.process import ProcessDriver
from agent.settings import Settings
from agent.state import Assignment, StateStore
from keel.model import Desired, HealthCheck, WorkloadSpec

PY = sys.executable


def spec(code: str, *args: str, **kw: object) -> WorkloadSpec:
    return WorkloadSpec(command=(PY, "-c", code, *args), **kw)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def reap(tmp_path: Path) -> Iterator[None]:
    """Kill the process group of every process a test started under tmp_path, however it ends."""
    yield
    for child in psutil.Process().children(recursive=True):
        try:
            if child.cwd().startswith(str(tmp_path)):
                os.killpg(child.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def driver(tmp_path: Path, **kw: int) -> ProcessDriver:
    return ProcessDriver(
        state_dir=tmp_path,
        log_max_bytes=kw.get("max_bytes", 1 << 20),
        log_backups=kw.get("backups", 3),
        poll_interval_s=0.05,
    )


async def start(
    d: ProcessDriver, iid: str, s: WorkloadSpec, ports: dict[str, int] | None = None
) -> Handle:
    ports = ports if ports is not None else d.allocate_ports(s.ports)
    env = instance_env(s, host="h1", workload="web", instance_id=iid, ports=ports)
    return await d.start(iid, s, env=env, ports=ports)


def log_text(tmp_path: Path, iid: str, stream: str = "stdout") -> str:
    p = tmp_path / "logs" / iid / f"{stream}.log"
    return p.read_text() if p.exists() else ""


PRINT_ENV = (
    "import json, os, sys; print(json.dumps({'env': dict(os.environ), 'argv': sys.argv[1:]}))"
)


async def test_environment_is_spec_env_plus_keel_vars_never_the_agents(
    tmp_path: Path, reap: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child sees the spec's env, KEEL_* vars and the fixed PATH, nothing of the agent's."""
    monkeypatch.setenv("AGENT_SECRET", "do-not-leak")
    d = driver(tmp_path)
    s = spec(
        PRINT_ENV,
        "${KEEL_PORT_HTTP}",
        "${GREETING}-x",
        ports=("http", "admin"),
        env={"GREETING": "hello"},
    )
    h = await start(d, "web-1", s)
    assert (await d.wait(h)).describe() == "exit code 0"
    out = json.loads(log_text(tmp_path, "web-1"))
    env = out["env"]
    assert "AGENT_SECRET" not in env and "HOME" not in env
    assert env["GREETING"] == "hello"
    assert env["PATH"] == FIXED_PATH
    assert (env["KEEL_HOST"], env["KEEL_WORKLOAD"], env["KEEL_INSTANCE"]) == ("h1", "web", "web-1")
    assert env["KEEL_PORT_HTTP"].isdigit() and env["KEEL_PORT_ADMIN"].isdigit()
    assert env["KEEL_PORT_HTTP"] != env["KEEL_PORT_ADMIN"]
    assert out["argv"] == [env["KEEL_PORT_HTTP"], "hello-x"]


async def test_process_has_its_own_session_and_group(tmp_path: Path, reap: None) -> None:
    """The command leads its own session and process group."""
    d = driver(tmp_path)
    h = await start(d, "web-1", spec("import time; time.sleep(60)"))
    assert os.getpgid(h.pid) == h.pid
    assert os.getsid(h.pid) == h.pid
    assert os.getpgid(h.pid) != os.getpgid(0)
    assert h.start_time == psutil.Process(h.pid).create_time()
    assert (await d.stop(h, grace_s=5)).describe() == "signal 15 (SIGTERM)"


IGNORE_TERM = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
    "print('ready', child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


async def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path: Path, reap: None) -> None:
    """A group that ignores SIGTERM is SIGKILLed after the grace period, children included."""
    d = driver(tmp_path)
    h = await start(d, "web-1", spec(IGNORE_TERM))
    await eventually(lambda: "ready" in log_text(tmp_path, "web-1"))
    grandchild = int(log_text(tmp_path, "web-1").split()[1])
    t0 = time.monotonic()
    result = await d.stop(h, grace_s=0.5)
    assert time.monotonic() - t0 >= 0.5
    assert result.describe() == "signal 9 (SIGKILL)"
    await eventually(lambda: not alive(grandchild))


async def test_exit_code_is_reported(tmp_path: Path, reap: None) -> None:
    """An own child's exit code comes from wait()."""
    d = driver(tmp_path)
    h = await start(d, "web-1", spec("import sys; sys.exit(3)"))
    assert (await d.wait(h)).describe() == "exit code 3"
    assert d.poll(h) is not None


async def test_logs_are_written_and_rotated(tmp_path: Path, reap: None) -> None:
    """stdout/stderr go to files the process writes; rotation keeps --log-backups copies."""
    d = driver(tmp_path, max_bytes=1000, backups=2)
    code = (
        "import sys, time\n"
        "for i in range(int(sys.argv[1])):\n"
        "    print('x' * 99, flush=True)\n"
        "print('err line', file=sys.stderr, flush=True)\n"
        "time.sleep(60)\n"
    )
    h = await start(d, "web-1", spec(code, "30"))
    await eventually(lambda: "err line" in log_text(tmp_path, "web-1", "stderr"))
    logs = tmp_path / "logs" / "web-1"
    assert (logs / "stdout.log").stat().st_size == 3000
    for _ in range(3):
        (logs / "stdout.log").write_text("y" * 1500)  # the agent only copies and truncates
        await d.maintain()
        assert (logs / "stdout.log").stat().st_size == 0
    assert (logs / "stdout.log.1").read_text() == "y" * 1500
    assert (logs / "stdout.log.2").exists()
    assert not (logs / "stdout.log.3").exists()
    assert not (logs / "stderr.log.1").exists()
    await d.stop(h, grace_s=5)


async def test_writes_after_rotation_continue_at_the_start(tmp_path: Path, reap: None) -> None:
    """After copy-then-truncate the running process keeps appending to the fresh file."""
    d = driver(tmp_path, max_bytes=100, backups=1)
    code = (
        "import sys\n"
        "print('a' * 200, flush=True)\n"
        "sys.stdin = open('/dev/null')\n"
        "import time\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
        "    import os\n"
        "    if os.path.exists('go'):\n"
        "        print('after', flush=True); break\n"
        "time.sleep(60)\n"
    )
    h = await start(d, "web-1", spec(code))
    logs = tmp_path / "logs" / "web-1"
    await eventually(lambda: log_text(tmp_path, "web-1").startswith("a"))
    await d.maintain()
    (tmp_path / "work" / "web-1" / "go").touch()
    await eventually(lambda: "after" in log_text(tmp_path, "web-1"))
    assert log_text(tmp_path, "web-1") == "after\n"
    assert (logs / "stdout.log.1").read_text().startswith("a" * 200)
    await d.stop(h, grace_s=5)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("no-such-program-keel",), "exec no-such-program-keel: executable file not found"),
        (("/nonexistent/bin/prog",), "exec /nonexistent/bin/prog: No such file or directory"),
    ],
)
async def test_start_failure_names_the_exec_error(
    tmp_path: Path, reap: None, command: tuple[str, ...], message: str
) -> None:
    """A missing executable is a StartFailed whose message says what the exec error was."""
    d = driver(tmp_path)
    with pytest.raises(StartFailed, match=message):
        await start(d, "web-1", WorkloadSpec(command=command))


async def test_start_failure_for_a_file_that_is_not_executable(tmp_path: Path, reap: None) -> None:
    """A file without the exec bit is a StartFailed saying permission was denied."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    d = driver(tmp_path)
    with pytest.raises(StartFailed, match="Permission denied"):
        await start(d, "web-1", WorkloadSpec(command=(str(script),)))


async def test_health_probes_against_a_real_server(tmp_path: Path, reap: None) -> None:
    """tcp and http probes pass against a real workload's port and fail once it is gone."""
    d = driver(tmp_path)
    s = WorkloadSpec(
        command=(PY, "-m", "http.server", "--bind", "127.0.0.1", "${KEEL_PORT_HTTP}"),
        ports=("http",),
    )
    ports = d.allocate_ports(s.ports)
    h = await start(d, "web-1", s, ports)
    env: dict[str, str] = {}
    http = HealthCheck(http_port="http", http_path="/")
    tcp = HealthCheck(tcp="http")
    missing = HealthCheck(http_port="http", http_path="/no-such-file")

    async def ok(check: HealthCheck) -> bool:
        return (await probe(check, ports=ports, env=env, timeout_s=1.0)).ok

    deadline = time.monotonic() + 10
    while not await ok(tcp):
        assert time.monotonic() < deadline, "server did not come up"
        await asyncio.sleep(0.05)
    assert await ok(http)
    result = await probe(missing, ports=ports, env=env, timeout_s=1.0)
    assert not result.ok and "404" in result.message
    await d.stop(h, grace_s=5)
    assert not await ok(tcp)


@pytest.mark.parametrize(
    ("command", "ok"), [(("true",), True), (("false",), False), (("sleep", "5"), False)]
)
async def test_exec_probe(command: tuple[str, ...], ok: bool) -> None:
    """An exec probe passes on exit 0 and fails on another exit or a timeout."""
    env = {"PATH": FIXED_PATH}
    result = await probe(HealthCheck(exec=command), ports={}, env=env, timeout_s=0.5)
    assert result.ok is ok


# Adoption ------------------------------------------------------------------------------------


def agent_settings(tmp_path: Path) -> Settings:
    return Settings(host="h1", state_dir=tmp_path, probe_interval_s=0.05, backoff_base_s=30)


def reconciler(tmp_path: Path) -> Reconciler:
    return Reconciler(
        StateStore(tmp_path / "state.json"),
        driver=driver(tmp_path),
        settings=agent_settings(tmp_path),
    )


async def settle(rec: Reconciler, cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        await rec.reconcile_once()
        if cond():
            return
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.02)


SLEEPER = Assignment("web-1", "web", 1, Desired.RUNNING, spec("import time; time.sleep(60)"))


def saved(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "state.json").read_text())
    return data


async def test_new_agent_adopts_running_process(tmp_path: Path, reap: None) -> None:
    """An agent built on the same state dir adopts the process: same pid, no restart."""
    first = reconciler(tmp_path)
    await first.open()
    first.apply_assignments(full=True, revision=1, assignments=[SLEEPER])
    await settle(
        first,
        lambda: (
            first.state.instances.get("web-1", None) is not None
            and first.state.instances["web-1"].pid is not None
        ),
    )
    pid = first.state.instances["web-1"].pid
    assert pid is not None
    await first.close()  # the agent goes away; its workload stays
    assert alive(pid)

    second = reconciler(tmp_path)
    await second.open()
    for _ in range(3):
        await second.reconcile_once()
    record = second.state.instances["web-1"]
    assert (record.pid, record.restart_count, record.starts) == (pid, 0, 1)
    report = second.full_report()[0]
    assert (report.pid, report.restart_count, report.ready) == (pid, 0, True)

    # The adopted process is not our child: its exit is seen through the process table.
    os.killpg(pid, signal.SIGKILL)
    await settle(second, lambda: second.state.instances["web-1"].last_exit != "")
    assert second.state.instances["web-1"].last_exit == "exited (status unknown)"
    await second.close()


async def test_reused_pid_with_another_start_time_is_not_adopted(
    tmp_path: Path, reap: None
) -> None:
    """A live pid whose start time differs is someone else's: not adopted, never signalled."""
    first = reconciler(tmp_path)
    await first.open()
    first.apply_assignments(full=True, revision=1, assignments=[SLEEPER])
    await settle(
        first,
        lambda: "web-1" in first.state.instances and first.state.instances["web-1"].pid is not None,
    )
    pid = first.state.instances["web-1"].pid
    assert pid is not None
    await first.close()

    data = json.loads((tmp_path / "state.json").read_text())
    data["instances"]["web-1"]["start_time"] -= 1000.0  # as if the pid had been reused
    (tmp_path / "state.json").write_text(json.dumps(data))

    second = reconciler(tmp_path)
    await second.open()
    await settle(second, lambda: second.state.instances["web-1"].pid is None)
    # Counted as exited while we were away; its restart waits the back-off (30 s here).
    assert second.state.instances["web-1"].last_exit == "exited (status unknown)"
    second.apply_assignments(full=True, revision=2, assignments=[])  # now an orphan
    await settle(second, lambda: "web-1" not in second.state.instances)
    assert alive(pid), "a process we did not recognise must never be signalled"
    await second.close()


async def test_orphan_left_by_previous_agent_is_stopped(tmp_path: Path, reap: None) -> None:
    """A process the previous agent ran, no longer desired in the new full set, is stopped."""
    first = reconciler(tmp_path)
    await first.open()
    first.apply_assignments(full=True, revision=1, assignments=[SLEEPER])
    await settle(
        first,
        lambda: "web-1" in first.state.instances and first.state.instances["web-1"].pid is not None,
    )
    pid = first.state.instances["web-1"].pid
    assert pid is not None
    await first.close()

    second = reconciler(tmp_path)
    await second.open()
    second.apply_assignments(full=True, revision=2, assignments=[])
    await settle(second, lambda: "web-1" not in second.state.instances)
    await eventually(lambda: not alive(pid))
    await second.close()


async def test_stop_all_stops_workloads_and_keeps_desired(tmp_path: Path, reap: None) -> None:
    """--stop-workloads-on-exit: every workload is stopped, the desired set stays on disk."""
    rec = reconciler(tmp_path)
    await rec.open()
    rec.apply_assignments(full=True, revision=4, assignments=[SLEEPER])
    await settle(
        rec, lambda: "web-1" in rec.state.instances and rec.state.instances["web-1"].pid is not None
    )
    pid = rec.state.instances["web-1"].pid
    assert pid is not None
    await rec.stop_all()
    await rec.close()
    await eventually(lambda: not alive(pid))
    data = saved(tmp_path)
    assert data["revision"] == 4
    assert "web-1" in data["desired"]  # type: ignore[operator]


def test_ports_come_from_the_port_range_and_skip_ports_in_use(tmp_path: Path) -> None:
    """Allocated ports lie in the range (outside the kernel's ephemeral ports), are distinct,
    and a port something else holds is never handed out."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        d = ProcessDriver(
            state_dir=tmp_path, log_max_bytes=1 << 20, log_backups=1, port_range=(port, port + 15)
        )
        for _ in range(20):
            ports = d.allocate_ports(("a", "b", "c"))
            assert len(set(ports.values())) == 3
            assert all(port < p <= port + 15 for p in ports.values())
        wide = driver(tmp_path).allocate_ports(("http",))
        assert 20000 <= wide["http"] <= 32000
    finally:
        taken.close()


def test_a_full_port_range_is_a_clear_error(tmp_path: Path) -> None:
    """No free port left: an OSError naming the range (reported as a failed start)."""
    held = []
    low = 0
    try:
        # Sixteen consecutive free ports, held, make a full range.
        probe_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe_sock.bind(("127.0.0.1", 0))
        low = probe_sock.getsockname()[1]
        held.append(probe_sock)
        for p in range(low + 1, low + 16):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            try:
                s.bind(("", p))
            except OSError:
                pytest.skip(f"port {p} is in use on this machine")
        d = ProcessDriver(
            state_dir=tmp_path, log_max_bytes=1 << 20, log_backups=1, port_range=(low, low + 15)
        )
        with pytest.raises(OSError, match=f"no free port left in the port range {low}-{low + 15}"):
            d.allocate_ports(("http",))
    finally:
        for s in held:
            s.close()
