"""`make run`: a whole Keel fleet on this machine, in the foreground, until Ctrl-C.

Starts one `keel-controlplane` (its own embedded Postgres under the state dir) and three
`keel-agent`s with the process driver (host-1..host-3, each with its own state dir), waits until
the control plane answers and every host is READY, applies the example workload with `keelctl`,
and prints how to reach the fleet. Ctrl-C or SIGTERM stops it in order: the agents first (run
with --stop-workloads-on-exit, so they stop their workloads), then the control plane (which
stops its Postgres), escalating to SIGKILL at a deadline; nothing is left running. Running it
again reuses the same state dir. Everything talks to the fleet through `keelctl`, as an
operator would; the launcher itself never loads gRPC, so forking the children stays safe.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

BIN = Path(sys.executable).parent
CONTROLPLANE_METRICS = "127.0.0.1:9464"
AGENT_METRICS_BASE_PORT = 9465
HOSTS = ("host-1", "host-2", "host-3")
START_TIMEOUT_S = 120.0  # the first start runs initdb for the embedded Postgres
AGENT_STOP_S = 30.0  # agents stop their workloads first: each gets its stop_grace
CONTROLPLANE_STOP_S = 30.0
_PR_SET_PDEATHSIG = 1


class LocalFleetError(Exception):
    """The local fleet could not start; the message says why and what to do."""


@dataclass
class _Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    workloads: list[psutil.Process] = field(default_factory=list)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"\n===== {stamp} {' '.join(self.argv)}\n".encode())
            out.flush()
            # Own session: the terminal's Ctrl-C reaches only this launcher, which then stops
            # the fleet in order (agents before the control plane and its database).
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # preexec_fn is unsafe only with threads, and the launcher has none.
                preexec_fn=_die_with_parent,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the launcher dies (say, kill -9), so a crashed
    launcher still stops the fleet the graceful way."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Stop:
    """Counts SIGINT/SIGTERM: the first asks for a graceful stop, a second for a quick one."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            print("\nstopping the local fleet (Ctrl-C again to kill it at once) ...", flush=True)
        else:
            print("\nkilling the local fleet ...", flush=True)

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def hurried(self) -> bool:
        return self.count > 1


def _port_owner(port: int) -> str:
    """Who listens on port, as 'pid N (cmdline)', when the OS lets us see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return "another process"
                with contextlib.suppress(psutil.Error):
                    cmd = " ".join(psutil.Process(conn.pid).cmdline())
                    return f"pid {conn.pid} ({cmd})"
                return f"pid {conn.pid}"
    return "another process"


def check_port_free(host: str, port: int) -> None:
    """Raises LocalFleetError naming the owner if host:port is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise LocalFleetError(f"cannot listen on {host}:{port}: {exc}") from exc
            raise LocalFleetError(
                f"{host}:{port} is already in use by {_port_owner(port)}. Is another local "
                f"fleet (`make run`) still running? Stop it, or pass --listen with another port."
            ) from exc


def _wait(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    stop: _Stop,
    children: Sequence[_Child],
) -> bool:
    """Polls check until true; False if a stop was requested; raises on a dead child or timeout."""
    deadline = time.monotonic() + timeout
    while not stop.requested:
        for child in children:
            if not child.running():
                raise LocalFleetError(
                    f"{child.name} exited while waiting for {what}; the end of {child.log}:\n"
                    f"{child.tail()}"
                )
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() > deadline:
            raise LocalFleetError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)
    return False


def _keelctl(address: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONTROLPLANE"}
    return subprocess.run(
        [str(BIN / "keelctl"), "--controlplane", address, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _keelctl_json(address: str, *args: str) -> Any:
    """keelctl -o json ARGS parsed, or None while the control plane does not answer."""
    result = _keelctl(address, "--timeout", "2s", "-o", "json", *args, timeout=15)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _answers(address: str) -> bool:
    return _keelctl_json(address, "get", "hosts") is not None


def _hosts_ready(address: str) -> bool:
    reply = _keelctl_json(address, "get", "hosts") or {}
    ready = {h.get("name") for h in reply.get("hosts", []) if h.get("state") == "READY"}
    return ready >= set(HOSTS)


def _running(address: str, workload: str) -> tuple[int, int]:
    """(running, desired) instances of workload."""
    status = (_keelctl_json(address, "describe", "workload", workload) or {}).get("status", {})
    return int(status.get("running", 0)), int(status.get("desired", 0))


def _workload_name(path: Path) -> str:
    import yaml

    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise LocalFleetError(f"{path} has no workload name")
    return str(doc["name"])


def _banner(address: str, state_dir: Path, logs: Path, workload: str) -> str:
    keelctl = BIN / "keelctl"
    rel = os.path.relpath(keelctl) if keelctl.is_relative_to(Path.cwd()) else str(keelctl)
    agent_ports = f"{AGENT_METRICS_BASE_PORT}-{AGENT_METRICS_BASE_PORT + len(HOSTS) - 1}"
    return f"""
The local Keel fleet is up: a control plane on {address} and agents {", ".join(HOSTS)}.

  export KEEL_CONTROLPLANE={address}
  {rel} get hosts
  {rel} get workloads
  {rel} get instances
  {rel} describe workload {workload}
  {rel} apply -f examples/web.yaml
  {rel} stuck
  {rel} events --for workload/{workload}

Metrics: http://{CONTROLPLANE_METRICS}/metrics (control plane), \
http://127.0.0.1:{agent_ports}/metrics (agents)
State: {state_dir}    Logs: {logs}/{{controlplane,{",".join(HOSTS)}}}.log
Ctrl-C stops the fleet and its workloads; `make run` again picks up the same state.
"""


def _stop(children: Sequence[_Child], *, deadline_s: float, stop: _Stop) -> None:
    """SIGTERM each child's group, wait until deadline (shorter once hurried), then SIGKILL."""
    for child in children:
        if child.running():
            child.signal(signal.SIGTERM)
    deadline = time.monotonic() + deadline_s
    while any(c.running() for c in children):
        if stop.hurried or time.monotonic() > deadline:
            for child in children:
                if child.running():
                    print(f"{child.name} did not stop in time; killing it", flush=True)
                    child.signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    for child in children:
        if child.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(10)
            child.signal(signal.SIGKILL)  # anything left in its process group


def _kill_processes(procs: Sequence[psutil.Process], *, grace: float, what: str) -> None:
    """Stops processes that outlived their owner: SIGTERM their groups, SIGKILL after grace."""
    alive = [p for p in procs if p.is_running()]
    if not alive:
        return
    print(f"stopping {len(alive)} leftover {what} process(es)", flush=True)
    for proc in alive:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
    _, still = psutil.wait_procs(alive, timeout=grace)
    for proc in still:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            proc.kill()
    psutil.wait_procs(still, timeout=5)


def _leftovers_under(state_dir: Path) -> list[psutil.Process]:
    """Keel and Postgres processes whose command line names the state dir: a control plane
    killed at the deadline leaves its embedded Postgres behind. (Only those: an operator's
    `tail -f .keel/logs/...` is none of our business.)"""
    marker = str(state_dir) + os.sep
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        ours = proc.info.get("name") == "postgres" or any(
            Path(arg).name in ("keel-agent", "keel-controlplane") for arg in cmdline[:2]
        )
        if ours and proc.pid != os.getpid() and any(marker in arg for arg in cmdline):
            found.append(proc)
    return found


def run(*, state_dir: Path, workload: Path, listen: str, agent_args: Sequence[str] = ()) -> int:
    state_dir = state_dir.resolve()
    logs = state_dir / "logs"
    host, _, port = listen.rpartition(":")
    check_port_free(host, int(port))
    if not workload.exists():
        raise LocalFleetError(f"no workload file at {workload}")
    name = _workload_name(workload)

    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    controlplane = _Child(
        "controlplane",
        [
            str(BIN / "keel-controlplane"),
            "--state-dir",
            str(state_dir / "controlplane"),
            "--listen",
            listen,
            "--metrics",
            CONTROLPLANE_METRICS,
        ],
        logs / "controlplane.log",
    )
    agents = [
        _Child(
            h,
            [
                str(BIN / "keel-agent"),
                "--controlplane",
                listen,
                "--host",
                h,
                "--driver",
                "process",
                "--state-dir",
                str(state_dir / h),
                "--stop-workloads-on-exit",
                # examples/web.yaml selects role=web hosts.
                "--label",
                "role=web",
                # Each agent scrapes on a port of its own: 9465, 9466, 9467.
                "--metrics",
                f"127.0.0.1:{AGENT_METRICS_BASE_PORT + n}",
                *agent_args,
            ],
            logs / f"{h}.log",
        )
        for n, h in enumerate(HOSTS)
    ]
    for d in [logs, state_dir / "controlplane", *(state_dir / h for h in HOSTS)]:
        d.mkdir(parents=True, exist_ok=True)
    env_url = os.environ.pop("KEEL_DATABASE_URL", None)
    if env_url:
        print("note: ignoring KEEL_DATABASE_URL; the local fleet runs its own embedded Postgres")

    status = 0
    try:
        print(f"starting the control plane on {listen} (log: {controlplane.log}) ...", flush=True)
        controlplane.start()
        if not _wait(
            lambda: _answers(listen),
            timeout=START_TIMEOUT_S,
            what="the control plane to answer",
            stop=stop,
            children=[controlplane],
        ):
            return 0
        print(f"starting agents {', '.join(HOSTS)} ...", flush=True)
        for agent in agents:
            agent.start()
        if not _wait(
            lambda: _hosts_ready(listen),
            timeout=60,
            what=f"hosts {', '.join(HOSTS)} to be READY",
            stop=stop,
            children=[controlplane, *agents],
        ):
            return 0

        applied_at = time.monotonic()
        result = _keelctl(listen, "apply", "-f", str(workload))
        if result.returncode != 0:
            raise LocalFleetError(f"keelctl apply -f {workload} failed: {result.stderr.strip()}")
        print(result.stdout.strip(), flush=True)

        def all_running() -> bool:
            running, desired = _running(listen, name)
            return desired > 0 and running >= desired

        if _wait(
            all_running,
            timeout=120,
            what=f"{name}'s replicas to run",
            stop=stop,
            children=[controlplane, *agents],
        ):
            running, _ = _running(listen, name)
            elapsed = time.monotonic() - applied_at
            print(f"{name}: {running} replicas RUNNING {elapsed:.1f}s after apply", flush=True)
        print(_banner(listen, state_dir, logs, name), flush=True)

        while not stop.requested:
            for child in [controlplane, *agents]:
                if not child.running():
                    raise LocalFleetError(
                        f"{child.name} exited unexpectedly; the end of {child.log}:\n{child.tail()}"
                    )
            # Remember what each agent runs, to stop it ourselves if the agent cannot.
            for agent in agents:
                with contextlib.suppress(psutil.Error, AssertionError):
                    assert agent.popen is not None
                    agent.workloads = psutil.Process(agent.popen.pid).children(recursive=True)
            time.sleep(0.5)
    except LocalFleetError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        _stop(agents, deadline_s=AGENT_STOP_S, stop=stop)
        _kill_processes([p for a in agents for p in a.workloads], grace=10, what="workload")
        _stop([controlplane], deadline_s=CONTROLPLANE_STOP_S, stop=stop)
        _kill_processes(_leftovers_under(state_dir), grace=10, what="local fleet")
        print("the local fleet has stopped", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keel.localfleet",
        description="Run a local Keel fleet (control plane + 3 agents) until Ctrl-C.",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".keel"))
    parser.add_argument("--workload", type=Path, default=Path("examples/web.yaml"))
    parser.add_argument("--listen", default="127.0.0.1:7443", help="control plane HOST:PORT")
    args = parser.parse_args(argv)
    try:
        return run(state_dir=args.state_dir, workload=args.workload, listen=args.listen)
    except LocalFleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
