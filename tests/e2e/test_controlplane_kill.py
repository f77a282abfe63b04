"""End-to-end: `kill -9` of the control plane in the middle of a rollout, then a restart.

A spec change rolls over six instances (max_surge 1, max_unavailable 1); the control plane is
killed once the rollout is part way (some instances new, some old) and started again. The
rollout finishes: six instances of the new generation, every old one gone, none lost (never
fewer ready than replicas - max_unavailable) and none duplicated beyond the surge (never more
that may be running than replicas + max_surge, stopping ones included), sampled every 20 ms
while it ran. The drain under the same fault is tests/e2e/test_drain_durable.py.
"""

from __future__ import annotations

import signal
import time

import faults
import pytest
from harness import Fleet, InstanceSampler, wait_for
from views import InstanceView

pytestmark = pytest.mark.e2e

REPLICAS = 6
SURGE = 1
UNAVAILABLE = 1
# Phases in which an instance's process may exist.
_MAY_RUN = ("STARTING", "RUNNING", "STOPPING")


def _may_run(sample: list[InstanceView]) -> int:
    """Instances whose process may be running: every live one, and removed ones not stopped."""
    return sum(1 for i in sample if i.desired != "REMOVED" or i.phase in _MAY_RUN)


def _ready(sample: list[InstanceView]) -> int:
    return sum(1 for i in sample if i.desired == "RUNNING" and i.serving)


def _part_way(sample: list[InstanceView] | None) -> bool:
    """Some instances of generation 2 ready, and some of generation 1 still live."""
    if not sample:
        return False
    new = [i for i in sample if i.generation == 2 and i.serving]
    old = [i for i in sample if i.generation == 1 and i.desired == "RUNNING"]
    return len(new) >= 1 and len(old) >= 2


def test_a_rollout_survives_kill_9_of_the_control_plane(fleet: Fleet) -> None:
    """Killed part way through a rollout and restarted, the control plane finishes it: six new
    instances, the old ones gone, and at no sampled moment fewer than 5 ready or more than 7
    that may be running."""
    manifest = {"replicas": REPLICAS, "max_surge": SURGE, "max_unavailable": UNAVAILABLE}
    fleet.apply_ok(fleet.manifest("web", **manifest))
    first = fleet.wait_running("web", REPLICAS)

    with InstanceSampler(fleet.address, "web") as sampler:
        sampler.start()
        fleet.apply_ok(fleet.manifest("web", env={"GREETING": "generation 2"}, **manifest))
        wait_for(lambda: _part_way(sampler.latest()), timeout=60, message="the rollout part way")
        fleet.kill_cp(signal.SIGKILL)
        killed_at = time.monotonic()
        at_kill = sampler.latest()
        fleet.restart_cp()
        final = fleet.wait_running("web", REPLICAS, generation=2, timeout=90)
        recovered_s = time.monotonic() - killed_at
    assert at_kill is not None and _part_way(at_kill)
    assert sampler.samples, "no sample taken"
    assert {i.id for i in final}.isdisjoint(i.id for i in first)
    assert len({i.id for i in final}) == REPLICAS
    for sample in sampler.samples:
        assert _ready(sample) >= REPLICAS - UNAVAILABLE, f"an instance lost: {sample}"
        assert _may_run(sample) <= REPLICAS + SURGE, f"beyond the surge: {sample}"
    # No generation-2 instance was created twice over (e.g. again by the restarted leader):
    # every one ever seen is one of the six that run now.
    seen_new = {i.id for sample in sampler.samples for i in sample if i.generation == 2}
    assert seen_new <= {i.id for i in final}, seen_new - {i.id for i in final}
    faults.record(
        "kill -9 of the control plane mid-rollout (6 replicas, surge 1, unavailable 1)",
        observed=f"rollout finished after restart; {len(sampler.samples)} samples: ready >= "
        f"{min(_ready(s) for s in sampler.samples)}, may run <= "
        f"{max(_may_run(s) for s in sampler.samples)}",
        lost="nothing (6 of 6 at generation 2, no old instance left)",
        recover_s=recovered_s,
    )
