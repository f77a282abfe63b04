"""End-to-end: the control plane's own Postgres frozen (SIGSTOP) and thawed.

Health says so (keel.v1.FleetService NOT_SERVING while the overall service and AgentService
stay SERVING), operator calls answer UNAVAILABLE at once instead of hanging, agent streams stay
open (no reconnect storm: no Sync stream ends), every log line stays JSON, and changes flow
again once Postgres answers. The Postgres frozen is the embedded one this test's control plane
started under its own state dir, found by its data directory: never a server shared with
another test.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Fleet, hold_for, wait_for
from procs import frozen, postgres_processes

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
    # Liveness must not judge hosts by heartbeats the outage kept from being written.
    "--liveness-grace",
    "30s",
]


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
    with grpc.insecure_channel(fleet.address) as channel:
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

    with frozen(processes), grpc.insecure_channel(fleet.address) as channel:
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


def test_agent_streams_stay_open_while_postgres_is_frozen_and_changes_flow_after(
    embedded_fleet: Fleet,
) -> None:
    """Postgres frozen for seconds: no Sync stream ends, heartbeats are dropped and counted,
    every log line is JSON; after SIGCONT a new change reaches the agents."""
    fleet = embedded_fleet
    fleet.apply_ok(fleet.manifest("web", replicas=2))
    fleet.wait_running("web", 2)
    ended_before = _ended_streams(fleet)

    with frozen(postgres_processes(fleet.embedded_pgdata)):
        wait_for(
            lambda: fleet.metrics()["keel_heartbeats_dropped_total"] >= 4,
            timeout=20,
            message="heartbeats dropped while the database is away",
        )
        hold_for(
            lambda: (
                fleet.metrics()["keel_sync_streams"] == 2
                and all(fleet.metrics(agent=i)["keel_agent_connected"] == 1 for i in (1, 2))
            ),
            duration=3,
            interval=0.5,
            message="both agent streams open",
        )

    fleet.apply_ok(fleet.manifest("web", replicas=2, env={"GREETING": "after the outage"}))
    fleet.wait_running("web", 2, generation=2, timeout=60)
    assert _ended_streams(fleet) == ended_before, "an agent stream ended during the outage"
    for name, log in [("controlplane", fleet.logs / "controlplane.log")] + [
        (f"host-{i}", fleet.logs / f"host-{i}.log") for i in (1, 2)
    ]:
        assert _non_json_lines(log) == [], f"{name} logged lines that are not JSON"
