"""One agent per state directory: an exclusive lock on `<state-dir>/agent.lock`.

Two agents on one state dir would both claim its workloads and keep replacing each other's
stream. `agent.main` takes the lock before anything else; a second agent gets `StateDirLocked`
naming the pid that holds it and exits. The lock is `flock`, held by the open file: the kernel
releases it when the holder dies, however it dies (a `kill -9` leaves no stale lock), and it
is not inherited by the workloads the agent starts (Python opens files close-on-exec), so a
workload that outlives its agent does not keep the next one out. The holder's pid is written
in the file only for that message; the lock itself is what counts.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.errors import ConfigError, StateDirLocked

LOCK_FILE = "agent.lock"


class StateDirLock:
    """Holds the lock until `release` (or until the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


def acquire(state_dir: Path) -> StateDirLock:
    """Take the state dir's lock, or raise `StateDirLocked` naming the holder's pid.

    Blocking but brief (a mkdir, an open, a non-blocking flock): call before the event loop.
    """
    path = state_dir / LOCK_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ConfigError(f"--state-dir: cannot open {path}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise StateDirLocked(
            f"another keel-agent (pid {holder or 'unknown'}) is running on state dir "
            f"{state_dir}: stop it first, or give this agent its own --state-dir",
            pid=holder,
            path=path,
        ) from None
    except OSError as e:
        os.close(fd)
        raise ConfigError(f"--state-dir: cannot lock {path}: {e.strerror or e}") from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateDirLock(path, fd)


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, if it has yet (it writes right after taking the lock)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
