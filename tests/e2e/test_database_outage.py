"""End-to-end: the control plane's own Postgres frozen (SIGSTOP) and thawed, or stopped and
started again, for as long as the outage a real fleet meets (20 s).

Health says so (keel.v1.FleetService NOT_SERVING while the overall service and AgentService
stay SERVING), operator calls answer UNAVAILABLE at once instead of hanging, agent streams stay
open (no reconnect storm: no Sync stream ends, no agent connects again), heartbeats are dropped
and counted, no host is judged NOT_READY for heartbeats the outage kept from landing, every log
line stays JSON, and changes flow again once Postgres answers. The Postgres taken away is the
embedded one this test's control plane started under its own state dir, found by its data
directory: never a server shared with another test.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Fleet, hold_for, wait_for
from procs import frozen, postgres_processes, stopped_postgres

from keel.v1 import fleet_pb2, fleet_pb2_grpc

pytestmark = pytest.mark.e2e

FLEET = "keel.v1.FleetService"
AGENT = "keel.v1.AgentService"
SHORT_DB_TIMEOUTS = [
    "--db-timeout",
    "1s",
    "--db-probe-interval",
    "200ms",
    "--db-probe-timeout",
    "500ms",
    # Liveness must not judge hosts by heartbeats the outage kept from being written: its grace
    # outlasts the outage (the default, 40s, does too).
    "--liveness-grace",
    "30s",
]
OUTAGE_S = 20.0
ALL_READY = {"host-1": "READY", "host-2": "READY"}


@pytest.fixture
def embedded_fleet() -> Iterator[Fleet]:
    """A control plane on its own embedded Postgres, with two agents.

    Not under pytest's temp dir: as root the server runs as another user, which must traverse
    every parent of its data dir, and any pytest session started meanwhile makes pytest's base
    dir 0700 again (tests/conftest.py's session Postgres lives apart for the same reason).
    """
    root = Path(tempfile.mkdtemp(prefix="keel-e2e-embedded-"))
    try:
        with Fleet(
            root, database_url=None, agents=2, controlplane_args=SHORT_DB_TIMEOUTS, start_timeout=90
        ) as f:
            yield f
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _health(fleet: Fleet, service: str) -> str:
    with fleet.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _sum(samples: dict[str, float], name: str, *needles: str) -> float:
    return sum(
        v for k, v in samples.items() if k.split("{")[0] == name and all(n in k for n in needles)
    )


def _ended_streams(fleet: Fleet) -> float:
    """Sync streams that have ended (each reconnect of an agent ends one)."""
    return _sum(fleet.metrics(), "keel_grpc_requests_total", f'service="{AGENT}"', 'method="Sync"')


def _non_json_lines(log: Path) -> list[str]:
    bad = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.strip() or line.startswith("===== "):  # the harness's own start marker
            continue
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad


def test_health_reports_fleet_not_serving_while_postgres_is_frozen(embedded_fleet: Fleet) -> None:
    """SIGSTOP of every Postgres process: FleetService NOT_SERVING within the probe timeout,
    "" and AgentService SERVING; keelctl answers UNAVAILABLE; SIGCONT: SERVING again."""
    fleet = embedded_fleet
    processes = postgres_processes(fleet.embedded_pgdata)
    assert processes, f"no postgres serving {fleet.embedded_pgdata}"
    assert _health(fleet, FLEET) == "SERVING"

    with frozen(processes), fleet.channel() as channel:
        # More calls than the pool has connections, all waiting on the frozen database: the
        # probe must not queue behind them for a connection.
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        calls = [
            stub.ListWorkloads.future(fleet_pb2.ListWorkloadsRequest(), timeout=20)
            for _ in range(16)
        ]
        wait_for(
            lambda: _health(fleet, FLEET) == "NOT_SERVING",
            timeout=10,
            message="FleetService NOT_SERVING",
        )
        for call in calls:
            assert call.exception(timeout=20).code() == grpc.StatusCode.UNAVAILABLE
        assert _health(fleet, "") == "SERVING"
        assert _health(fleet, AGENT) == "SERVING"
        assert fleet.metrics()["keel_database_up"] == 0
        result = fleet.keelctl("get", "workloads", "--timeout", "8s")
        assert result.returncode == 1, result
        assert "(UNAVAILABLE)" in result.stderr, result.stderr
        assert "try again" in result.stderr

    wait_for(lambda: _health(fleet, FLEET) == "SERVING", timeout=15, message="SERVING again")
    assert fleet.metrics()["keel_database_up"] == 1
    fleet.keelctl_ok("get", "workloads")


def _log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text(errors="replace").splitlines() if x[:1] == "{"]


def _connects(fleet: Fleet) -> dict[str, int]:
    """How many times each agent connected, and the control plane saw an agent connect."""

    def count(log: str, event: str) -> int:
        return sum(1 for x in _log_lines(fleet.logs / log) if x.get("event") == event)

    counts = {f"host-{i}": count(f"host-{i}.log", "connected") for i in (1, 2)}
    counts["controlplane"] = count("controlplane.log", "agent connected")
    return counts


def _host_events(fleet: Fleet) -> list[tuple[str, str]]:
    """(object, kind) of every host event: connections and liveness transitions."""
    events = fleet.keelctl_json("events", "--limit", "10000").get("events", [])
    return [(e["object"], e["kind"]) for e in events if e["object"].startswith("host/")]


def _ride_out(fleet: Fleet, outage: AbstractContextManager[None], *, gone: bool) -> None:
    """A workload runs; the database goes away for OUTAGE_S (gone: its processes too) and comes
    back. Asserts what an agent and an operator must see throughout and after."""
    fleet.apply_ok(fleet.manifest("web", replicas=2))
    fleet.wait_running("web", 2)
    assert {h.name: h.state for h in fleet.hosts_status()} == ALL_READY
    events_before = _host_events(fleet)
    ended_before = _ended_streams(fleet)
    connects_before = _connects(fleet)
    dropped_before = fleet.metrics()["keel_heartbeats_dropped_total"]

    with outage:
        started = time.monotonic()
        wait_for(
            lambda: fleet.metrics()["keel_database_up"] == 0,
            timeout=10,
            message="the control plane to see the database down",
        )
        if gone:
            assert postgres_processes(fleet.embedded_pgdata) == [], "postgres still runs"
        # Both streams open on both sides for the whole outage, sampled every second.
        hold_for(
            lambda: (
                fleet.metrics()["keel_sync_streams"] == 2
                and all(fleet.metrics(agent=i)["keel_agent_connected"] == 1 for i in (1, 2))
            ),
            duration=max(0.0, OUTAGE_S - (time.monotonic() - started)),
            interval=1.0,
            message="both agent streams open",
        )
        result = fleet.keelctl("get", "workloads", "--timeout", "8s")
        assert result.returncode == 1 and "(UNAVAILABLE)" in result.stderr, result
    outage_s = time.monotonic() - started

    wait_for(lambda: _health(fleet, FLEET) == "SERVING", timeout=30, message="SERVING again")
    fleet.apply_ok(fleet.manifest("web", replicas=2, env={"GREETING": "after the outage"}))
    fleet.wait_running("web", 2, generation=2, timeout=60)

    dropped = fleet.metrics()["keel_heartbeats_dropped_total"] - dropped_before
    # Two agents heartbeat every 500ms; a dropped one may wait --db-timeout (1s) first.
    assert dropped >= outage_s, f"{dropped} heartbeats dropped in a {outage_s:.0f}s outage"
    assert _ended_streams(fleet) == ended_before, "an agent stream ended during the outage"
    assert _connects(fleet) == connects_before, "an agent reconnected"
    # No host reconnected or was judged NOT_READY for heartbeats the outage kept from landing.
    assert _host_events(fleet)[len(events_before) :] == []
    assert {h.name: h.state for h in fleet.hosts_status()} == ALL_READY
    for name, log in [("controlplane", fleet.logs / "controlplane.log")] + [
        (f"host-{i}", fleet.logs / f"host-{i}.log") for i in (1, 2)
    ]:
        assert _non_json_lines(log) == [], f"{name} logged lines that are not JSON"


def test_agent_streams_stay_open_while_postgres_is_frozen_and_changes_flow_after(
    embedded_fleet: Fleet,
) -> None:
    """Every Postgres process frozen for 20s: no Sync stream ends and no agent reconnects,
    heartbeats are dropped and counted, no host flaps, every log line is JSON; after SIGCONT a
    new change runs."""
    fleet = embedded_fleet
    _ride_out(fleet, _frozen_postgres(fleet), gone=False)


@contextlib.contextmanager
def _frozen_postgres(fleet: Fleet) -> Iterator[None]:
    """Every Postgres process as the outage begins frozen for the block: the backends of pool
    connections opened while the workload started included (found any earlier, those would
    go on answering)."""
    processes = postgres_processes(fleet.embedded_pgdata)
    assert processes, f"no postgres serving {fleet.embedded_pgdata}"
    with frozen(processes):
        yield


def test_agent_streams_stay_open_while_postgres_is_stopped_and_changes_flow_after(
    embedded_fleet: Fleet,
) -> None:
    """Postgres stopped for 20s (every connection closed, connections refused, no server
    process), then started again: the same as frozen, and the control plane finds the
    database again by itself (its pool, its LISTEN connection and its leadership)."""
    fleet = embedded_fleet
    _ride_out(fleet, stopped_postgres(fleet.embedded_pgdata), gone=True)
