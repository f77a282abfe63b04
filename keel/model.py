"""Keel's domain model: workloads and their specs as frozen dataclasses, and the rules
every side shares (what "converged" means, which kind of change a desired state is, which
instances hold a host's resources).

Protobuf stays at the edge: `keel.convert` turns these into wire messages and back;
`keel.spec` parses and validates an operator's document into them; the control plane
stores them as JSON (`to_json` / `from_json` here) and the agent runs them. The store, the
status views, the planners and the agent call the rules here instead of restating them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.StrEnum):
    SERVICE = "service"
    DAEMON = "daemon"


class Desired(enum.StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    REMOVED = "REMOVED"


class Phase(enum.StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Change(enum.StrEnum):
    """The kind of a desired change, as the convergence SLI labels it."""

    CREATE = "create"
    STOP = "stop"
    REMOVE = "remove"


def change_of(desired: Desired) -> Change:
    """The change a desired state asks for: RUNNING is a create, STOPPED a stop, REMOVED a
    removal (a tombstone)."""
    if desired is Desired.RUNNING:
        return Change.CREATE
    if desired is Desired.STOPPED:
        return Change.STOP
    return Change.REMOVE


def converged(desired: Desired, phase: Phase, ready: bool) -> bool:
    """Whether an instance is as its desired state asks: RUNNING wants it running and ready
    (health check passed, and after a restart up for `min_ready`: the agent only reports ready
    then), STOPPED wants it stopped. A tombstone converges by going away (the agent confirms
    the removal and the row is deleted), never by a phase."""
    # == rather than `is`: a phase read from text (a StrEnum's value) judges the same.
    if desired == Desired.RUNNING:
        return phase == Phase.RUNNING and ready
    if desired == Desired.STOPPED:
        return phase == Phase.STOPPED
    return False


def holds_resources(desired: Desired, phase: Phase) -> bool:
    """Whether an instance counts against its host's capacity.

    A live instance always does. A removed one keeps doing so until the agent reports it
    STOPPED: its process may still be running (graceful stop can take `stop_grace`), and
    placing a new instance into resources that are not free yet would overcommit the host.
    """
    return desired != Desired.REMOVED or phase != Phase.STOPPED


class HostState(enum.StrEnum):
    READY = "READY"
    NOT_READY = "NOT_READY"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_millis: int = 0
    memory_mib: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_mib + other.memory_mib)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_mib - other.memory_mib)

    def fits_in(self, free: Resources) -> bool:
        return self.cpu_millis <= free.cpu_millis and self.memory_mib <= free.memory_mib


@dataclass(frozen=True)
class HealthCheck:
    """Exactly one of tcp (a port name), http_port (+ http_path) or exec is set."""

    tcp: str | None = None
    http_port: str | None = None
    http_path: str = "/"
    exec: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SecretValue:
    """One `secret_env` entry; exactly one of the three is set.

    `value` is the plain text: it exists in the manifest the control plane parses (until it
    seals it, `controlplane.secrets`), in the assignment sent to the agent, and on the agent.
    `sealed` is the ciphertext the control plane stores; an operator's answer carries it empty
    (redacted). `file` is a path on the host the agent reads at each start: that value never
    leaves the host. `repr` never shows the plain text, so a logged spec holds no secret.
    """

    value: str | None = field(default=None, repr=False)
    sealed: str | None = None
    file: str | None = None

    def to_json(self) -> dict[str, str]:
        if self.value is not None:
            return {"value": self.value}
        if self.file is not None:
            return {"file": self.file}
        return {"sealed": self.sealed or ""}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> SecretValue:
        return cls(value=data.get("value"), sealed=data.get("sealed"), file=data.get("file"))


@dataclass(frozen=True)
class WorkloadSpec:
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    resources: Resources = Resources()
    health: HealthCheck | None = None
    stop_grace_ms: int = 10_000
    min_ready_ms: int = 10_000
    # Environment variables whose values are secrets (see SecretValue).
    secret_env: dict[str, SecretValue] = field(default_factory=dict)
    # The user the agent starts the command as ("": the agent's own user).
    user: str = ""

    def plain_secrets(self) -> bool:
        """Whether any secret_env value is held in plain text (never so in the store)."""
        return any(s.value is not None for s in self.secret_env.values())

    # on_disconnect.stop_after: the agent stops the instance once it has lost the control
    # plane this long, so the replacement the control plane places after that time never runs
    # beside it (0: it keeps running, and is counted as possibly running until its agent says
    # it stopped).
    stop_after_disconnect_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        health: dict[str, Any] | None = None
        if self.health is not None:
            health = {
                "tcp": self.health.tcp,
                "http_port": self.health.http_port,
                "http_path": self.health.http_path,
                "exec": list(self.health.exec) if self.health.exec is not None else None,
            }
        out: dict[str, Any] = {
            "command": list(self.command),
            "env": dict(self.env),
            "ports": list(self.ports),
            "resources": {
                "cpu_millis": self.resources.cpu_millis,
                "memory_mib": self.resources.memory_mib,
            },
            "health": health,
            "stop_grace_ms": self.stop_grace_ms,
            "min_ready_ms": self.min_ready_ms,
            "stop_after_disconnect_ms": self.stop_after_disconnect_ms,
        }
        # Written only when set: a spec stored before these fields existed compares equal to
        # the same spec applied again (an unchanged spec must not roll the workload).
        if self.secret_env:
            out["secret_env"] = {k: v.to_json() for k, v in self.secret_env.items()}
        if self.user:
            out["user"] = self.user
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkloadSpec:
        """Reads what `to_json` wrote (trusted: it was validated before it was stored)."""
        h = data.get("health")
        health = None
        if h is not None:
            health = HealthCheck(
                tcp=h.get("tcp"),
                http_port=h.get("http_port"),
                http_path=h.get("http_path") or "/",
                exec=tuple(h["exec"]) if h.get("exec") is not None else None,
            )
        r = data.get("resources") or {}
        return cls(
            command=tuple(data["command"]),
            env=dict(data.get("env") or {}),
            ports=tuple(data.get("ports") or ()),
            resources=Resources(int(r.get("cpu_millis", 0)), int(r.get("memory_mib", 0))),
            health=health,
            stop_grace_ms=int(data.get("stop_grace_ms", 10_000)),
            min_ready_ms=int(data.get("min_ready_ms", 10_000)),
            secret_env={
                k: SecretValue.from_json(v) for k, v in (data.get("secret_env") or {}).items()
            },
            user=str(data.get("user") or ""),
            stop_after_disconnect_ms=int(data.get("stop_after_disconnect_ms", 0)),
        )


@dataclass(frozen=True)
class RolloutPolicy:
    """How a new revision of a workload rolls out (the manifest's `rollout:`).

    `progress_deadline_ms`: a rollout that has made no progress (no new instance became
    ready) for this long has failed. `auto_rollback`: a failed rollout returns to the last
    revision that was fully ready; without it, it holds. `canary`: a new revision first starts
    this many extra instances beside the old ones and waits to be promoted; `auto_promote`
    promotes once they have stayed ready for `min_ready`. Changing these changes how the
    workload rolls, not what runs: like the budgets, they are updated in place.
    """

    progress_deadline_ms: int = 600_000
    auto_rollback: bool = False
    canary: int = 0
    auto_promote: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "progress_deadline_ms": self.progress_deadline_ms,
            "auto_rollback": self.auto_rollback,
            "canary": self.canary,
            "auto_promote": self.auto_promote,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RolloutPolicy:
        d = data or {}
        return cls(
            progress_deadline_ms=int(d.get("progress_deadline_ms", 600_000)),
            auto_rollback=bool(d.get("auto_rollback", False)),
            canary=int(d.get("canary", 0)),
            auto_promote=bool(d.get("auto_promote", False)),
        )


@dataclass(frozen=True)
class Workload:
    """A workload as the operator asked for it (no generation: the store owns that)."""

    name: str
    spec: WorkloadSpec
    kind: Kind = Kind.SERVICE
    replicas: int = 1
    max_unavailable: int = 1
    max_surge: int = 1
    selector: dict[str, str] = field(default_factory=dict)
    deadline_ms: int = 120_000
    rollout: RolloutPolicy = RolloutPolicy()
