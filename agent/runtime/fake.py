"""A simulated driver: no process is started; for benchmarks, hollow fleets and tests.

Starts take `start_delay_s`; pids are made up (from 1_000_000 up, beyond any real pid_max
default); processes live until stopped or until a test or benchmark injects a crash
(`crash`) or a start failure (`fail_next_start`). Simulated processes do not outlive the
driver, so a restarted hollow agent adopts nothing and starts its instances again.

`start_gate` is a latch for tests (--fake-start-gate): while that file exists, every start
waits (polling every 50 ms) before it completes, so a test can hold convergence back, watch
the backlog grow, then delete the file and watch it drain.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import StartFailed
from agent.runtime.base import ExitInfo, Handle
from keel.model import WorkloadSpec

_GATE_POLL_S = 0.05


@dataclass
class _Sim:
    handle: Handle
    env: dict[str, str]
    exited: asyncio.Future[ExitInfo] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FakeDriver:
    """Simulated processes; see the module docstring."""

    def __init__(self, *, start_delay_s: float = 0.0, start_gate: Path | None = None) -> None:
        self._start_delay_s = start_delay_s
        self._start_gate = start_gate
        self._pids = itertools.count(1_000_000)
        self._ports = itertools.count(20_000)
        self._sims: dict[int, _Sim] = {}
        self._fail_next: dict[str, str] = {}

    # Failure injection -------------------------------------------------------------------

    def crash(self, instance_id: str, exit: ExitInfo | None = None) -> bool:
        """The running simulated process of `instance_id` exits; False if none runs."""
        for sim in list(self._sims.values()):
            if sim.handle.instance_id == instance_id and not sim.exited.done():
                sim.exited.set_result(exit or ExitInfo(code=1))
                return True
        return False

    def fail_next_start(self, instance_id: str, message: str) -> None:
        self._fail_next[instance_id] = message

    def running(self) -> dict[str, Handle]:
        """Live simulated processes by instance id."""
        return {s.handle.instance_id: s.handle for s in self._sims.values() if not s.exited.done()}

    def env_of(self, instance_id: str) -> dict[str, str]:
        for sim in self._sims.values():
            if sim.handle.instance_id == instance_id:
                return dict(sim.env)
        raise KeyError(instance_id)

    # Driver ------------------------------------------------------------------------------

    async def start(
        self,
        instance_id: str,
        spec: WorkloadSpec,
        *,
        env: Mapping[str, str],
        ports: Mapping[str, int],
    ) -> Handle:
        if self._start_delay_s > 0:
            await asyncio.sleep(self._start_delay_s)
        if self._start_gate is not None:
            await self._gate_open(self._start_gate)
        message = self._fail_next.pop(instance_id, None)
        if message is not None:
            raise StartFailed(message)
        await self.forget(instance_id)  # earlier, exited simulations of this instance
        handle = Handle(instance_id=instance_id, pid=next(self._pids), start_time=time.time())
        self._sims[handle.pid] = _Sim(handle=handle, env=dict(env))
        return handle

    @staticmethod
    async def _gate_open(gate: Path) -> None:
        # A file another process removes: there is nothing to await but its absence.
        while await asyncio.to_thread(gate.exists):  # noqa: ASYNC110
            await asyncio.sleep(_GATE_POLL_S)

    async def stop(self, handle: Handle, *, grace_s: float) -> ExitInfo:
        sim = self._sims.get(handle.pid)
        if sim is None:
            return ExitInfo()
        if not sim.exited.done():
            sim.exited.set_result(ExitInfo(signal=15))
        return sim.exited.result()

    async def wait(self, handle: Handle) -> ExitInfo:
        sim = self._sims.get(handle.pid)
        if sim is None:
            return ExitInfo()
        return await asyncio.shield(sim.exited)

    def poll(self, handle: Handle) -> ExitInfo | None:
        sim = self._sims.get(handle.pid)
        if sim is None:
            return ExitInfo()
        return sim.exited.result() if sim.exited.done() else None

    def adopt(self, instance_id: str, pid: int, start_time: float) -> Handle | None:
        sim = self._sims.get(pid)
        if sim is None or sim.exited.done() or sim.handle.start_time != start_time:
            return None
        return sim.handle

    def allocate_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        return {name: next(self._ports) for name in names}

    async def maintain(self) -> None:
        # Finished simulations are kept only until their instance is forgotten.
        return None

    async def forget(self, instance_id: str) -> None:
        for pid in [p for p, s in self._sims.items() if s.handle.instance_id == instance_id]:
            if self._sims[pid].exited.done():
                del self._sims[pid]
