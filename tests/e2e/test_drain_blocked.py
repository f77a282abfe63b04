"""End-to-end: drains that cannot finish, against two control-plane replicas and four agents.

One drain of host-1 meets both kinds of blocker at once: an instance of a workload with
`max_surge: 0` and `max_unavailable: 1` whose replica on host-3 is already down, crash-looping
(BUDGET_EXHAUSTED), and an instance too big for any other host (NO_CAPACITY, cpu and memory).
Each is reported while blocked (`keelctl op get -o json`, through either replica), the drain
becomes DRAIN_BLOCKED in `keelctl stuck`, and it ends FAILED at its deadline (`--wait` exits
1) with the host cordoned and both instances running as before; `--on-deadline force` stops
them.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DatabaseFactory
from drains import blockers, host, shell_server, standby, two_replicas
from harness import wait_for
from procs import process_alive
from replicas import TwoReplicas
from views import InstanceView

pytestmark = pytest.mark.e2e

BIG = "cpu=4000,memory=4096"
SMALL = "cpu=1000,memory=1024"


@pytest.fixture
def fleet4(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    """host-1..host-3 in zone a; host-1 alone has room for the big workload."""
    args = {
        1: ["--label", "zone=a", "--capacity", BIG],
        2: ["--label", "zone=a", "--capacity", SMALL],
        3: ["--label", "zone=a", "--capacity", SMALL],
        4: ["--capacity", SMALL],
    }
    with two_replicas(tmp_path, database_factory, agent_args=args) as f:
        yield f


def _web_with_one_crash_looping(fleet: TwoReplicas) -> dict[str, InstanceView]:
    """host -> web instance: serving on host-1 and host-2, restarting again and again on
    host-3."""

    def settled() -> dict[str, InstanceView] | None:
        by_host = {i.host: i for i in fleet.instances("web")}
        if sorted(by_host) != ["host-1", "host-2", "host-3"] or len(fleet.instances("web")) != 3:
            return None
        down = by_host["host-3"]
        up = by_host["host-1"].serving and by_host["host-2"].serving
        return by_host if up and down.restart_count >= 2 and not down.serving else None

    return wait_for(settled, timeout=90, message="web serving on host-1, 2 and looping on 3")


def test_a_drain_blocked_by_the_budget_and_by_capacity_fails_then_force_stops_what_remains(
    fleet4: TwoReplicas,
) -> None:
    """BUDGET_EXHAUSTED names web's budget and the crash-looping instance holding it;
    NO_CAPACITY says how much cpu and memory is missing and the closest fit; DRAIN_BLOCKED in
    keelctl stuck; FAILED at the deadline, the host cordoned, both instances running with the
    same processes; then a drain with --on-deadline force stops them, recorded as an event."""
    fleet = fleet4
    fleet.apply_ok(
        fleet.manifest(
            "web",
            # The test's HTTP server, except on host-3, where it exits at once (a crash loop).
            command=shell_server(fleet, '[ "${KEEL_HOST}" = host-3 ] && exit 1'),
            replicas=3,
            max_surge=0,
            max_unavailable=1,
            selector={"zone": "a"},
        )
    )
    big = fleet.manifest("big", replicas=1)
    big["spec"]["resources"] = {"cpu": "2000m", "memory": "2048Mi"}
    fleet.apply_ok(big)
    web = _web_with_one_crash_looping(fleet)
    [big_inst] = fleet.wait_running("big", 1)
    assert big_inst.host == "host-1"
    victim = web["host-1"]

    # The drain, waited on by keelctl (exit 1 when it fails), its id from `keelctl ops`.
    waited: list[subprocess.CompletedProcess[str]] = []
    waiter = threading.Thread(
        target=lambda: waited.append(
            fleet.keelctl("drain", "host-1", "--deadline", "20s", "--wait", timeout=180)
        ),
        name="drain-wait",
    )
    waiter.start()
    try:
        [running] = wait_for(
            lambda: fleet.keelctl_json("ops").get("operations"),
            timeout=30,
            message="the drain in keelctl ops",
        )
        op_id: str = running["id"]
        found = blockers(fleet, op_id, count=2)
        budget, capacity = found[victim.id], found[big_inst.id]
        assert (budget["reason"], budget["workload"], budget["host"]) == (
            "BUDGET_EXHAUSTED",
            "web",
            "host-1",
        )
        assert (
            "web allows max_unavailable=1 of 3: 2 ready, at least 2 must stay"
            in (budget["message"])
        )
        assert f"down now: {web['host-3'].id}" in budget["message"], budget
        assert budget["runbook"] == "runbooks/drain/budget-exhausted.md"
        assert budget["next_command"] == "keelctl describe workload web"
        assert budget["since"]
        assert (capacity["reason"], capacity["workload"]) == ("NO_CAPACITY", "big")
        assert (
            "needs cpu 2000m, memory 2048Mi; closest fit host-4 has cpu 1000m free (short "
            "1000m), memory 1024Mi free (short 1024Mi)"
        ) in capacity["message"], capacity
        assert capacity["runbook"] == "runbooks/drain/no-capacity.md"
        assert capacity["next_command"] == "keelctl get hosts"
        # The replica that does not lead reports the same blockers.
        other = fleet.keelctl("op", "get", op_id, json_output=True, address=standby(fleet))
        assert other.returncode == 0, other.stderr
        reported = json.loads(other.stdout)["progress"]["blockers"]
        assert {(b["instance"], b["reason"]) for b in reported} == {
            (victim.id, "BUDGET_EXHAUSTED"),
            (big_inst.id, "NO_CAPACITY"),
        }
        # Blocked past --drain-blocked-after (2s here): a stuck object with its next command.
        stuck = wait_for(
            lambda: [
                o
                for o in fleet.keelctl_json("stuck").get("objects", [])
                if o["object"] == f"operation/{op_id}"
            ],
            timeout=20,
            message="DRAIN_BLOCKED in keelctl stuck",
        )
        assert stuck[0]["stuck"]["reason"] == "DRAIN_BLOCKED"
        assert stuck[0]["stuck"]["next_command"] == f"keelctl op get {op_id}"
    finally:
        waiter.join(timeout=180)
    [result] = waited
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{op_id} FAILED" in result.stdout and "runbooks/cordon-and-drain.md" in result.stdout
    assert f"{victim.id} BUDGET_EXHAUSTED" in result.stdout
    assert f"{big_inst.id} NO_CAPACITY" in result.stdout
    failed = fleet.keelctl_json("op", "get", op_id)
    assert failed["state"] == "FAILED" and "deadline" in failed["message"], failed
    assert not host(fleet, "host-1").schedulable
    still = {i.id: i for i in fleet.instances()}
    for inst in (victim, big_inst):
        now = still[inst.id]
        assert (now.host, now.desired, now.serving, now.pid) == (
            "host-1",
            "RUNNING",
            True,
            inst.pid,
        )

    # Force: what remains is stopped at the deadline.
    forced = fleet.keelctl(
        "drain", "host-1", "--deadline", "3s", "--on-deadline", "force", "--wait", timeout=120
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    wait_for(
        lambda: not [i for i in fleet.instances() if i.host == "host-1"],
        timeout=60,
        message="nothing left on host-1",
    )
    for pid in (victim.pid, big_inst.pid):
        wait_for(lambda p=pid: not process_alive(p), timeout=30, message=f"pid {pid} to exit")
    events: list[dict[str, Any]] = fleet.keelctl_json("events", "--limit", "1000")["events"]
    [decision] = [e for e in events if e["kind"] == "DrainForced"]
    assert decision["actor"], decision
    [deadline] = [e for e in events if e["kind"] == "DrainFailed"]
    assert deadline["object"] == f"operation/{op_id}"
