"""Agent settings: every duration the agent waits on is here, with its flag (see `agent.main`).

Durations are held in seconds (float) because the agent's clocks are `time.time` and
`asyncio`; the flags take strings with a unit, parsed by `keel.spec.parse_duration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError
from keel.endpoint import EndpointError, parse_address
from keel.model import Resources
from keel.spec import SpecError, parse_duration
from keel.tls import ClientTLS


@dataclass(frozen=True)
class Settings:
    host: str
    state_dir: Path
    controlplanes: tuple[str, ...] = ("127.0.0.1:7443",)
    driver: str = "process"
    labels: dict[str, str] = field(default_factory=dict)
    capacity: Resources = field(default_factory=Resources)
    # Heartbeats on the stream; the control plane's liveness grace is a multiple of this.
    # As the kubelet renews its node lease: every 10 s against the control plane's 40 s grace.
    heartbeat_interval_s: float = 10.0
    # Crash back-off like the kubelet: 10 s doubling to 5 min, reset after 10 min up.
    backoff_base_s: float = 10.0
    backoff_max_s: float = 300.0
    backoff_reset_s: float = 600.0
    # Reconnect back-off to the control plane: jittered, from reconnect_base_s up to this.
    reconnect_base_s: float = 0.2
    reconnect_max_s: float = 10.0
    # The back-off starts over only after a stream stayed up this long: a control plane that
    # accepts streams and drops them at once gets ever slower retries, not a storm.
    reconnect_reset_s: float = 30.0
    connect_timeout_s: float = 5.0
    # Health probes and the reconciler's periodic look run this often; a probe gets as long.
    probe_interval_s: float = 1.0
    fake_start_delay_s: float = 0.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    # Workload ports come from this range (Nomad's dynamic port default), below the kernel's
    # ephemeral range (32768-60999 on Linux): a port handed out there could be taken by any
    # outgoing connection between the check and the workload's own bind.
    port_range: tuple[int, int] = (20000, 32000)
    stop_workloads_on_exit: bool = False
    log_format: str = "auto"
    # A failing health check is reported at once (HEALTH_CHECK_FAILING) but only marked stuck
    # after this long; the control plane applies the workload's deadline on top.
    health_stuck_after_s: float = 30.0
    # /metrics: (host, port); None = off. Port 0 picks a free port (see addresses.json).
    metrics_address: tuple[str, int] | None = None
    trace_file: str | None = None
    # Fake driver only: while this file exists, simulated starts wait (tests hold convergence).
    fake_start_gate: Path | None = None
    # While cut off from the control plane, a warning says so this often.
    degraded_log_interval_s: float = 30.0
    # The control plane's join token, used when the state dir holds no credential yet.
    join_token: str | None = field(default=None, repr=False)
    tls: ClientTLS = field(default_factory=ClientTLS)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def addresses_file(self) -> Path:
        return self.state_dir / "addresses.json"


def duration_s(text: str, flag: str) -> float:
    """Seconds in a duration flag (`500ms`, `10s`, `5m`); ConfigError naming the flag."""
    try:
        return parse_duration(text, flag) / 1000.0
    except SpecError as e:
        raise ConfigError(str(e)) from e


def parse_capacity(text: str, *, default: Resources) -> Resources:
    """`cpu=2000,memory=4096` (millicores, MiB); a key left out keeps its default."""
    cpu, memory = default.cpu_millis, default.memory_mib
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"--capacity: expected cpu=MILLIS,memory=MIB, got '{part}'")
        if key.strip() == "cpu":
            cpu = int(value)
        elif key.strip() == "memory":
            memory = int(value)
        else:
            raise ConfigError(f"--capacity: unknown resource '{key.strip()}' (cpu, memory)")
    return Resources(cpu_millis=cpu, memory_mib=memory)


def parse_labels(items: list[str]) -> dict[str, str]:
    """`--label k=v` repeated (a comma-separated list in one flag is accepted too)."""
    labels: dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--label: expected key=value, got '{part}'")
            labels[key.strip()] = value.strip()
    return labels


def parse_listen(text: str, flag: str) -> tuple[str, int] | None:
    """`HOST:PORT` (port 0 = any free port), or `off` for None."""
    try:
        return parse_address(text, flag)
    except EndpointError as exc:
        raise ConfigError(str(exc)) from exc
