"""End-to-end: faults the fleet must ride out — a killed workload, agent or control plane.

A workload killed with SIGKILL is restarted by its agent and the restart is visible to the
operator; an agent or control plane killed with SIGKILL and started again disturbs no workload
(same pids, no restart counted).
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import pytest
from harness import Fleet, hold_for, pids_of, wait_for
from procs import process_alive
from views import InstanceView

pytestmark = pytest.mark.e2e


def _restarts(instances: list[InstanceView]) -> dict[str, int]:
    return {i.id: i.restart_count for i in instances}


def _undisturbed(fleet: Fleet, before: list[InstanceView]) -> bool:
    """The same instances with the same pids, all serving, none restarted since `before`."""
    now = fleet.instances("web")
    return (
        pids_of(now) == pids_of(before)
        and _restarts(now) == _restarts(before)
        and all(i.serving for i in now)
        and all(process_alive(i.pid) for i in now)
    )


def test_a_killed_workload_is_restarted_and_the_restart_is_reported(fleet: Fleet) -> None:
    """kill -9 of a workload: the agent restarts it; restart count 1, last exit signal 9."""
    fleet.apply_ok(fleet.manifest("web", replicas=1))
    (victim,) = fleet.wait_running("web", 1)

    os.kill(victim.pid, signal.SIGKILL)

    def restarted() -> InstanceView | None:
        for inst in fleet.instances("web"):
            if inst.id == victim.id and inst.pid != victim.pid and inst.serving:
                return inst
        return None

    again = wait_for(restarted, timeout=30, message=f"{victim.id} restarted with a new pid")
    assert again.restart_count == victim.restart_count + 1
    assert process_alive(again.pid)
    assert not process_alive(victim.pid)
    described = fleet.keelctl_ok("describe", "instance", victim.id).stdout.lower()
    assert "signal 9" in described or "sigkill" in described, described


def test_an_agent_killed_and_restarted_adopts_its_running_workloads(fleet: Fleet) -> None:
    """kill -9 of an agent and a restart: the same pids keep running, no restart counted."""
    fleet.apply_ok(fleet.manifest("web", replicas=3))
    before = fleet.wait_running("web", 3)

    fleet.kill_agent(1, signal.SIGKILL)
    assert all(process_alive(i.pid) for i in before), "a workload died with its agent"
    restarted_at = datetime.now(UTC)
    fleet.restart_agent(1)

    fleet.wait_hosts_ready(since=restarted_at)
    hold_for(
        lambda: _undisturbed(fleet, before),
        duration=3,
        interval=0.5,
        message="workloads undisturbed by the agent restart",
    )


def test_a_control_plane_killed_and_restarted_disturbs_no_workload(fleet: Fleet) -> None:
    """kill -9 of the control plane and a restart: agents reconnect, nothing restarts."""
    fleet.apply_ok(fleet.manifest("web", replicas=3))
    before = fleet.wait_running("web", 3)

    fleet.kill_cp(signal.SIGKILL)
    assert all(process_alive(i.pid) for i in before), "a workload died with the control plane"
    restarted_at = datetime.now(UTC)
    fleet.restart_cp()

    fleet.wait_hosts_ready(since=restarted_at)
    wait_for(lambda: _undisturbed(fleet, before), timeout=15, message="instances reported again")
    hold_for(
        lambda: _undisturbed(fleet, before),
        duration=3,
        interval=0.5,
        message="workloads undisturbed by the control-plane restart",
    )
