"""End-to-end: a machine cut off while its stream is open (`controlplane.revocation`).

Real control plane and agents on loopback. The join token is rotated (so the machine cannot
join again), then host-1's credential is reset while its agent's Sync stream is open: the stream
ends at once, the host shows disconnected, the agent logs why and what it needs and knocks no
more, and the control plane logs the token's name (never a token). Its workload goes on as for
any lost agent: it keeps running on host-1 while its host goes NOT_READY and is replaced on
host-2; restarted with the new join token the agent joins again and stops the fenced process.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from harness import Fleet, hold_for, wait_for
from procs import process_alive

pytestmark = pytest.mark.e2e

AUTH_CACHE_S = 2.0
SETTINGS = [
    "--auth-cache", f"{AUTH_CACHE_S:g}s",
    "--unknown-after", "1s",
    "--reschedule-after", "3s",
]  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=2, controlplane_args=SETTINGS) as f,
    ):
        yield f


def _host(fleet: Fleet, name: str) -> dict[str, object]:
    return {h.name: {"connected": h.connected, "state": h.state} for h in fleet.hosts_rpc()}[name]


def _denied(fleet: Fleet, reason: str) -> float:
    return fleet.metrics().get(f'keel_auth_denied_total{{reason="{reason}"}}', 0.0)


def _serving_hosts(fleet: Fleet) -> list[str]:
    """The hosts of web's instances that are desired RUNNING and ready, sorted."""
    found = fleet.instances_rpc("web")
    return sorted(i.host for i in found if i.desired == "RUNNING" and i.ready)


def test_a_reset_credential_closes_the_open_stream_of_a_cut_off_host(fleet: Fleet) -> None:
    """Reset while streaming: closed within --auth-cache, disconnected, the agent says why and
    stops knocking, the workload follows the disconnected-host rules, and a re-admitted agent
    stops what was fenced."""
    fleet.apply_ok(fleet.manifest("web", replicas=2))
    running = fleet.wait_running("web", 2)
    assert {i.host for i in running} == {"host-1", "host-2"}
    (left,) = [i for i in running if i.host == "host-1"]
    old_credential = (fleet.root / "host-1" / "credential").read_text().strip()
    join_2 = fleet.keelctl_ok("token", "create", "--role", "join", "--name", "join-2")
    new_join_token = join_2.stdout.splitlines()[0].strip()
    old_join_token = fleet.join_token_file.read_text().strip()
    fleet.keelctl_ok("token", "revoke", "join")
    revoked_before = _denied(fleet, "revoked")

    fleet.keelctl_ok("host", "reset-credential", "host-1")
    # At once by the NOTIFY; --auth-cache at worst, and some slack for a loaded machine.
    wait_for(
        lambda: _host(fleet, "host-1")["connected"] is False,
        timeout=AUTH_CACHE_S + 5,
        interval=0.05,
        message="host-1's stream closed",
    )
    assert _denied(fleet, "revoked_open") == 1
    cp_log = (fleet.logs / "controlplane.log").read_text().splitlines()
    [closed] = [line for line in cp_log if "its open call is closed" in line]
    assert "host/host-1" in closed
    agent_log = fleet.logs / "host-1.log"
    wait_for(
        lambda: "refused the join token" in agent_log.read_text(),
        timeout=15,
        message="host-1's agent naming the refused join token",
    )
    text = agent_log.read_text()
    assert "refused this host's credential" in text and "was revoked or reset" in text
    assert "--join-token-file" in text
    # One Join with the revoked join token, then nothing: no hot loop, no dead credential sent.
    assert _denied(fleet, "revoked") == revoked_before + 1
    hold_for(
        lambda: _denied(fleet, "revoked") == revoked_before + 1,
        duration=3.0,
        message="host-1's agent not knocking again",
    )

    # Disconnected-host rules: the process runs on; NOT_READY; replaced on host-2.
    assert process_alive(left.pid)
    wait_for(
        lambda: _host(fleet, "host-1")["state"] != "READY",
        timeout=30,
        message="host-1 not READY",
    )
    wait_for(
        lambda: _serving_hosts(fleet) == ["host-2", "host-2"],
        timeout=45,
        message="web replaced on host-2",
    )
    assert process_alive(left.pid)  # the cut-off agent cannot know it was fenced

    # Re-admitted with the new join token: it joins, and stops the fenced process first.
    fleet.join_token_file.write_text(new_join_token + "\n")
    fleet.kill_agent(1, signal.SIGTERM)
    fleet.start_agent(1)
    wait_for(
        lambda: _host(fleet, "host-1") == {"connected": True, "state": "READY"},
        timeout=30,
        message="host-1 back",
    )
    wait_for(lambda: not process_alive(left.pid), timeout=30, message="the fenced process gone")
    new_credential = (fleet.root / "host-1" / "credential").read_text().strip()
    assert new_credential != old_credential

    for name, log in [*fleet.log_tails(lines=100000)]:
        for secret in (old_credential, new_credential, old_join_token, new_join_token):
            assert secret.split(".")[1] not in log, f"a token in {name}"
