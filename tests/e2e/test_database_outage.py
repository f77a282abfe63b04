"""End-to-end: the control plane's own Postgres frozen (SIGSTOP) and thawed, or stopped and
started again, for as long as the outage a real fleet meets (20 s), with and without writes.

Health says so (keel.v1.FleetService NOT_SERVING while the overall service and AgentService
stay SERVING), operator calls answer UNAVAILABLE at once instead of hanging, agent streams stay
open (no reconnect storm: no Sync stream ends, no agent connects again), heartbeats are dropped
and counted, no host is judged NOT_READY for heartbeats the outage kept from landing, every log
line stays JSON, and changes flow again once Postgres answers. The Postgres taken away is the
embedded one this test's control plane started under its own state dir, found by its data
directory: never a server shared with another test. Under a write a second (`writes`), every
failed write answers UNAVAILABLE naming Postgres, nothing running is restarted, and each failed
write retried with its request id is applied once (a write whose commit is cut off from its
caller: tests/e2e/test_commit_cut_off.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import faults
import grpc
import pytest
from embedded import embedded
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Fleet, hold_for, pids_of, wait_for
from procs import frozen, postgres_processes, process_alive, stopped_postgres
from writes import WriteLoad

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
    with embedded(SHORT_DB_TIMEOUTS) as f:
        yield f


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


def test_writes_while_postgres_is_stopped_fail_unavailable_and_apply_once(
    embedded_fleet: Fleet,
) -> None:
    """Postgres stopped for 20s under one apply a second (each a new workload, its own request
    id): every failed write answered UNAVAILABLE naming Postgres; no workload restarted (same
    pids, no restart counted), no stream ended, no agent reconnected; writes succeed again by
    themselves; every failed write, retried with its id, is applied; every write is present and
    none was applied twice (one WorkloadApplied event each)."""
    fleet = embedded_fleet
    fleet.apply_ok(fleet.manifest("web", replicas=2))
    before = fleet.wait_running("web", 2)
    ended_before = _ended_streams(fleet)
    connects_before = _connects(fleet)

    with WriteLoad(fleet, interval=1.0) as load:
        started = time.monotonic()
        wait_for(lambda: load.acknowledged_since(started) >= 3, timeout=30, message="3 writes")
        with stopped_postgres(fleet.embedded_pgdata):
            stopped_at = time.monotonic()
            hold_for(
                lambda: (
                    fleet.metrics()["keel_sync_streams"] == 2
                    and all(fleet.metrics(agent=i)["keel_agent_connected"] == 1 for i in (1, 2))
                ),
                duration=OUTAGE_S,
                interval=1.0,
                message="both agent streams open",
            )
        back_at = time.monotonic()
        wait_for(lambda: load.acknowledged_since(back_at) >= 1, timeout=30, message="a write")
        first_ack_at = min(
            w.done_at for w in load.writes if w.sent_at >= back_at and w.acknowledged
        )
        wait_for(lambda: load.acknowledged_since(back_at) >= 3, timeout=30, message="3 writes")
    writes = list(load.writes)
    failed = [w for w in writes if not w.acknowledged]
    during = [w for w in writes if stopped_at + 2 <= w.sent_at <= back_at - 1]
    # One a second when keelctl starts fast; fewer on a loaded machine, still many.
    assert len(during) >= 8, f"only {len(during)} writes sent during the outage"
    assert all(not w.acknowledged for w in during), "a write succeeded with Postgres stopped"
    for w in failed:
        assert w.result is not None and w.result.returncode == 1, w.result
        assert "(UNAVAILABLE)" in w.result.stderr and "Postgres" in w.result.stderr, w.result

    # Each failed write, retried with its own request id: applied now (or answered from its
    # record, had it committed after all).
    for w in failed:
        retried = load.send(w, timeout="10s")
        assert retried.returncode == 0, retried
        assert f"workload/{w.name} created" in retried.stdout, retried.stdout
    names = {w.name for w in writes}
    assert names <= {x.name for x in fleet.workloads()}
    events = fleet.keelctl_json("events", "--limit", "10000")["events"]
    applied = Counter(
        e["object"] for e in events if e["kind"] == "WorkloadApplied" and "/tick-" in e["object"]
    )
    assert applied == Counter({f"workload/{n}": 1 for n in names}), applied

    after = fleet.instances("web")
    assert pids_of(after) == pids_of(before), "a workload was restarted"
    assert [i.restart_count for i in after] == [i.restart_count for i in before]
    assert all(process_alive(i.pid) for i in after)
    assert _ended_streams(fleet) == ended_before, "an agent stream ended during the outage"
    assert _connects(fleet) == connects_before, "an agent reconnected"
    faults.record(
        f"Postgres stopped {OUTAGE_S:.0f} s under 1 apply/s",
        observed=f"{len(failed)} of {len(writes)} writes UNAVAILABLE (naming Postgres), all "
        "applied once on retry with their request ids; streams stayed open, pids unchanged",
        lost=f"nothing ({len(names)} of {len(names)} writes present, each applied once)",
        recover_s=first_ack_at - back_at,
    )


def _since_last_start(log: Path) -> list[dict[str, Any]]:
    """The JSON lines a process logged since the harness last started it."""
    text = log.read_text(errors="replace")
    tail = text.rsplit("\n===== ", 1)[-1]
    return [json.loads(x) for x in tail.splitlines() if x[:1] == "{"]


def test_an_agent_restarted_while_postgres_is_stopped_keeps_its_workloads(
    embedded_fleet: Fleet,
) -> None:
    """Postgres stopped, then agent 1 killed (-9) and started again: its stream opens and stays
    open though its registration cannot be written, its workloads keep running untouched (it
    runs the desired state it kept on disk); once Postgres is back it is registered and adopts
    them (same pids, no restart counted)."""
    fleet = embedded_fleet
    fleet.apply_ok(fleet.manifest("web", replicas=2))
    before = fleet.wait_running("web", 2)
    with stopped_postgres(fleet.embedded_pgdata):
        wait_for(lambda: fleet.metrics()["keel_database_up"] == 0, timeout=10, message="db down")
        fleet.kill_agent(1, signal.SIGKILL)
        fleet.start_agent(1)

        def registration_waits() -> bool:
            return any(
                x.get("event", "").startswith("database unavailable; the stream stays open")
                and x.get("host") == "host-1"
                and x.get("during") == "the agent's registration"
                for x in _since_last_start(fleet.logs / "controlplane.log")
            )

        wait_for(registration_waits, timeout=15, message="host-1's registration waiting")
        assert any(
            x.get("event") == "connected" for x in _since_last_start(fleet.logs / "host-1.log")
        )
        hold_for(
            lambda: all(process_alive(i.pid) for i in before),
            duration=5,
            interval=0.5,
            message="every workload running while its agent cannot sync",
        )
    restarted = wait_for(
        lambda: (now := fleet.instances("web")) and pids_of(now) == pids_of(before) and now,
        timeout=30,
        message="the same instances reported again",
    )
    assert [i.restart_count for i in restarted] == [i.restart_count for i in before]
    fleet.wait_hosts_ready()
