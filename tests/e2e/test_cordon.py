"""End-to-end: cordon and uncordon through keelctl against two control-plane replicas and four
agents; keelctl is given both replicas.

The maintenance wave: three hosts cordoned in one call while a workload scales up; nothing is
placed on any of them after the cordon committed, and uncordon lets placements back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from drains import two_replicas
from harness import Fleet
from replicas import TwoReplicas
from views import _time

pytestmark = pytest.mark.e2e

WAVE = ["host-1", "host-2", "host-3"]


@pytest.fixture
def fleet4(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    """Two control-plane replicas and agents host-1..host-4, all hosts READY."""
    with two_replicas(tmp_path, database_factory) as f:
        yield f


def _cordoned_at(fleet: Fleet) -> dict[str, datetime]:
    hosts = fleet.keelctl_json("get", "hosts")["hosts"]
    return {
        h["name"]: at for h in hosts if not h.get("schedulable") and (at := _time(h["cordoned_at"]))
    }


def test_a_maintenance_wave_cordons_three_hosts_at_once_while_a_workload_scales(
    fleet4: TwoReplicas,
) -> None:
    """No instance is placed on a host of the wave after its cordon committed, however the
    cordon interleaves with a scale-up; uncordon makes the hosts schedulable again."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("web", replicas=1, health=False))
    fleet.wait_running("web", 1)

    scaled = threading.Event()

    def scale_up() -> None:
        for replicas in range(2, 13):
            fleet.apply_ok(fleet.manifest("web", replicas=replicas, health=False))
        scaled.set()

    scaler = threading.Thread(target=scale_up, name="scale-up")
    scaler.start()
    try:
        result = fleet.keelctl_ok("cordon", *WAVE, "--reason", "kernel upgrade wave")
    finally:
        scaler.join(timeout=60)
    assert scaled.is_set()
    assert result.stdout.splitlines() == [f"host/{h} cordoned" for h in WAVE]

    instances = fleet.wait_running("web", 12)
    cordoned = _cordoned_at(fleet)
    assert sorted(cordoned) == WAVE
    # One transaction: every host of the wave was cordoned at the same database time.
    assert len(set(cordoned.values())) == 1
    for inst in instances:
        if inst.host in cordoned:
            created = _time(inst.raw["created_at"])
            assert created is not None and created < cordoned[inst.host], (
                f"{inst.id} was placed on {inst.host} at {created}, after its cordon at "
                f"{cordoned[inst.host]}"
            )
    on_free_host = sum(1 for i in instances if i.host == "host-4")
    assert on_free_host >= 12 - sum(1 for i in instances if i.host in cordoned)

    # Cordoning again is one cordon; the events name the actor (the token's name: keelctl here
    # sends the admin token the control plane wrote on its first start) and the reason.
    again = fleet.keelctl_ok("cordon", *WAVE)
    assert again.stdout.splitlines() == [f"host/{h} already cordoned" for h in WAVE]
    described = fleet.keelctl_ok("describe", "host", "host-2").stdout
    assert "no (cordoned: kernel upgrade wave)" in described
    assert "Cordoned by:     admin" in described
    events = fleet.keelctl_json("events", "--for", "host/host-2")["events"]
    cordons = [e for e in events if e["kind"] == "HostCordoned"]
    assert len(cordons) == 1
    assert cordons[0]["actor"] == "admin"
    assert cordons[0]["message"] == "cordoned: kernel upgrade wave"

    # Uncordoned, the hosts take new instances again.
    assert fleet.keelctl_ok("uncordon", *WAVE).stdout.splitlines() == [
        f"host/{h} uncordoned" for h in WAVE
    ]
    fleet.apply_ok(fleet.manifest("web", replicas=16, health=False))
    final = fleet.wait_running("web", 16)
    assert {i.host for i in final} & set(WAVE)


def test_cordon_of_an_unknown_host_changes_nothing(fleet4: TwoReplicas) -> None:
    """All or none: one unknown name fails the call (exit 1, the name given) and cordons none."""
    result = fleet4.keelctl("cordon", "host-1", "host-9")
    assert result.returncode == 1
    assert 'host "host-9" not found; nothing was changed (NOT_FOUND)' in result.stderr
    assert all(h.schedulable for h in fleet4.hosts_status())
