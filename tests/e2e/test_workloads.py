"""End-to-end: an operator's workload lifecycle through keelctl, down to the real processes.

apply -> running processes, scale up and down, a rolling spec change within the disruption
budget, delete. The fleet (tests/e2e/harness.py) is a real control plane and three real agents
with the process driver; every check on a process looks at the process table itself.
"""

from __future__ import annotations

import urllib.request
from collections import Counter

import psutil
import pytest
from harness import AGENT_ONLY_ENV, Fleet, InstanceSampler, hold_for, pids_of, wait_for
from procs import process_alive, process_environ

pytestmark = pytest.mark.e2e


def _all_dead(pids: list[int]) -> bool:
    return not any(process_alive(p) for p in pids)


def _workload_processes(fleet: Fleet) -> list[int]:
    """Live processes running this test's server script, whoever started them."""
    script = str(fleet.server_script)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if script in (proc.info.get("cmdline") or []) and process_alive(proc.pid):
            found.append(proc.pid)
    return found


def test_apply_runs_every_replica_as_a_real_process_spread_over_hosts(fleet: Fleet) -> None:
    """Applied replicas run as real processes, one per host, with the spec's env and not the
    agent's."""
    fleet.apply_ok(fleet.manifest("web", replicas=3, env={"GREETING": "hello"}))

    instances = fleet.wait_running("web", 3)

    assert sorted(i.host for i in instances) == sorted(fleet.hosts)
    for inst in instances:
        assert process_alive(inst.pid), f"{inst.id}: pid {inst.pid} is not running"
        assert inst.restart_count == 0, f"{inst.id} restarted: {inst.last_exit}"
        assert str(fleet.server_script) in psutil.Process(inst.pid).cmdline()
        env = process_environ(inst.pid)
        assert env.get("KEEL_INSTANCE") == inst.id
        assert env.get("KEEL_WORKLOAD") == "web"
        assert env.get("KEEL_HOST") == inst.host
        assert env.get("GREETING") == "hello"
        assert AGENT_ONLY_ENV not in env, "the workload inherited the agent's environment"
        # ${KEEL_PORT_HTTP} in the command was expanded to the port the agent allocated.
        port = int(env["KEEL_PORT_HTTP"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
            assert reply.read() == b"ok\n"


def test_scaling_up_adds_replicas_and_scaling_down_stops_the_extra_processes(
    fleet: Fleet,
) -> None:
    """Replicas 3 -> 5 -> 2 converge each time, and the removed instances' processes end."""
    fleet.apply_ok(fleet.manifest("web", replicas=3))
    three = fleet.wait_running("web", 3)

    fleet.apply_ok(fleet.manifest("web", replicas=5))
    five = fleet.wait_running("web", 5)
    assert set(pids_of(three)) <= set(pids_of(five)), "scaling up replaced running instances"
    per_host = Counter(i.host for i in five)
    assert set(per_host) == set(fleet.hosts)
    assert max(per_host.values()) - min(per_host.values()) <= 1, f"not spread: {per_host}"

    fleet.apply_ok(fleet.manifest("web", replicas=2))
    two = fleet.wait_running("web", 2)
    assert set(pids_of(two)) <= set(pids_of(five)), "scaling down started new instances"
    removed = [i.pid for i in five if i.id not in pids_of(two)]
    wait_for(lambda: _all_dead(removed), timeout=20, message=f"removed pids {removed} to exit")
    assert sorted(_workload_processes(fleet)) == sorted(i.pid for i in two)


def test_rolling_spec_change_keeps_within_the_disruption_budget(fleet: Fleet) -> None:
    """An env change replaces every instance while at least replicas - max_unavailable serve."""
    fleet.apply_ok(
        fleet.manifest("web", replicas=3, max_unavailable=1, max_surge=1, env={"GREETING": "a"})
    )
    old = fleet.wait_running("web", 3)
    generation = fleet.workload("web").generation
    target = generation + 1

    # Sample over gRPC (milliseconds a sample) from before the change until it is done.
    with InstanceSampler(fleet.address, "web") as sampler:
        sampler.start()
        wait_for(sampler.latest, timeout=10, message="a first sample")
        fleet.apply_ok(
            fleet.manifest("web", replicas=3, max_unavailable=1, max_surge=1, env={"GREETING": "b"})
        )

        def rolled_out() -> bool:
            insts = sampler.latest() or []
            return len(insts) == 3 and all(i.generation == target and i.serving for i in insts)

        wait_for(rolled_out, timeout=60, interval=0.05, message=f"rollout to generation {target}")
    samples = sampler.samples

    assert fleet.workload("web").generation == target
    mixed = [s for s in samples if {i.generation for i in s} == {generation, target}]
    assert mixed, "no sample caught the rollout in progress"
    serving = [sum(i.serving for i in s) for s in samples]
    assert min(serving) >= 2, f"fewer than 2 instances served during the rollout: {serving}"
    wanted = [sum(i.desired == "RUNNING" for i in s) for s in samples]
    assert max(wanted) <= 4, f"more than replicas + max_surge desired at once: {wanted}"

    new = fleet.wait_running("web", 3, generation=target)
    assert target == 2
    for inst in new:
        assert process_environ(inst.pid).get("GREETING") == "b"
    old_pids = [i.pid for i in old]
    wait_for(lambda: _all_dead(old_pids), timeout=20, message="old generation's processes to end")


def test_deleting_a_workload_stops_and_forgets_every_instance(fleet: Fleet) -> None:
    """delete workload stops every process and leaves no instance behind."""
    fleet.apply_ok(fleet.manifest("web", replicas=3))
    pids = [i.pid for i in fleet.wait_running("web", 3)]

    fleet.keelctl_ok("delete", "workload", "web")

    wait_for(lambda: fleet.instances() == [], timeout=30, message="no instances listed")
    wait_for(lambda: _all_dead(pids), timeout=20, message=f"pids {pids} to exit")
    wait_for(
        lambda: all(w.name != "web" for w in fleet.workloads()),
        timeout=20,
        message="workload web gone from get workloads",
    )
    assert _workload_processes(fleet) == []


def test_apply_of_an_unchanged_workload_restarts_nothing(fleet: Fleet) -> None:
    """Applying the same document twice keeps the generation and every process."""
    doc = fleet.manifest("web", replicas=2)
    fleet.apply_ok(doc)
    before = fleet.wait_running("web", 2)
    generation = fleet.workload("web").generation

    fleet.apply_ok(doc)

    assert fleet.workload("web").generation == generation
    # Long enough for a wrongly triggered rollout to show (a few resync periods).
    hold_for(
        lambda: pids_of(fleet.instances_rpc("web")) == pids_of(before),
        duration=3,
        message="same instances and pids after a no-op apply",
    )
