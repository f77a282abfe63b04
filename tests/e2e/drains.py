"""What the drain end-to-end tests share: a two-replica fleet, reading an operation through
keelctl, and the disruption budget checked two ways: over instance listings sampled while a
drain runs, and over the recorded history (`keelctl events`) afterwards, rebuilt from the
instances' own InstanceReady / InstanceNotReady events in order, not from the drain
controller's account of itself.

Used by test_drain*.py and test_cordon.py; the fleet is `replicas.TwoReplicas`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from conftest import DatabaseFactory
from harness import Fleet, wait_for
from replicas import TwoReplicas
from views import HostView, InstanceView

# Short waits, so blocked drains are judged within a test's time.
FAST = ["--drain-interval", "300ms", "--drain-blocked-after", "2s", "--leader-retry", "300ms"]

# An instance id is WORKLOAD-GENERATION-HEX.
_INSTANCE = re.compile(r"^instance/(?P<id>(?P<workload>[a-z0-9-]+)-\d+-[0-9a-f]+)$")


@contextlib.contextmanager
def two_replicas(
    root: Path,
    database_factory: DatabaseFactory,
    *,
    agents: int = 4,
    agent_args: Mapping[int, Sequence[str]] | None = None,
    controlplane_args: Sequence[str] = FAST,
) -> Iterator[TwoReplicas]:
    """Two control-plane replicas on one database and `agents` agents, all hosts READY and a
    leader elected; keelctl is given both replicas."""
    with (
        database_factory() as url,
        TwoReplicas(
            root,
            database_url=url,
            agents=agents,
            agent_args=agent_args,
            controlplane_args=controlplane_args,
        ) as fleet,
    ):
        wait_for(fleet.leader, timeout=60, message="a leading replica")
        yield fleet


def shell_server(fleet: Fleet, before: str) -> list[str]:
    """The test's HTTP server run by /bin/sh after the shell text `before` (which may exit, or
    wait: a first start counts as ready as soon as its health check passes, so a move is only
    as slow as its replacement's start)."""
    serve = " ".join(fleet.server_command()).replace("${KEEL_PORT_HTTP}", '"$KEEL_PORT_HTTP"')
    return ["/bin/sh", "-c", f"{before}; exec {serve}"]


def standby(fleet: TwoReplicas) -> str:
    """The address of the replica that does not lead."""
    leader = wait_for(fleet.leader, timeout=60, message="a leading replica")
    return next(a for a in fleet.replicas if a != leader)


def op(fleet: Fleet, op_id: str) -> dict[str, Any]:
    """`keelctl op get ID -o json`."""
    data: dict[str, Any] = fleet.keelctl_json("op", "get", op_id)
    return data


def started(fleet: Fleet, *args: str) -> str:
    """Runs `keelctl drain ARGS -o json` and returns the operation's id."""
    op_id: str = fleet.keelctl_json("drain", *args)["operation"]["id"]
    return op_id


def ended(fleet: Fleet, op_id: str, *, timeout: float = 120) -> dict[str, Any]:
    """Waits until the operation is no longer PENDING or RUNNING, and returns it."""
    return wait_for(
        lambda: (o := op(fleet, op_id))["state"] not in ("PENDING", "RUNNING") and o,
        timeout=timeout,
        message=f"{op_id} to end",
    )


def blockers(fleet: Fleet, op_id: str, count: int = 1) -> dict[str, dict[str, Any]]:
    """Waits until the running operation reports `count` blockers; instance id -> blocker."""

    def listed() -> dict[str, dict[str, Any]] | None:
        o = op(fleet, op_id)
        assert o["state"] == "RUNNING", o
        found = {b["instance"]: b for b in o["progress"].get("blockers", [])}
        return found if len(found) >= count else None

    return wait_for(listed, timeout=60, message=f"{count} blockers of {op_id}")


def host(fleet: Fleet, name: str) -> HostView:
    return next(h for h in fleet.hosts_status() if h.name == name)


def available(instances: Sequence[InstanceView], workload: str) -> int:
    """Instances of workload serving and wanted: what the budget counts as available."""
    return sum(
        1 for i in instances if i.workload == workload and i.desired == "RUNNING" and i.serving
    )


def history(fleet: Fleet) -> list[dict[str, Any]]:
    """Every recorded event, oldest first."""
    limit = 10_000
    events: list[dict[str, Any]] = fleet.keelctl_json("events", "--limit", str(limit))["events"]
    assert len(events) < limit, "the history was cut short"
    return events


def ready_over_history(
    events: Sequence[Mapping[str, Any]], workloads: Sequence[str]
) -> list[tuple[Mapping[str, Any], dict[str, int]]]:
    """After each event, how many instances of each workload were ready: rebuilt from the
    instances' InstanceReady / InstanceNotReady events alone, in the order recorded."""
    ready: dict[str, set[str]] = {w: set() for w in workloads}
    out = []
    for e in events:
        m = _INSTANCE.match(e["object"])
        if m and m["workload"] in ready:
            if e["kind"] == "InstanceReady":
                ready[m["workload"]].add(m["id"])
            elif e["kind"] == "InstanceNotReady":
                ready[m["workload"]].discard(m["id"])
        out.append((e, {w: len(s) for w, s in ready.items()}))
    return out


def assert_budget_held_in_history(
    events: Sequence[Mapping[str, Any]], op_id: str, floors: Mapping[str, tuple[int, int]]
) -> None:
    """From the drain's DrainStarted event to the end of the history, no workload had fewer
    ready than its floor. `floors`: workload -> (replicas, replicas - max_unavailable); at the
    drain's start every replica was ready (the history is whole)."""
    timeline = ready_over_history(events, list(floors))
    begin = next(
        i
        for i, (e, _) in enumerate(timeline)
        if e["kind"] == "DrainStarted" and e["object"] == f"operation/{op_id}"
    )
    assert timeline[begin][1] == {w: r for w, (r, _) in floors.items()}, timeline[begin]
    for e, counts in timeline[begin:]:
        for w, (_, floor) in floors.items():
            assert counts[w] >= floor, f"{w}: {counts[w]} ready after {e}, floor {floor}"


def event_index(events: Sequence[Mapping[str, Any]], instance: str, kind: str) -> int:
    """Where in the history instance's first event of kind is."""
    obj = f"instance/{instance}"
    return next(i for i, e in enumerate(events) if e["object"] == obj and e["kind"] == kind)
