"""Stuck states end to end: each named with its reason, specifics, runbook and next command,
and each cleared by fixing the spec. Real control plane, real agents, real processes."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from harness import Fleet, wait_for

pytestmark = pytest.mark.e2e


def _stuck(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """`keelctl -o json stuck` as {object: stuck}."""
    payload = fleet.keelctl_json("stuck")
    return {o["object"]: o["stuck"] for o in payload.get("objects", [])}


def _stuck_for(fleet: Fleet, workload: str, reason: str) -> tuple[str, dict[str, Any]]:
    """Waits until an object of the workload is stuck with reason; returns (object, stuck)."""

    def found() -> tuple[str, dict[str, Any]] | None:
        for obj, stuck in _stuck(fleet).items():
            owner = obj.removeprefix("workload/").removeprefix("instance/")
            if (owner == workload or owner.startswith(f"{workload}-")) and (
                stuck["reason"] == reason
            ):
                return obj, stuck
        return None

    return wait_for(found, timeout=30, message=f"{workload} stuck with {reason}")


def _cleared(fleet: Fleet, workload: str) -> None:
    def clear() -> bool:
        return not any(
            o in (f"workload/{workload}",) or o.startswith(f"instance/{workload}-")
            for o in _stuck(fleet)
        )

    wait_for(clear, timeout=45, message=f"{workload} no longer stuck")


def test_missing_command_is_start_failed_with_the_exec_error(fleet: Fleet) -> None:
    """A command that does not exist is START_FAILED at once, with the exec error and the
    runbook; fixing the spec clears it."""
    doc = fleet.manifest("nocmd", replicas=1, command=["/nonexistent/keel-e2e-binary"])
    fleet.apply_ok(doc)
    obj, stuck = _stuck_for(fleet, "nocmd", "START_FAILED")
    assert obj.startswith("instance/nocmd-")
    assert "No such file or directory" in stuck["message"]
    assert stuck["runbook"] == "runbooks/stuck/start-failed.md"
    assert stuck["next_command"] == f"keelctl describe instance {obj.removeprefix('instance/')}"
    described = fleet.keelctl_ok("describe", "instance", obj.removeprefix("instance/")).stdout
    assert "START_FAILED" in described and "runbooks/stuck/start-failed.md" in described

    fleet.apply_ok(fleet.manifest("nocmd", replicas=1))
    fleet.wait_running("nocmd", 1, generation=2)
    _cleared(fleet, "nocmd")
    kinds = [e["kind"] for e in fleet.keelctl_json("events", "--for", obj)["events"]]
    assert "StuckDetected" in kinds and "StuckCleared" in kinds


def test_crash_loop_carries_the_stderr_tail_and_logs_return_it(fleet: Fleet) -> None:
    """A command that exits 1 at once is CRASH_LOOP with its exit and the tail of its stderr;
    keelctl logs fetches that stderr from the agent; fixing the spec clears it."""
    script = "import sys; print('keel-e2e: config file missing', file=sys.stderr); sys.exit(3)"
    doc = fleet.manifest("crashy", replicas=1, command=[sys.executable, "-c", script])
    fleet.apply_ok(doc)
    obj, stuck = _stuck_for(fleet, "crashy", "CRASH_LOOP")
    assert "exit code 3" in stuck["message"]
    assert "keel-e2e: config file missing" in stuck["message"]
    instance = obj.removeprefix("instance/")
    assert stuck["next_command"] == f"keelctl logs {instance} --tail 50"

    logs = fleet.keelctl("logs", instance, "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    assert "keel-e2e: config file missing" in logs.stderr

    fleet.apply_ok(fleet.manifest("crashy", replicas=1))
    fleet.wait_running("crashy", 1, generation=2)
    _cleared(fleet, "crashy")


def test_selector_matching_no_host_is_unschedulable_naming_why(fleet: Fleet) -> None:
    """A selector no host matches is UNSCHEDULABLE, saying so, after the deadline; a selector
    that matches clears it."""
    doc = fleet.manifest("gpu", replicas=2, selector={"role": "gpu"}, deadline="1s")
    fleet.apply_ok(doc)
    obj, stuck = _stuck_for(fleet, "gpu", "UNSCHEDULABLE")
    assert obj == "workload/gpu"
    assert stuck["message"].startswith("NO_MATCHING_HOST")
    assert "role=gpu" in stuck["message"]
    assert stuck["runbook"] == "runbooks/stuck/unschedulable.md"

    fleet.apply_ok(fleet.manifest("gpu", replicas=2, deadline="1s"))
    fleet.wait_running("gpu", 2)
    _cleared(fleet, "gpu")


def test_too_large_for_any_host_names_the_closest_fit(fleet: Fleet) -> None:
    """A workload bigger than every host is UNSCHEDULABLE with the closest fit and how far it
    falls short; shrinking it clears it."""
    doc = fleet.manifest("huge", replicas=1, deadline="1s")
    doc["spec"]["resources"] = {"cpu": "100000", "memory": "16Mi"}
    fleet.apply_ok(doc)
    _, stuck = _stuck_for(fleet, "huge", "UNSCHEDULABLE")
    assert stuck["message"].startswith("INSUFFICIENT_RESOURCES")
    assert "closest fit host-" in stuck["message"]
    assert "short" in stuck["message"]

    fleet.apply_ok(fleet.manifest("huge", replicas=1, deadline="1s"))
    fleet.wait_running("huge", 1)
    _cleared(fleet, "huge")


def test_logs_of_an_instance_whose_agent_is_down_is_a_clear_error(fleet: Fleet) -> None:
    """keelctl logs fetches through the agent's stream; with the agent gone it says so."""
    fleet.apply_ok(fleet.manifest("quiet", replicas=1))
    [inst] = fleet.wait_running("quiet", 1)
    assert fleet.keelctl("logs", inst.id, "--tail", "5").returncode == 0
    fleet.kill_agent(int(inst.host.removeprefix("host-")))

    def refused() -> str | None:
        # Refused as disconnected as soon as no replica holds the agent's stream, whether or
        # not the host is marked disconnected yet.
        result = fleet.keelctl("logs", inst.id)
        return result.stderr if result.returncode == 1 else None

    stderr = wait_for(refused, timeout=15, message="keelctl logs refused")
    assert f'the agent of host "{inst.host}" is disconnected' in stderr
    assert stderr.count("\n") == 1  # one line
