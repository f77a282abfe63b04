"""Health probes: tcp connect, http GET (200-399) or an exec command (exit 0).

The reconciler runs `probe` for every running instance with a health check on each tick
(--probe-interval), each bounded by a timeout; readiness requires the last probe to pass.
Probes go to 127.0.0.1 on the instance's allocated port for the named port; an exec probe runs
as the workload's `spec.user` (`agent.runtime.identity`), like the command it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from agent.errors import StartFailed
from agent.runtime import identity
from agent.runtime.base import expand
from keel.model import HealthCheck

log = structlog.get_logger("agent.health")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


class Prober(Protocol):
    async def __call__(
        self,
        check: HealthCheck,
        *,
        ports: Mapping[str, int],
        env: Mapping[str, str],
        timeout_s: float,
        user: str = "",
    ) -> ProbeResult: ...


@dataclass(frozen=True)
class Target:
    """One running instance to probe."""

    instance_id: str
    check: HealthCheck
    ports: Mapping[str, int]
    env: Mapping[str, str]
    workload: str = ""
    user: str = ""  # spec.user: an exec probe runs as the workload's user, like its command


class HealthMonitor:
    """Probes the running instances every interval and keeps the last result of each.

    Probes run concurrently, each bounded by `timeout_s`, in their own task: a slow probe
    never holds up the reconciler, which is woken (`on_change`) when a result flips.
    """

    def __init__(
        self,
        *,
        targets: Callable[[], list[Target]],
        on_change: Callable[[], None],
        prober: Prober,
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._failing_since: dict[str, float] = {}
        self._forgotten: dict[str, int] = {}  # instance -> times forgotten (restarts)
        self._targets = targets
        self._on_change = on_change
        self._prober = prober
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._results: dict[str, ProbeResult] = {}

    def result(self, instance_id: str) -> ProbeResult | None:
        """The last result, or None before the first probe of the current process."""
        return self._results.get(instance_id)

    def failing_since(self, instance_id: str) -> float | None:
        """When the probes of the current process started failing; None while they pass."""
        return self._failing_since.get(instance_id)

    def forget(self, instance_id: str) -> None:
        self._results.pop(instance_id, None)
        self._failing_since.pop(instance_id, None)
        # A probe of the old process still in flight must not land on the next one.
        self._forgotten[instance_id] = self._forgotten.get(instance_id, 0) + 1

    async def run(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._interval_s)

    async def probe_all(self) -> None:
        targets = self._targets()
        epochs = {t.instance_id: self._forgotten.get(t.instance_id, 0) for t in targets}
        results = await asyncio.gather(
            *(
                self._prober(
                    t.check, ports=t.ports, env=t.env, timeout_s=self._timeout_s, user=t.user
                )
                for t in targets
            )
        )
        changed = False
        now = self._clock()
        for t, r in zip(targets, results, strict=True):
            if self._forgotten.get(t.instance_id, 0) != epochs[t.instance_id]:
                continue  # probed a process that has been replaced meanwhile
            before = self._results.get(t.instance_id)
            if before is None or before.ok != r.ok:
                changed = True
                log.info(
                    "health changed",
                    instance=t.instance_id,
                    workload=t.workload,
                    healthy=r.ok,
                    message=r.message,
                )
            if r.ok:
                self._failing_since.pop(t.instance_id, None)
            else:
                self._failing_since.setdefault(t.instance_id, now)
            self._results[t.instance_id] = r
        if changed:
            self._on_change()


async def probe(
    check: HealthCheck,
    *,
    ports: Mapping[str, int],
    env: Mapping[str, str],
    timeout_s: float,
    user: str = "",
) -> ProbeResult:
    """Run one probe; never raises, a failure is a result with a message for a person."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _probe(check, ports, env, user)
    except TimeoutError:
        return ProbeResult(False, f"health check timed out after {timeout_s:g}s")


async def always_healthy(
    check: HealthCheck,
    *,
    ports: Mapping[str, int],
    env: Mapping[str, str],
    timeout_s: float,
    user: str = "",
) -> ProbeResult:
    """The prober of the fake driver: simulated processes listen on nothing."""
    return ProbeResult(True)


async def _probe(
    check: HealthCheck, ports: Mapping[str, int], env: Mapping[str, str], user: str
) -> ProbeResult:
    if check.tcp is not None:
        return await _tcp(check.tcp, ports)
    if check.http_port is not None:
        return await _http(check.http_port, check.http_path, ports)
    if check.exec is not None:
        return await _exec(check.exec, env, user)
    return ProbeResult(True)


async def _tcp(port_name: str, ports: Mapping[str, int]) -> ProbeResult:
    port = ports.get(port_name)
    if port is None:
        return ProbeResult(False, f"tcp probe: no port named {port_name}")
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return ProbeResult(False, f"tcp probe: connect to 127.0.0.1:{port} failed: {e.strerror}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True)


async def _http(port_name: str, path: str, ports: Mapping[str, int]) -> ProbeResult:
    port = ports.get(port_name)
    if port is None:
        return ProbeResult(False, f"http probe: no port named {port_name}")
    url = f"http://127.0.0.1:{port}{path}"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return ProbeResult(False, f"http probe: GET {url} failed: {e.strerror}")
    try:
        # HTTP/1.0 and Connection: close keep this to one status line to read.
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: keel-agent\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        line = await reader.readline()
    except OSError as e:
        return ProbeResult(False, f"http probe: GET {url} failed: {e.strerror}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return ProbeResult(False, f"http probe: GET {url}: not an HTTP response")
    status = int(parts[1])
    if 200 <= status < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"http probe: GET {url} returned {status}")


async def _exec(command: tuple[str, ...], env: Mapping[str, str], user: str) -> ProbeResult:
    # Messages name the command as written in the spec: expanded, it may carry env values.
    shown = " ".join(command)
    argv = expand(command, env)
    if not argv:
        return ProbeResult(False, "exec probe: the command is empty")
    # Resolved against the instance's PATH, as the process driver does for the command.
    argv[0] = shutil.which(argv[0], path=env.get("PATH", "")) or argv[0]
    try:
        run_as = await asyncio.to_thread(identity.resolve, user)
    except StartFailed as e:
        return ProbeResult(False, f"exec probe: {e}")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=None if run_as is None else run_as.drop,
        )
    except OSError as e:
        return ProbeResult(False, f"exec probe: {command[0]}: {e.strerror or e}")
    try:
        rc = await proc.wait()
    except asyncio.CancelledError:
        # Timed out (asyncio.timeout cancels us): the probe must not outlive its timeout.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    if rc == 0:
        return ProbeResult(True)
    return ProbeResult(False, f"exec probe: {shown} exited with {rc}")
