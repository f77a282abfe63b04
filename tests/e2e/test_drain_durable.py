"""End-to-end: a drain outlives its control plane, and the runbook's planned maintenance runs
as written.

`kill -9` of the control plane in the middle of a drain, then a restart: the drain finishes,
no instance is lost, none is moved twice, and the budget held, checked by sampling while it ran
and afterwards over the recorded event history in order. Then the planned-maintenance
procedure of runbooks/cordon-and-drain.md, command by command from the runbook's own text,
against two control-plane replicas.
"""

from __future__ import annotations

import re
import shlex
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faults
import pytest
from conftest import DatabaseFactory
from drains import (
    assert_budget_held_in_history,
    event_index,
    history,
    shell_server,
    two_replicas,
)
from harness import Fleet, InstanceSampler, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "runbooks" / "cordon-and-drain.md"
FAST = ["--drain-interval", "300ms"]


@pytest.fixture
def fleet4(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=4, controlplane_args=FAST) as f,
    ):
        yield f


def _op(fleet: Fleet, op_id: str) -> dict[str, Any]:
    data: dict[str, Any] = fleet.keelctl_json("op", "get", op_id)
    return data


def test_a_drain_survives_kill_9_of_the_control_plane(fleet4: Fleet) -> None:
    """Killed mid-drain and restarted, the control plane finishes the drain: every instance
    of host-1 replaced exactly once, none lost, and no moment (sampled, or in the event
    history) with fewer ready than the budget allows."""
    fleet = fleet4
    # Each instance listens 2 s after it starts: the kill lands while a replacement starts.
    fleet.apply_ok(fleet.manifest("web", command=shell_server(fleet, "sleep 2"), replicas=8))
    fleet.wait_running("web", 8)
    moving = sorted(i.id for i in fleet.instances("web") if i.host == "host-1")
    assert moving

    with InstanceSampler(fleet.address, "web") as sampler:
        sampler.start()
        op_id = fleet.keelctl_json("drain", "host-1", "--max-parallel", "1")["operation"]["id"]
        wait_for(
            lambda: _op(fleet, op_id)["progress"].get("in_flight"),
            message="a move under way",
        )
        fleet.kill_cp(signal.SIGKILL)
        killed_at = time.monotonic()
        fleet.restart_cp()
        done = wait_for(
            lambda: (o := _op(fleet, op_id))["state"] != "RUNNING" and o,
            timeout=90,
            message="the drain to end after the restart",
        )
    recovered_s = time.monotonic() - killed_at
    assert done["state"] == "SUCCEEDED", done
    assert (done["progress"]["moved"], done["progress"]["remaining"]) == (len(moving), 0), done
    final = fleet.wait_running("web", 8)
    assert not [i for i in final if i.host == "host-1"]
    # Each instance that left host-1 has exactly one replacement, and it runs.
    replaced = Counter(i.raw.get("replaces", "") for i in final)
    assert {x: replaced[x] for x in moving} == dict.fromkeys(moving, 1)
    for sample in sampler.samples:
        ready = sum(1 for i in sample if i.desired == "RUNNING" and i.serving)
        assert ready >= 7, f"{ready} of 8 ready while draining: {sample}"
        # Never more that may be running than replicas + max_surge (1), stopping ones included.
        may_run = sum(
            1
            for i in sample
            if i.desired != "REMOVED" or i.phase in ("STARTING", "RUNNING", "STOPPING")
        )
        assert may_run <= 9, f"{may_run} may be running while draining: {sample}"

    # The history, in order, from the instances' own events: at least 7 of 8 ready at every
    # point, and each replacement ready before the instance it replaced stopped serving.
    events = history(fleet)
    assert_budget_held_in_history(events, op_id, {"web": (8, 7)})
    for new in final:
        if old := new.raw.get("replaces", ""):
            assert event_index(events, new.id, "InstanceReady") < event_index(
                events, old, "InstanceNotReady"
            ), f"{old} stopped serving before its replacement {new.id} was ready"
    # The drain controller's own account agrees: one replacement started per instance.
    moves = [e for e in events if e["kind"] == "DrainMove"]
    started = Counter(e["object"] for e in moves if "replacement starting" in e["message"])
    assert started == Counter(f"instance/{x}" for x in moving), moves
    faults.record(
        "kill -9 of the control plane mid-drain (8 replicas, 4 hosts, max-parallel 1)",
        observed=f"drain SUCCEEDED after restart; {len(sampler.samples)} samples: ready >= "
        f"{min(sum(1 for i in s if i.desired == 'RUNNING' and i.serving) for s in sampler.samples)}"
        f"; each of {len(moving)} moved once",
        lost="nothing (8 of 8 running, none on host-1)",
        recover_s=recovered_s,
    )


def _planned_maintenance_commands() -> list[str]:
    """The sh block of the runbook's *Planned maintenance of one host* section."""
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text.split("### Planned maintenance of one host", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the section has no sh block"
    return [
        line.strip() for line in block.group(1).splitlines() if line.strip().startswith("keelctl ")
    ]


def test_the_runbooks_planned_maintenance_runs_command_by_command(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """Every command of the procedure, as the runbook writes it (HOST = host-1), succeeds
    against two control-plane replicas and four agents, and does what the runbook says: the
    host empties, then takes instances again."""
    with two_replicas(tmp_path, database_factory) as fleet:
        _planned_maintenance(fleet)


def _planned_maintenance(fleet: Fleet) -> None:
    fleet.apply_ok(fleet.manifest("web", replicas=4))
    fleet.wait_running("web", 4)
    commands = _planned_maintenance_commands()
    assert any(c.startswith("keelctl drain HOST") and "--wait" in c for c in commands)
    for command in commands:
        argv = shlex.split(command.replace("HOST", "host-1"))[1:]
        result = fleet.keelctl(*argv, timeout=120)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        if argv[0] == "drain" and "--wait" in argv:
            assert not [i for i in fleet.instances("web") if i.host == "host-1"]
            assert "runbooks/cordon-and-drain.md" in result.stdout
    host = next(h for h in fleet.hosts_status() if h.name == "host-1")
    assert host.schedulable
    # Schedulable again: a scale-up may place there.
    fleet.apply_ok(fleet.manifest("web", replicas=8))
    wait_for(
        lambda: any(i.host == "host-1" for i in fleet.wait_running("web", 8)),
        timeout=60,
        message="an instance on host-1 again",
    )
