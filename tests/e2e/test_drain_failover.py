"""End-to-end: two control-plane replicas on one Postgres, and `kill -9` of the leading one
while a drain's moves are in flight: the standby takes the lead and finishes the drain.

The agents and keelctl are given both replicas (`--controlplane A,B`) and fail over on their
own; each replica's `keel_leader` says which one leads. Instances are listed through the
standby every 20 ms from before the drain to its end.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from drains import (
    assert_budget_held_in_history,
    available,
    ended,
    history,
    shell_server,
    two_replicas,
)
from harness import InstanceSampler, wait_for
from replicas import TwoReplicas
from views import InstanceView

pytestmark = pytest.mark.e2e

REPLICAS = 12


@pytest.fixture
def replicas(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    with two_replicas(tmp_path, database_factory) as f:
        yield f


def _in_flight(sample: Sequence[InstanceView], moving: set[str]) -> set[str]:
    """The instances of host-1 whose replacement exists while they still do."""
    present = {i.id for i in sample}
    return {r for i in sample if (r := i.raw.get("replaces", "")) in moving and r in present}


def test_kill_9_of_the_leading_replica_with_moves_in_flight_and_the_standby_finishes(
    replicas: TwoReplicas,
) -> None:
    """The leader is killed as soon as the drain's first replacement exists (a move under way,
    the drain far from done). The standby leads and finishes: SUCCEEDED; over every listing
    seen, each instance of host-1 had exactly one replacement, never more than 2 moves at once
    (--max-parallel 2), never fewer than 11 of 12 ready; the recorded history agrees; a second
    drain through keelctl (now reaching the standby) returns the same operation."""
    fleet = replicas
    # Each instance listens 2 s after it starts: a move takes that long at least.
    slow = shell_server(fleet, "sleep 2")
    fleet.apply_ok(fleet.manifest("web", command=slow, replicas=REPLICAS, max_surge=2))
    fleet.wait_running("web", REPLICAS, timeout=120)
    moving = {i.id for i in fleet.instances("web") if i.host == "host-1"}
    assert len(moving) >= 3, moving
    leader = wait_for(fleet.leader, timeout=30, message="a leading replica")
    standby = next(a for a in fleet.replicas if a != leader)
    proc, _ = fleet.replicas[leader]

    with InstanceSampler(standby, "web") as sampler:
        sampler.start()
        op_id = fleet.keelctl_json("drain", "host-1", "--max-parallel", "2")["operation"]["id"]
        wait_for(
            lambda: (s := sampler.latest()) is not None and _in_flight(s, moving),
            timeout=60,
            interval=0.01,
            message="the first move under way",
        )
        killed_at = time.monotonic()
        proc.signal_group(signal.SIGKILL)
        at_kill = sampler.latest()
        # Resumed: the standby leads and its drain controller has made a pass over the drain.
        wait_for(
            lambda: (
                (m := fleet.replica_metrics(standby)).get("keel_leader") == 1
                and m.get("keel_drain_remaining_instances", 0) >= 1
            ),
            timeout=60,
            interval=0.05,
            message="the standby leading and resuming the drain",
        )
        resumed_s = time.monotonic() - killed_at
        assert proc.wait(15)
        again = fleet.keelctl_json("drain", "host-1")
        assert again["operation"]["id"] == op_id, again
        done = ended(fleet, op_id, timeout=180)
    assert done["state"] == "SUCCEEDED", done
    # Its progress is counted across the failover: every instance of host-1, none left.
    assert (done["progress"]["moved"], done["progress"]["remaining"]) == (len(moving), 0), done
    assert at_kill is not None
    # Killed mid-drain: instances still on host-1 and wanted, a move under way.
    assert [i for i in at_kill if i.host == "host-1" and i.desired == "RUNNING"], at_kill
    final = fleet.wait_running("web", REPLICAS)
    assert not [i for i in final if i.host == "host-1"]

    assert not sampler.errors, sampler.errors[:3]
    seen = {i.id: i for sample in sampler.samples for i in sample}
    seen.update({i.id: i for i in final})
    replaced = Counter(r for i in seen.values() if (r := i.raw.get("replaces", "")))
    assert replaced == Counter(moving), f"moved more than once: {replaced - Counter(moving)}"
    for sample in sampler.samples:
        assert available(sample, "web") >= REPLICAS - 1, sample
        assert len(_in_flight(sample, moving)) <= 2, sample
    assert_budget_held_in_history(history(fleet), op_id, {"web": (REPLICAS, REPLICAS - 1)})
    most = max(len(_in_flight(sample, moving)) for sample in sampler.samples)
    print(
        f"the standby resumed the drain {resumed_s:.2f} s after kill -9 of the leader; "
        f"{len(sampler.samples)} listings, at most {most} moves at once, "
        f"{len(_in_flight(at_kill, moving))} under way at the kill"
    )
