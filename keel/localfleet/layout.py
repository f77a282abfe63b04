"""Where the local fleet (`make run`) listens and what it prints once it is up.

The fixed ports (the control plane's metrics on 9464, the agents' on 9465-9467, further
replicas' from 9468; the gRPC port is `--listen`), the host names, and the banner with the
commands an operator copies. `keel.localfleet.launcher` starts the processes on them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
CONTROLPLANE_METRICS = "127.0.0.1:9464"
AGENT_METRICS_BASE_PORT = 9465
# Replicas past the first: metrics on 9468, 9469, ... (after the agents').
REPLICA_METRICS_BASE_PORT = 9468
HOSTS = ("host-1", "host-2", "host-3")


def kept_note(name: str, workload: Path, existing: dict[str, Any]) -> str:
    """What the banner says of a workload found from an earlier run and left as it is: an
    apply of the example over it would roll back what was applied since (and go through a
    freeze as a rollback)."""
    return (
        f"{name} exists (generation {existing.get('generation', '?')}) from an earlier run: "
        f"left as it is, {workload} not applied again (keelctl apply -f {workload} does it)"
    )


def banner(
    address: str,
    state_dir: Path,
    logs: Path,
    workload: str,
    replicas: int = 1,
    *,
    kept: str = "",
) -> str:
    keelctl = BIN / "keelctl"
    rel = os.path.relpath(keelctl) if keelctl.is_relative_to(Path.cwd()) else str(keelctl)
    agent_ports = f"{AGENT_METRICS_BASE_PORT}-{AGENT_METRICS_BASE_PORT + len(HOSTS) - 1}"
    kept_line = f"\n{kept}.\n" if kept else ""
    return f"""
The local Keel fleet is up: {_planes(address, replicas)} and agents {", ".join(HOSTS)}.
{kept_line}
  export KEEL_CONTROLPLANE={address}
  export KEEL_TOKEN=$(cat {_shown(state_dir / "controlplane" / "admin.token")})
  {rel} get hosts
  {rel} get workloads
  {rel} get instances
  {rel} describe workload {workload}
  {rel} apply -f examples/web.yaml
  {rel} stuck
  {rel} events --for workload/{workload}

Metrics: http://{CONTROLPLANE_METRICS}/metrics (control plane{_replica_metrics(replicas)}), \
http://127.0.0.1:{agent_ports}/metrics (agents)
State: {state_dir}    Logs: {logs}/{{controlplane,{",".join(HOSTS)}}}.log
The gRPC port is on loopback without TLS (fine on this machine; off it, the control plane
needs --tls-cert/--tls-key). KEEL_TOKEN is the admin token; `keelctl token create` issues others.
Ctrl-C stops the fleet and its workloads; `make run` again picks up the same state.
"""


def _shown(path: Path) -> str:
    """path relative to the working directory when it is under it (shorter to copy)."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def _planes(address: str, replicas: int) -> str:
    if replicas == 1:
        return f"a control plane on {address}"
    return f"{replicas} control-plane replicas on {address} (one leads; keel_leader says which)"


def _replica_metrics(replicas: int) -> str:
    if replicas == 1:
        return ""
    if replicas == 2:
        return f"; replica 2: 127.0.0.1:{REPLICA_METRICS_BASE_PORT}"
    last = REPLICA_METRICS_BASE_PORT + replicas - 2
    return f"; replicas 2-{replicas}: 127.0.0.1:{REPLICA_METRICS_BASE_PORT}-{last}"


MOVE_LISTEN = "Stop it, or pass --listen with another port."


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def metrics_address(n: int) -> str:
    """Replica n's metrics address (0 is the first)."""
    return CONTROLPLANE_METRICS if n == 0 else f"127.0.0.1:{REPLICA_METRICS_BASE_PORT + n - 1}"


def metrics_addresses(replicas: int) -> list[str]:
    """The metrics addresses the fleet serves: each replica's, then each agent's."""
    agents = [agent_metrics_address(n) for n in range(len(HOSTS))]
    return [*(metrics_address(n) for n in range(replicas)), *agents]


def agent_metrics_address(n: int) -> str:
    """Agent n's metrics address: 9465, 9466, 9467, each scraped on a port of its own."""
    return f"127.0.0.1:{AGENT_METRICS_BASE_PORT + n}"
