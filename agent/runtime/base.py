"""The driver interface the reconciler runs instances through, and what all drivers share.

`agent.runtime.process` runs real commands; `agent.runtime.fake` simulates them for benchmarks
and hollow fleets. The reconciler builds an instance's environment here (`instance_env`), so
every driver sees the same variables, and asks the driver to start, stop, watch and adopt.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from keel.model import WorkloadSpec

# Never the agent's own PATH: a workload must not depend on how the agent was launched.
FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class ExitInfo:
    """How a process ended; both None when unknown (an adopted process, not our child)."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitInfo:
        # asyncio/subprocess report death by signal N as -N.
        if returncode < 0:
            return cls(signal=-returncode)
        return cls(code=returncode)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = "unknown"
            return f"signal {self.signal} ({name})"
        if self.code is not None:
            return f"exit code {self.code}"
        return "exited (status unknown)"


@dataclass(frozen=True)
class Handle:
    """A running instance as the driver knows it; pid and start time go to local state."""

    instance_id: str
    pid: int
    start_time: float  # psutil create_time: the same pid with another start time is not ours
    adopted: bool = False


class Driver(Protocol):
    async def start(
        self,
        instance_id: str,
        spec: WorkloadSpec,
        *,
        env: Mapping[str, str],
        ports: Mapping[str, int],
    ) -> Handle:
        """Start the command; raise `agent.errors.StartFailed` with the reason if it cannot."""
        ...

    async def stop(self, handle: Handle, *, grace_s: float) -> ExitInfo:
        """Ask the instance to stop, force it after `grace_s`; safe when it already exited."""
        ...

    async def wait(self, handle: Handle) -> ExitInfo:
        """Return once the instance has exited."""
        ...

    def poll(self, handle: Handle) -> ExitInfo | None:
        """None while the instance runs, else how it ended."""
        ...

    def adopt(self, instance_id: str, pid: int, start_time: float) -> Handle | None:
        """A handle for a process a previous agent started, if that very process still runs."""
        ...

    def allocate_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        """One free port per name, for a new instance."""
        ...

    async def maintain(self) -> None:
        """Periodic housekeeping (log rotation), called on every reconciler tick."""
        ...

    async def forget(self, instance_id: str) -> None:
        """The instance is gone for good: drop what the driver keeps for it."""
        ...


def instance_env(
    spec: WorkloadSpec, *, host: str, workload: str, instance_id: str, ports: Mapping[str, int]
) -> dict[str, str]:
    """The whole environment of an instance: the spec's env, KEEL_* and a fixed PATH."""
    env = {"PATH": FIXED_PATH}
    env.update(spec.env)
    env["KEEL_HOST"] = host
    env["KEEL_WORKLOAD"] = workload
    env["KEEL_INSTANCE"] = instance_id
    for name, port in ports.items():
        env[f"KEEL_PORT_{name.upper()}"] = str(port)
    return env


def expand(args: tuple[str, ...], env: Mapping[str, str]) -> list[str]:
    """`${VAR}` in each argument replaced from the instance's environment (unset = empty)."""
    return [_VAR_RE.sub(lambda m: env.get(m.group(1), ""), a) for a in args]
