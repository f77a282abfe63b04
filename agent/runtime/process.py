"""The real driver: each instance is a command in its own session and process group.

The environment is exactly what `base.instance_env` built plus the secret values
(`agent.secretenv`), never the agent's own; with `spec.user` the command runs as that user
(`identity`). Stdout and
stderr go straight to files under `<state-dir>/logs/<instance>/` (`logs.py`), and stopping is
SIGTERM to the whole group, then SIGKILL to the group once the grace period is over. Exits of
our own children come from `wait()`; a process adopted from a previous agent is not our child,
so its exit is seen by polling the process table (gone, zombie, or a different start time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psutil
import structlog

from agent.errors import StartFailed
from agent.runtime import identity, logs
from agent.runtime.base import FIXED_PATH, ExitInfo, Handle, expand
from agent.runtime.identity import RunAs
from keel.model import WorkloadSpec

log = structlog.get_logger("agent.runtime.process")

# psutil derives create_time from clock ticks (10 ms); a different process differs by more.
_START_TIME_TOLERANCE_S = 1e-3
# After SIGKILL the kernel ends the process promptly; this only bounds a wedged wait.
_KILL_WAIT_S = 10.0


def _same_process(pid: int, start_time: float) -> bool:
    """True while `pid` is the live (not zombie) process that started at `start_time`."""
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - start_time) > _START_TIME_TOLERANCE_S:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        # Someone else's process: certainly not one we started.
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


class ProcessDriver:
    """Runs real processes; see the module docstring."""

    def __init__(
        self,
        *,
        state_dir: Path,
        log_max_bytes: int,
        log_backups: int,
        poll_interval_s: float = 0.2,
        port_range: tuple[int, int] = (20000, 32000),
    ) -> None:
        self._port_range = port_range
        self._log_dir = state_dir / "logs"
        self._work_dir = state_dir / "work"
        self._log_max_bytes = log_max_bytes
        self._log_backups = log_backups
        self._poll_interval_s = poll_interval_s
        self._children: dict[int, asyncio.subprocess.Process] = {}  # own children by pid

    async def start(
        self,
        instance_id: str,
        spec: WorkloadSpec,
        *,
        env: Mapping[str, str],
        ports: Mapping[str, int],
    ) -> Handle:
        argv = expand(spec.command, env)
        if not argv or not argv[0]:
            raise StartFailed("the command is empty")
        program = argv[0]
        # Errors name the program as the spec wrote it: expanded, it may carry env values.
        named = spec.command[0]
        if "/" not in program:
            # Resolve against the instance's PATH ourselves: the stdlib and uvloop differ on
            # whether the child's or the agent's PATH is searched.
            search = env.get("PATH", "")
            found = shutil.which(program, path=search)
            if found is None:
                # The default PATH is shown; one set by the workload's env is not (env values
                # stay out of messages and logs).
                where = search if search == FIXED_PATH else "the PATH set in the workload's env"
                raise StartFailed(f"exec {named}: executable file not found in PATH ({where})")
            program = found
        workdir = self._work_dir / instance_id
        run_as = await asyncio.to_thread(identity.resolve, spec.user)
        out, err = await asyncio.to_thread(self._prepare, instance_id, workdir, run_as)
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *argv[1:],
                env=dict(env),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Own session and process group: a stop signals everything the command forked,
                # and a signal to the agent's group (Ctrl-C) does not reach the workload.
                start_new_session=True,
                preexec_fn=None if run_as is None else run_as.drop,
            )
        except OSError as e:
            hint = ""
            if run_as is not None and isinstance(e, PermissionError):
                hint = (
                    f" (as user {run_as.user}: it needs search permission on every directory "
                    f"down to {workdir}, and execute permission on {program})"
                )
            raise StartFailed(f"exec {named}: {e.strerror or e}{hint}") from e
        finally:
            os.close(out)
            os.close(err)
        # Drop children already reaped (their watchers hold their own reference).
        for pid in [p for p, c in self._children.items() if c.returncode is not None]:
            del self._children[pid]
        self._children[proc.pid] = proc
        try:
            start_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            # Already exited and reaped: wait() reports how; the start time is never compared.
            start_time = 0.0
        return Handle(instance_id=instance_id, pid=proc.pid, start_time=start_time)

    def _prepare(self, instance_id: str, workdir: Path, run_as: RunAs | None) -> tuple[int, int]:
        workdir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            # The working directory is the workload's own; its log files stay the agent's
            # (the agent writes, rotates and serves them).
            os.chown(workdir, run_as.uid, run_as.gid)
        return logs.open_logs(self._log_dir, instance_id)

    def poll(self, handle: Handle) -> ExitInfo | None:
        proc = self._children.get(handle.pid)
        if proc is not None and not handle.adopted:
            return None if proc.returncode is None else ExitInfo.from_returncode(proc.returncode)
        return None if _same_process(handle.pid, handle.start_time) else ExitInfo()

    async def wait(self, handle: Handle) -> ExitInfo:
        proc = self._children.get(handle.pid)
        if proc is not None and not handle.adopted:
            return ExitInfo.from_returncode(await proc.wait())
        while True:
            # Not our child: no wait() and no SIGCHLD, so look at the process table.
            result = await asyncio.to_thread(self.poll, handle)
            if result is not None:
                return result
            await asyncio.sleep(self._poll_interval_s)

    async def stop(self, handle: Handle, *, grace_s: float) -> ExitInfo:
        if handle.adopted and not _same_process(handle.pid, handle.start_time):
            # The pid may belong to someone else by now: never signal it.
            return ExitInfo()
        pgid = handle.pid  # start_new_session made the command its group's leader
        _signal_group(pgid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                result = await self.wait(handle)
        except TimeoutError:
            log.warning(
                "stop grace over, killing process group",
                pid=handle.pid,
                grace_s=grace_s,
                instance=handle.instance_id,
            )
            _signal_group(pgid, signal.SIGKILL)
            async with asyncio.timeout(_KILL_WAIT_S):
                result = await self.wait(handle)
        # The leader is gone; anything it forked that lingers in its group goes too.
        _signal_group(pgid, signal.SIGKILL)
        return result

    def adopt(self, instance_id: str, pid: int, start_time: float) -> Handle | None:
        if not _same_process(pid, start_time):
            return None
        return Handle(instance_id=instance_id, pid=pid, start_time=start_time, adopted=True)

    def allocate_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        """Free ports from the port range, picked at random (agents sharing a machine rarely
        pick alike) and checked by binding them. Every socket is held until all are bound,
        so one instance never gets the same port twice."""
        low, high = self._port_range
        candidates = random.sample(range(low, high + 1), k=min(high - low + 1, 64 * len(names)))
        with contextlib.ExitStack() as stack:
            ports: dict[str, int] = {}
            for name in names:
                while name not in ports:
                    if not candidates:
                        raise OSError(f"no free port left in the port range {low}-{high}")
                    port = candidates.pop()
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    try:
                        s.bind(("", port))
                    except OSError:
                        continue
                    ports[name] = port
            return ports

    async def maintain(self) -> None:
        rotated = await asyncio.to_thread(
            logs.rotate_all,
            self._log_dir,
            max_bytes=self._log_max_bytes,
            backups=self._log_backups,
        )
        for path in rotated:
            log.debug("log rotated", path=str(path))

    async def forget(self, instance_id: str) -> None:
        await asyncio.to_thread(self._remove, instance_id)

    def _remove(self, instance_id: str) -> None:
        logs.remove_logs(self._log_dir, instance_id)
        shutil.rmtree(self._work_dir / instance_id, ignore_errors=True)
