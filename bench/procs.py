"""Child processes of a benchmark run: each in its own process group, logged, ended for sure.

`Children` starts every process a run needs (control planes, hollow fleets, real agents) in a
session of its own with its output in `<root>/<name>.log`, and `stop_all` ends them however the
run exits: SIGTERM to every group, SIGKILL to what is left at the deadline, then any process
whose command line or environment names the run's directory (an embedded Postgres, a workload
that outlived its agent by design). `wait_for` and `await_for` poll a condition with a deadline.
Used by `bench.convergence`, `bench.fleet` and the scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
import psutil

BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 30.0

T = TypeVar("T")


class BenchError(Exception):
    """A benchmark step that could not complete; the message says which and where to look."""


# What one size of a scenario may fail with and leave the rest of the run standing: the sizes
# already measured keep their figures, the table says at which size and why it stopped.
STEP_FAILURES = (BenchError, grpc.RpcError, asyncpg.PostgresError, OSError, TimeoutError)


def first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:400]


def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2
) -> T:
    """Polls `check` until it returns something truthy; BenchError naming `what` at the deadline.

    gRPC, OS and value errors count as "not yet" (a process may still be starting).
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(grpc.RpcError, OSError, ValueError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


async def await_for(
    check: Callable[[], Awaitable[T | None]], *, within_s: float, what: str, interval: float = 0.25
) -> T:
    """`wait_for` for a coroutine check, on the running loop."""
    deadline = time.monotonic() + within_s
    while True:
        with contextlib.suppress(grpc.RpcError, OSError, ValueError):
            value = await check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the children it starts
    (every hollow agent holds a connection, and the control plane one per agent)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Child:
    """One process started by `Children`, in a process group of its own."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        # Set when the run ended it on purpose (a kill -9 scenario): not a failure then.
        self.ended_on_purpose = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the whole group, on purpose; reaps the child."""
        self.ended_on_purpose = True
        self.signal_group(signal.SIGKILL)
        self.popen.wait()

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the group, SIGKILL it after `grace_s`; reaps the child."""
        if self.running():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace_s)
        # The group leader may be gone while others in its group live on.
        self.signal_group(signal.SIGKILL)
        self.popen.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """Every process a run started under `root`; `stop_all` ends them all (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Child:
        log_path = self.root / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session and group: signals aimed at it reach nothing else, and a Ctrl-C
                # on the terminal reaches only the bench, which then ends it.
                start_new_session=True,
                env={**base, **(env or {})},
            )
        child = Child(name, popen, log_path)
        self._children.append(child)
        return child

    def check_alive(self) -> None:
        """BenchError naming the first child that exited when it should not have."""
        for child in self._children:
            if not child.ended_on_purpose and not child.running():
                raise BenchError(
                    f"{child.name} exited ({child.popen.returncode}); its log ends:\n"
                    f"{child.tail()}\n(whole log: {child.log})"
                )

    def stop(self, child: Child, grace_s: float = STOP_TIMEOUT_S) -> None:
        child.stop(grace_s)
        child.ended_on_purpose = True

    def stop_all(self) -> None:
        """Ends every child (the last started first), then sweeps what names the directory."""
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        kill_processes_naming(str(self.root))


def kill_processes_naming(marker: str, *, grace_s: float = 3.0) -> list[int]:
    """Kills (group and all) every process whose command line or environment contains marker.

    The safety net: workloads live in their own sessions and survive their agent by design;
    the bench gives them the run's directory in their environment.
    """
    me = os.getpid()
    spared = {me, *(p.pid for p in psutil.Process(me).parents())}
    own_group = os.getpgid(0)
    victims: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in spared:
            continue
        with contextlib.suppress(psutil.Error):
            named = any(marker in arg for arg in proc.info.get("cmdline") or [])
            if named or any(marker in value for value in proc.environ().values()):
                victims.append(proc)

    def signal_all(sig: int) -> None:
        for proc in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                pgid = os.getpgid(proc.pid)
                if pgid != own_group:
                    os.killpg(pgid, sig)
                proc.send_signal(sig)

    signal_all(signal.SIGTERM)
    _, alive = psutil.wait_procs(victims, timeout=grace_s)
    if alive:
        signal_all(signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in victims]
