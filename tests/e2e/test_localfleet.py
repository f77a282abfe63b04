"""End-to-end: `make run REPLICAS=2` as a newcomer runs it (`python -m keel.localfleet`).

The local fleet starts two control-plane replicas on one embedded Postgres and three agents,
applies the example workload, and prints how to reach it; the commands it prints, run as
printed, list the three hosts READY; exactly one replica leads; Ctrl-C stops everything. Run
again over the same state, it leaves the workload as the operator changed it, and says so.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from harness import wait_for
from procs import Proc, kill_processes_mentioning

from keel.localfleet import LocalFleetError
from keel.localfleet.layout import (
    CONTROLPLANE_METRICS,
    REPLICA_METRICS_BASE_PORT,
    metrics_addresses,
)
from keel.localfleet.processes import check_port_free

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _two_free_ports() -> int:
    """A port p with p and p+1 free (the replicas listen on PORT, PORT+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports on loopback")


def _leader(metrics: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("keel_leader "):
            return float(line.split()[1])
    return None


@pytest.mark.timeout(300)  # a first start runs initdb; under load the banner may take minutes
def test_make_run_with_two_replicas_prints_commands_that_reach_the_fleet(
    tmp_path: Path,
) -> None:
    try:
        # The local fleet's metrics ports are fixed: a `make run` left up here holds them.
        for address in metrics_addresses(2):
            check_port_free("127.0.0.1", int(address.rpartition(":")[2]), hint="")
    except LocalFleetError as exc:
        pytest.skip(f"a local fleet's port is taken on this machine: {exc}")
    state = tmp_path / "keel"
    port = _two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    argv = [sys.executable, "-m", "keel.localfleet", "--state-dir", str(state),
            "--listen", f"127.0.0.1:{port}", "--replicas", "2"]  # fmt: skip
    fleet = Proc("localfleet", argv, tmp_path / "localfleet.log", env)
    fleet.start()
    try:

        def up_or_gone() -> str | None:
            text = fleet.log.read_text()
            return text if "Ctrl-C stops the fleet" in text or not fleet.running() else None

        banner = wait_for(up_or_gone, timeout=240, interval=0.5, message="the local fleet's banner")
        assert fleet.running(), f"the local fleet stopped before it was up:\n{fleet.tail()}"
        # The lines an operator copies: the exports, then a keelctl command.
        lines = [
            line.strip() for line in banner.split("The local Keel fleet is up")[1].splitlines()
        ]
        setup = [line for line in lines if line.startswith("export ")]
        get_hosts = next(line for line in lines if line.endswith("get hosts"))
        assert f"127.0.0.1:{port},127.0.0.1:{port + 1}" in "\n".join(setup)
        script = "\n".join([*setup, f"{get_hosts} -o json"])
        result = subprocess.run(
            ["sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
            env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        hosts = {h["name"]: h["state"] for h in json.loads(result.stdout)["hosts"]}
        assert hosts == {"host-1": "READY", "host-2": "READY", "host-3": "READY"}
        second_metrics = f"127.0.0.1:{REPLICA_METRICS_BASE_PORT}"
        wait_for(
            lambda: sorted([_leader(CONTROLPLANE_METRICS), _leader(second_metrics)]) == [0.0, 1.0],
            timeout=30,
            message="exactly one of the two replicas leading (keel_leader)",
        )

        # The operator changes the example workload (generation 2)...
        changed = tmp_path / "web.yaml"
        changed.write_text(
            (REPO / "examples" / "web.yaml").read_text().replace("GREETING: hello", "GREETING: hi")
        )
        apply = f"{get_hosts.rpartition(' get hosts')[0]} apply -f {changed}"
        result = subprocess.run(
            ["sh", "-c", "\n".join([*setup, apply])], cwd=REPO, capture_output=True, text=True,
            timeout=60, env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0 and "generation 2" in result.stdout, result

        fleet.signal_group(signal.SIGINT)
        assert fleet.wait(90), fleet.tail()
        assert "the local fleet has stopped" in fleet.log.read_text()

        # ... and `make run` again leaves it as it is, and says so.
        fleet = Proc("localfleet", argv, tmp_path / "localfleet-again.log", env)
        fleet.start()
        banner = wait_for(up_or_gone, timeout=240, interval=0.5, message="the second banner")
        assert fleet.running(), f"the local fleet stopped before it was up:\n{fleet.tail()}"
        assert "web exists (generation 2) from an earlier run: left as it is" in banner, banner
        result = subprocess.run(
            ["sh", "-c", "\n".join([*setup, f"{get_hosts.rpartition(' get hosts')[0]} "
                                              "-o json describe workload web"])],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        web = json.loads(result.stdout)
        assert (web["generation"], web["spec"]["env"]) == (2, {"GREETING": "hi"})
        fleet.signal_group(signal.SIGINT)
        assert fleet.wait(90), fleet.tail()
    finally:
        fleet.stop()
        kill_processes_mentioning(str(state))
