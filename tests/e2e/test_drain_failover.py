"""End-to-end: two control-plane replicas on one Postgres, and `kill -9` of the leading one in
the middle of a drain: the standby takes the lead and finishes the drain.

The agents and keelctl are given both replicas (`--controlplane A,B`) and fail over on their
own; each replica's `keel_leader` says which one leads.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DatabaseFactory
from harness import KEEL_CONTROLPLANE, Fleet, wait_for
from replicas import TwoReplicas

pytestmark = pytest.mark.e2e

FAST = ["--drain-interval", "300ms", "--leader-retry", "300ms"]


@pytest.fixture
def replicas(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    with (
        database_factory() as url,
        TwoReplicas(
            tmp_path,
            database_url=url,
            agents=4,
            agent_args={1: ["--label", "disk=ssd"]},
            controlplane_args=FAST,
        ) as f,
    ):
        yield f


def _op(fleet: Fleet, op_id: str) -> dict[str, Any]:
    data: dict[str, Any] = fleet.keelctl_json("op", "get", op_id)
    return data


def test_kill_9_of_the_leading_replica_mid_drain_and_the_standby_finishes_it(
    replicas: TwoReplicas,
) -> None:
    """The leader killed mid-drain (web moved, a pinned instance still blocked): keelctl
    reaches the standby (the same operation for a second drain), the standby leads, and once
    the blocker is lifted it finishes the drain: SUCCEEDED, every instance of the host
    replaced exactly once."""
    fleet = replicas
    assert KEEL_CONTROLPLANE.exists()
    leader = wait_for(fleet.leader, timeout=30, message="a leading replica")
    fleet.apply_ok(fleet.manifest("web", replicas=8))
    pinned_doc = fleet.manifest("pinned", replicas=1, selector={"disk": "ssd"})
    fleet.apply_ok(pinned_doc)
    fleet.wait_running("web", 8)
    fleet.wait_running("pinned", 1)
    moving = sorted(i.id for i in fleet.instances() if i.host == "host-1")
    op_id = fleet.keelctl_json("drain", "host-1")["operation"]["id"]
    # Mid-drain: web has left host-1, the pinned instance cannot (NO_CAPACITY).
    wait_for(
        lambda: (
            (o := _op(fleet, op_id))["progress"].get("remaining") == 1
            and o["progress"].get("blockers")
            and not [i for i in fleet.instances("web") if i.host == "host-1"]
        ),
        timeout=60,
        message="web moved off host-1 and the pinned instance blocked",
    )

    proc, _ = fleet.replicas[leader]
    standby = next(a for a in fleet.replicas if a != leader)
    assert fleet.replica_metrics(standby).get("keel_drain_remaining_instances") == 0
    killed_at = time.monotonic()
    proc.signal_group(signal.SIGKILL)
    # Resumed: the standby leads and its drain controller has made a pass over the drain (the
    # one instance left, blocked).
    wait_for(
        lambda: (
            (m := fleet.replica_metrics(standby)).get("keel_leader") == 1
            and m.get("keel_drain_remaining_instances") == 1
            and m.get("keel_drain_blocked_instances") == 1
        ),
        timeout=30,
        interval=0.05,
        message="the standby leading and resuming the drain",
    )
    resumed_s = time.monotonic() - killed_at
    assert proc.wait(15)
    # A second drain request (keelctl fails over to the standby) returns the same operation.
    again = fleet.keelctl_json("drain", "host-1")
    assert again["operation"]["id"] == op_id, (_op(fleet, op_id), again)
    # Lift the blocker: the pinned workload may run anywhere now.
    fleet.apply_ok({**pinned_doc, "selector": {}})
    done = wait_for(
        lambda: (o := _op(fleet, op_id))["state"] != "RUNNING" and o,
        timeout=90,
        message="the standby to finish the drain",
    )
    assert done["state"] == "SUCCEEDED", done
    final = fleet.wait_running("web", 8) + fleet.wait_running("pinned", 1)
    assert not [i for i in final if i.host == "host-1"]
    replaced = Counter(i.raw.get("replaces", "") for i in final)
    assert {x: replaced[x] for x in moving} == dict.fromkeys(moving, 1)
    print(f"the standby resumed the drain {resumed_s:.2f} s after kill -9 of the leader")
