"""Two control-plane replicas on one Postgres, as real processes: the harness's `Fleet` with a
second replica; agents and keelctl get both addresses and fail over on their own; each
replica's `keel_leader` says which one leads."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from harness import Fleet, admin_token_for, wait_for
from procs import Proc


class TwoReplicas(Fleet):
    """The harness's fleet with a second control-plane replica on the same database; agents
    and keelctl get both addresses."""

    def start(self) -> None:
        self._start_cp(listen="127.0.0.1:0")
        first = self.address
        state = self.root / "controlplane-b"
        state.mkdir(exist_ok=True)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        argv = list(self._cp.argv)
        argv[argv.index("--state-dir") + 1] = str(state)
        argv[argv.index("--listen") + 1] = "127.0.0.1:0"
        self.second = Proc("controlplane-b", argv, self.logs / "controlplane-b.log", base_env)
        self.second.start()
        second = wait_for(
            lambda: _grpc_address(state / "addresses.json"),
            timeout=self.start_timeout,
            message="the second replica's address",
        )
        self.replicas = {first: (self._cp, self.cp_state), second: (self.second, state)}
        self.address = f"{first},{second}"
        # Both replicas share the database, so the first's admin token works on either; raw
        # channels to the second (samplers) carry it as they do to the first.
        admin_token_for(second, self.admin_token_file)
        for agent in self._agents.values():
            agent.argv[agent.argv.index("--controlplane") + 1] = self.address
        for i in self._agents:
            self.start_agent(i)
        self.wait_hosts_ready()

    def pin_agent(self, i: int, address: str) -> None:
        """Restarts agent i given only the replica at `address`, so its stream is there."""
        agent = self._agents[i]
        agent.argv[agent.argv.index("--controlplane") + 1] = address
        self.restart_agent(i)

    def close(self) -> None:
        second = getattr(self, "second", None)
        if second is not None:
            second.stop()
        super().close()

    def log_tails(self, lines: int = 60) -> list[tuple[str, str]]:
        """The harness's tails, and the second replica's (a failed test's report needs both)."""
        tails = super().log_tails(lines)
        second = getattr(self, "second", None)
        if second is not None:
            tails.append((f"{second.name} ({second.log})", second.tail(lines)))
        return tails

    def leader(self) -> str | None:
        """The gRPC address of the replica whose keel_leader is 1."""
        for address in self.replicas:
            if self.replica_metrics(address).get("keel_leader") == 1:
                return address
        return None

    def replica_metrics(self, address: str) -> dict[str, float]:
        """The replica's /metrics, parsed; empty if it is not running or not answering."""
        proc, state = self.replicas[address]
        if not proc.running():
            return {}
        try:
            return _scrape(json.loads((state / "addresses.json").read_text())["metrics"])
        except (OSError, ValueError, KeyError):
            return {}


def _grpc_address(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["grpc"])
    except (OSError, ValueError, KeyError):
        return None


def _scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
