"""End-to-end: a host gone for good is listed GONE and removed with `keelctl delete host`.

Real control plane and agents on loopback. host-2's agent stops (its workload keeps running, as
an agent's SIGTERM leaves it); past --gone-after the host is GONE; deleting it is refused while
its instance is there, then done with --force, which puts the replacement on host-1. When its
agent comes back it registers host-2 as a new host and stops the process it had left running.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from harness import Fleet, wait_for
from procs import process_alive

pytestmark = pytest.mark.e2e

FAST_LIVENESS = [
    "--liveness-grace", "1s",
    "--unknown-after", "1s",
    "--gone-after", "3s",
    "--reschedule-after", "1h",  # nothing is fenced: the instance stays placed on host-2
    "--prune-interval", "1s",
]  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=2, controlplane_args=FAST_LIVENESS) as f,
    ):
        yield f


def _gone(fleet: Fleet, name: str) -> bool:
    hosts = {h.name: h.raw for h in fleet.hosts_status()}
    return bool(hosts.get(name, {}).get("gone"))


def test_a_gone_host_is_listed_gone_and_deleted_with_its_instance(fleet: Fleet) -> None:
    """GONE in get hosts and describe host; delete refused naming the instance; --force
    removes it (an event names the actor), the replacement runs on host-1, and the agent
    coming back registers anew and stops its leftover process."""
    fleet.apply_ok(fleet.manifest("web", replicas=2))
    running = fleet.wait_running("web", 2)
    (left,) = [i for i in running if i.host == "host-2"]
    fleet.kill_agent(2, signal.SIGTERM)  # the workload keeps running

    wait_for(lambda: _gone(fleet, "host-2"), timeout=30, message="host-2 listed gone")
    assert "GONE" in fleet.keelctl_ok("get", "hosts").stdout
    assert (
        "keelctl delete host host-2 --force"
        in fleet.keelctl_ok("describe", "host", "host-2").stdout
    )
    wait_for(
        lambda: fleet.metrics().get("keel_hosts_gone") == 1,
        timeout=30,
        message="keel_hosts_gone counts host-2",
    )

    refused = fleet.keelctl("delete", "host", "host-2")
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr and left.id in refused.stderr
    assert "host-2" in {h.name for h in fleet.hosts_status()}

    deleted = fleet.keelctl_ok("delete", "host", "host-2", "--force")
    assert f"host/host-2 deleted with 1 instance(s): {left.id}" in deleted.stdout
    assert "host-2" not in {h.name for h in fleet.hosts_status()}
    events = fleet.keelctl_json("events", "--for", "host/host-2")["events"]
    (event,) = [e for e in events if e["kind"] == "HostDeleted"]
    # The actor is the name of the token keelctl sent (the harness sends the admin token).
    assert event["actor"] == "admin" and left.id in event["message"]
    replacement = fleet.wait_running("web", 2)
    assert {i.host for i in replacement} == {"host-1"}
    assert process_alive(left.pid), "the agent is down: its workload should still run"

    fleet.start_agent(2)
    wait_for(
        lambda: "host-2" in {h.name for h in fleet.hosts_status() if h.state == "READY"},
        timeout=30,
        message="host-2 registered again",
    )
    wait_for(
        lambda: not process_alive(left.pid), timeout=30, message="the leftover process stopped"
    )
