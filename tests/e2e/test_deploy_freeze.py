"""End-to-end: the deploy freeze through keelctl against a real control plane and agents.

While frozen, an apply that changes the spec is refused (and changes nothing), while a scale
change, a rollback (an apply of an earlier revision's spec) and a drain go through; an override
needs a reason and is recorded with its actor; `keel_deploy_frozen` follows; unfreeze lets
deploys through again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from harness import Fleet, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet2(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    """A control plane reading the freeze every 200ms, and agents host-1 and host-2."""
    with (
        database_factory() as url,
        Fleet(
            tmp_path, database_url=url, agents=2, controlplane_args=["--freeze-poll", "200ms"]
        ) as f,
    ):
        yield f


def _version(fleet: Fleet, version: str, *, replicas: int = 2) -> dict[str, object]:
    return fleet.manifest("web", replicas=replicas, env={"VERSION": version}, min_ready="500ms")


def _frozen_metric(fleet: Fleet) -> float | None:
    return fleet.metrics().get("keel_deploy_frozen")


def test_a_freeze_refuses_a_spec_change_and_lets_scale_rollback_and_drain_through(
    fleet2: Fleet,
) -> None:
    fleet = fleet2
    fleet.apply_ok(_version(fleet, "1"))
    fleet.wait_running("web", 2, generation=1)
    fleet.apply_ok(_version(fleet, "2"))
    fleet.wait_running("web", 2, generation=2)

    frozen = fleet.keelctl_json("freeze", "--reason", "INC-7: budget burning", "--until", "2h")
    assert frozen["frozen"] is True
    [held] = frozen["freezes"]
    assert (held["source"], held["actor"], held["reason"]) == (
        "operator",
        "admin",
        "INC-7: budget burning",
    )
    assert held["until"] and held["since"]
    wait_for(lambda: _frozen_metric(fleet) == 1, timeout=15, message="keel_deploy_frozen 1")

    # A new spec: refused, naming the freeze, who, why and the way through; nothing changes.
    refused = fleet.apply(_version(fleet, "3"))
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr
    assert "deploys are frozen (operator freeze by admin since" in refused.stderr
    assert "INC-7: budget burning" in refused.stderr
    assert "keelctl apply --override-freeze --reason TEXT" in refused.stderr
    assert fleet.workload("web").generation == 2

    # A scale change deploys nothing new.
    fleet.apply_ok(_version(fleet, "2", replicas=3))
    fleet.wait_running("web", 3, generation=2)

    # A rollback: the spec of revision 1 again (a new generation whose instances are current
    # with revision 1's).
    back = fleet.apply_ok(_version(fleet, "1", replicas=3))
    assert "generation 3" in back.stdout
    running = fleet.wait_running("web", 3)
    assert {i.generation for i in running} <= {1, 3}

    # A drain moves what runs on host-1 to host-2.
    drained = fleet.keelctl("drain", "host-1", "--reason", "kernel", "--wait", timeout=120)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert all(i.host == "host-2" for i in fleet.wait_running("web", 3))

    # An override needs a reason, and is then recorded with its actor and reason.
    path = str(fleet.write_manifest(_version(fleet, "4", replicas=3)))
    no_reason = fleet.keelctl("apply", "-f", path, "--override-freeze")
    assert no_reason.returncode == 1
    assert "reason: --override-freeze needs a reason" in no_reason.stderr
    assert "INVALID_ARGUMENT" in no_reason.stderr
    assert fleet.workload("web").generation == 3
    fleet.keelctl_ok("apply", "-f", path, "--override-freeze", "--reason", "INC-7 hotfix")
    assert fleet.workload("web").generation == 4
    events = fleet.keelctl_json("events", "--for", "workload/web")["events"]
    [override] = [e for e in events if e["kind"] == "FreezeOverridden"]
    assert override["actor"] == "admin"
    assert "INC-7 hotfix" in override["message"] and "INC-7: budget burning" in override["message"]

    status = fleet.keelctl_ok("freeze", "--status").stdout
    assert status.startswith("deploys are frozen") and "INC-7: budget burning" in status

    # Unfreeze: deploys go through again; the metric and the history follow.
    unfrozen = fleet.keelctl_ok("unfreeze").stdout
    assert unfrozen.startswith("lifted:\nSOURCE") and "INC-7: budget burning" in unfrozen
    assert unfrozen.strip().endswith("deploys are not frozen")
    nothing = fleet.keelctl_ok("unfreeze", "--alert", "KeelBurn").stdout.strip()
    assert nothing == "no freeze of alert KeelBurn holds\ndeploys are not frozen"
    assert fleet.keelctl_json("freeze", "--status") == {
        "frozen": False,
        "freezes": [],
        "lifted": [],
    }
    fleet.apply_ok(_version(fleet, "5", replicas=3))
    assert fleet.workload("web").generation == 5
    wait_for(lambda: _frozen_metric(fleet) == 0, timeout=15, message="keel_deploy_frozen 0")
    history = fleet.keelctl_json("events", "--for", "fleet/freeze")["events"]
    assert [(e["kind"], e["actor"]) for e in history] == [
        ("DeployFrozen", "admin"),
        ("DeployUnfrozen", "admin"),
    ]

    # `--until 2h` goes as a duration: the same request id run again is the same request,
    # answered with the first run's freeze (not "already used for a different request").
    args = ("--request-id", "freeze-2h-e2e", "freeze", "--until", "2h", "--reason", "window")
    first = fleet.keelctl_ok(*args, "-o", "json").stdout
    assert fleet.keelctl_ok(*args, "-o", "json").stdout == first
    history = fleet.keelctl_json("events", "--for", "fleet/freeze")["events"]
    assert [e["kind"] for e in history].count("DeployFrozen") == 2


def test_freeze_refuses_an_until_in_the_past_naming_the_field(quiet_fleet: Fleet) -> None:
    result = quiet_fleet.keelctl("freeze", "--until", "2001-01-01T00:00:00Z")
    assert result.returncode == 1
    assert "until: must be in the future" in result.stderr and "INVALID_ARGUMENT" in result.stderr
    assert quiet_fleet.keelctl_json("freeze", "--status")["frozen"] is False
