"""The local fleet's processes: each child in its own session, dying with the launcher, stopped
in order with escalation to SIGKILL, and whatever outlived its owner found and stopped.

Also whether the control plane's port is free, and who holds it. Used by
`keel.localfleet.launcher`, which never loads gRPC, so forking these children stays safe.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psutil

from keel.localfleet import LocalFleetError

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One process of the fleet: its own session, its output appended to its log."""

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
                preexec_fn=die_with_parent,
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


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the launcher dies (say, kill -9), so a crashed
    launcher still stops the fleet the graceful way."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class StopRequest:
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


def check_port_free(host: str, port: int, *, hint: str) -> None:
    """Raises LocalFleetError naming the owner if host:port is already taken; hint (a sentence)
    says what to do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise LocalFleetError(f"cannot listen on {host}:{port}: {exc}") from exc
            raise LocalFleetError(
                f"{host}:{port} is already in use by {_port_owner(port)}. Is another local "
                f"fleet (`make run`) still running? {hint}"
            ) from exc


def stop_children(children: Sequence[Child], *, deadline_s: float, stop: StopRequest) -> None:
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


def kill_processes(procs: Sequence[psutil.Process], *, grace: float, what: str) -> None:
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


def leftovers_under(state_dir: Path) -> list[psutil.Process]:
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
