"""Workload log files: `<state-dir>/logs/<instance>/stdout.log` and `stderr.log`.

The process writes its files directly (opened O_APPEND and handed over as its stdout/stderr),
so logging survives an agent restart and costs the agent nothing per line. Rotation is by size
with copy-then-truncate: the process keeps its descriptor, and O_APPEND makes its next write
land at the new end of the truncated file. Blocking file I/O: the driver runs it in a thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

STREAMS = ("stdout", "stderr")


def instance_log_dir(log_dir: Path, instance_id: str) -> Path:
    return log_dir / instance_id


def open_logs(log_dir: Path, instance_id: str) -> tuple[int, int]:
    """File descriptors (stdout, stderr) to hand to a new process; the caller closes them."""
    d = instance_log_dir(log_dir, instance_id)
    d.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(d / "stdout.log", flags, 0o640)
    try:
        err = os.open(d / "stderr.log", flags, 0o640)
    except BaseException:
        os.close(out)
        raise
    return out, err


def rotate_if_needed(path: Path, *, max_bytes: int, backups: int) -> bool:
    """Copy `path` to `path.1` (shifting older copies up) and truncate it, if it is too big.

    Lines written between the copy and the truncate are lost; that window is what
    copy-then-truncate trades for not having to signal the process to reopen its files.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    if backups > 0:
        for n in range(backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def rotate_all(log_dir: Path, *, max_bytes: int, backups: int) -> list[Path]:
    """Rotate every instance's files that are over `max_bytes`; the rotated paths."""
    rotated: list[Path] = []
    if not log_dir.is_dir():
        return rotated
    for d in log_dir.iterdir():
        for stream in STREAMS:
            p = d / f"{stream}.log"
            if rotate_if_needed(p, max_bytes=max_bytes, backups=backups):
                rotated.append(p)
    return rotated


def remove_logs(log_dir: Path, instance_id: str) -> None:
    shutil.rmtree(instance_log_dir(log_dir, instance_id), ignore_errors=True)
