"""The sync client against a tiny in-test AgentService: Hello, full set, reports, reconnects."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from waiting import eventually

from agent.health import always_healthy
from agent.outcome import Outbox
from agent.reconciler import Reconciler
from agent.runtime.fake import FakeDriver
from agent.settings import Settings
from agent.state import Assignment, StateStore
from agent.sync import SyncClient
from agent.tasks import TaskGroup
from keel.convert import spec_to_pb
from keel.model import Desired, Resources, WorkloadSpec
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

SPEC = WorkloadSpec(command=("sleep", "1000"), ports=("http",))


def full_set(revision: int, *ids: str, spec: WorkloadSpec = SPEC) -> agent_pb2.ControlMessage:
    return agent_pb2.ControlMessage(
        assignments=agent_pb2.Assignments(
            full=True,
            revision=revision,
            assignments=[
                agent_pb2.Assignment(
                    instance_id=i,
                    workload="web",
                    generation=1,
                    desired=types_pb2.DESIRED_RUNNING,
                    spec=spec_to_pb(spec),
                    revision=revision,
                )
                for i in ids
            ],
        )
    )


class Servicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """Answers Hello with a full set, records what the agent sends, optionally hangs up."""

    def __init__(self, answer: agent_pb2.ControlMessage, *, hang_up_after: int = 0) -> None:
        self.answer = answer
        self.hang_up_after = hang_up_after  # messages after Hello; 0 = never
        self.hellos: list[agent_pb2.Hello] = []
        self.messages: list[agent_pb2.AgentMessage] = []

    async def Sync(self, request_iterator: Any, context: Any) -> None:
        first = await context.read()
        self.hellos.append(first.hello)
        await context.write(self.answer)
        seen = 0
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            self.messages.append(msg)
            seen += 1
            if self.hang_up_after and seen >= self.hang_up_after:
                return

    def statuses(self) -> list[types_pb2.InstanceStatus]:
        return [s for m in self.messages if m.HasField("report") for s in m.report.instances]


async def serve(servicer: Servicer) -> tuple[Any, str]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


class Agent:
    def __init__(
        self, tmp_path: Path, addresses: tuple[str, ...], *, join_token: str | None = None
    ) -> None:
        self.settings = Settings(
            join_token=join_token,
            degraded_log_interval_s=0.3,
            host="h1",
            state_dir=tmp_path,
            controlplanes=addresses,
            labels={"role": "web"},
            capacity=Resources(2000, 4096),
            heartbeat_interval_s=0.1,
            probe_interval_s=0.05,
            reconnect_base_s=0.05,
            reconnect_max_s=0.2,
            connect_timeout_s=0.5,
        )
        self.driver = FakeDriver()
        outbox = Outbox()
        self.reconciler = Reconciler(
            StateStore(self.settings.state_file),
            driver=self.driver,
            settings=self.settings,
            prober=always_healthy,
            sink=outbox,
        )
        self.client = SyncClient(
            self.settings,
            target=self.reconciler,
            outbox=outbox,
            agent_version="9.9",
            metrics=self.reconciler.metrics,
        )
        self.tasks = TaskGroup()

    async def __aenter__(self) -> Agent:
        await self.reconciler.open()
        self.tasks.loop("reconciler", self.reconciler.run)
        self.tasks.loop("sync", self.client.run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.tasks.close()
        await self.reconciler.close()


@pytest.fixture
async def servers() -> AsyncIterator[list[Any]]:
    started: list[Any] = []
    yield started
    for s in started:
        await s.stop(None)


async def test_agent_says_hello_runs_full_set_and_reports_running(
    tmp_path: Path, servers: list[Any]
) -> None:
    """Hello carries host, labels, capacity and version; the full set runs and is reported."""
    servicer = Servicer(full_set(5, "web-1"))
    server, address = await serve(servicer)
    servers.append(server)
    async with Agent(tmp_path, (address,)) as agent:
        await eventually(
            lambda: any(
                s.instance_id == "web-1" and s.phase == types_pb2.PHASE_RUNNING and s.ready
                for s in servicer.statuses()
            )
        )
        hello = servicer.hellos[0]
        assert (hello.host, dict(hello.labels), hello.agent_version) == (
            "h1",
            {"role": "web"},
            "9.9",
        )
        assert (hello.capacity.cpu_millis, hello.capacity.memory_mib) == (2000, 4096)
        assert hello.revision == 0
        running = [s for s in servicer.statuses() if s.phase == types_pb2.PHASE_RUNNING][-1]
        assert running.pid == agent.driver.running()["web-1"].pid
        assert set(running.ports) == {"http"}
        assert running.observed_at.seconds > 0 and running.started_at.seconds > 0
        await eventually(
            lambda: any(
                m.HasField("heartbeat") and m.heartbeat.revision == 5 for m in servicer.messages
            )
        )


async def test_heartbeats_defer_their_ack_unless_an_instance_self_fences(
    tmp_path: Path, servers: list[Any]
) -> None:
    """Only an agent running an instance with on_disconnect.stop_after needs each heartbeat
    acknowledged at once (its contact clock); the others say `ack_deferred`."""
    guarded = replace(SPEC, stop_after_disconnect_ms=30_000)
    for name, spec, deferred in (("plain", SPEC, True), ("guarded", guarded, False)):
        servicer = Servicer(full_set(5, "web-1", spec=spec))
        server, address = await serve(servicer)
        servers.append(server)
        (tmp_path / name).mkdir()
        (tmp_path / name / "credential").write_text("test-credential\n")  # as after a join
        async with Agent(tmp_path / name, (address,)):
            await eventually(
                lambda: any(
                    m.HasField("heartbeat") and m.heartbeat.revision == 5
                    for m in servicer.messages  # noqa: B023 - awaited within the iteration
                )
            )
            beats = [m.heartbeat for m in servicer.messages if m.HasField("heartbeat")]
            assert beats[-1].sequence > 0
            assert beats[-1].ack_deferred is deferred, name


async def test_reconnects_round_robin_keeping_workloads_and_revision(
    tmp_path: Path, servers: list[Any]
) -> None:
    """After the stream drops the agent reconnects to the next address with its revision."""
    first = Servicer(full_set(5, "web-1"), hang_up_after=3)
    second = Servicer(full_set(6, "web-1"))
    s1, a1 = await serve(first)
    s2, a2 = await serve(second)
    servers.extend([s1, s2])
    async with Agent(tmp_path, (a1, a2)) as agent:
        await eventually(lambda: len(second.hellos) >= 1)
        assert second.hellos[0].revision == 5
        await eventually(lambda: any(s.phase == types_pb2.PHASE_RUNNING for s in second.statuses()))
        # The second replica's assignments are applied after the report of what runs.
        await eventually(lambda: agent.reconciler.revision == 6)
        # The workload kept running across the reconnect: one start, no restart.
        assert agent.reconciler.state.instances["web-1"].starts == 1


async def test_unreachable_address_is_skipped(tmp_path: Path, servers: list[Any]) -> None:
    """A dead first address times out and the agent moves on to the next one."""
    servicer = Servicer(full_set(1, "web-1"))
    server, address = await serve(servicer)
    servers.append(server)
    dead = f"127.0.0.1:{_free_port()}"
    async with Agent(tmp_path, (dead, address)):
        await eventually(lambda: len(servicer.hellos) >= 1)


async def test_full_report_after_hello_covers_changes_made_while_away(
    tmp_path: Path, servers: list[Any]
) -> None:
    """Workloads run from local state with no control plane; Hello is followed by their status."""
    async with Agent(tmp_path, (f"127.0.0.1:{_free_port()}",)) as agent:
        agent.reconciler.apply_assignments(
            full=True,
            revision=3,
            assignments=[_assignment("web-1")],
        )
        await eventually(lambda: "web-1" in agent.driver.running())
    servicer = Servicer(full_set(3, "web-1"))
    server, address = await serve(servicer)
    servers.append(server)
    async with Agent(tmp_path, (address,)):
        await eventually(lambda: bool(servicer.messages))
        first = servicer.messages[0]
        assert first.HasField("report")
        assert [s.instance_id for s in first.report.instances] == ["web-1"]
        assert servicer.hellos[0].revision == 3


def _assignment(iid: str) -> Assignment:
    return Assignment(iid, "web", 1, Desired.RUNNING, SPEC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cut_off_agent_says_how_long_it_runs_the_last_desired_state(
    tmp_path: Path, servers: list[Any]
) -> None:
    """Disconnected, the agent warns periodically with degraded_for_s and exports connected 0."""
    servicer = Servicer(full_set(2, "web-1"), hang_up_after=2)
    server, address = await serve(servicer)
    servers.append(server)
    with structlog.testing.capture_logs() as logs:
        async with Agent(tmp_path, (address,)) as agent:
            metrics = agent.reconciler.metrics.registry
            await eventually(lambda: metrics.get_sample_value("keel_agent_connected") == 1)
            assert (metrics.get_sample_value("keel_agent_last_sync_timestamp_seconds") or 0) > 0
            await server.stop(None)
            await eventually(lambda: metrics.get_sample_value("keel_agent_connected") == 0)
            await eventually(lambda: any("degraded_for_s" in e for e in logs))
            assert "web-1" in agent.driver.running()
    [line] = [e for e in logs if "degraded_for_s" in e][:1]
    assert line["log_level"] == "warning" and line["revision"] == 2


async def test_disconnected_seconds_is_zero_while_connected_and_grows_when_cut_off(
    tmp_path: Path, servers: list[Any]
) -> None:
    """keel_agent_disconnected_seconds: 0 on a live stream (however long since the last
    message), then the time since the stream was lost, growing while the control plane is gone."""
    servicer = Servicer(full_set(2, "web-1"))
    server, address = await serve(servicer)
    servers.append(server)
    async with Agent(tmp_path, (address,)) as agent:
        metrics = agent.reconciler.metrics.registry

        def disconnected() -> float:
            return metrics.get_sample_value("keel_agent_disconnected_seconds") or 0.0

        await eventually(lambda: metrics.get_sample_value("keel_agent_connected") == 1)
        assert disconnected() == 0.0
        await server.stop(None)
        await eventually(lambda: disconnected() > 0.0)
        first = disconnected()
        await eventually(lambda: disconnected() >= first + 0.2)
        assert metrics.get_sample_value("keel_agent_connected") == 0
        assert "web-1" in agent.driver.running()  # still on its last known desired state


class Revoking(Servicer):
    """Answers Hello, then ends the stream as a control plane does when the host's credential
    is revoked while it is open."""

    def __init__(self, answer: agent_pb2.ControlMessage) -> None:
        super().__init__(answer)
        self.calls = 0
        self.joins = 0

    async def Sync(self, request_iterator: Any, context: Any) -> None:
        self.calls += 1
        first = await context.read()
        self.hellos.append(first.hello)
        await context.write(self.answer)
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details("the credential of host 'h1' (host/h1) was revoked or reset")

    async def Join(self, request: agent_pb2.JoinRequest, context: Any) -> None:
        self.joins += 1
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details("the token is not valid (unknown or revoked)")


async def test_a_revoked_credential_is_forgotten_and_never_retried_without_a_join_token(
    tmp_path: Path, servers: list[Any]
) -> None:
    """The stream ends UNAUTHENTICATED: the agent logs an error with the control plane's reason
    and what it needs, forgets the credential, keeps running its workloads, and never opens
    another stream with it (nor connects for nothing) while it has no join token."""
    servicer = Revoking(full_set(2, "web-1"))
    server, address = await serve(servicer)
    servers.append(server)
    with structlog.testing.capture_logs() as logs:
        async with Agent(tmp_path, (address,)) as agent:
            await eventually(lambda: not (tmp_path / "credential").exists())
            # Several reconnect attempts later (each says it is still disconnected, every
            # degraded_log_interval_s) it has still opened no second stream.
            await eventually(lambda: sum("degraded_for_s" in e for e in logs) >= 3, within=10)
            assert servicer.calls == 1
            assert "web-1" in agent.driver.running()
    [refused] = [e for e in logs if "refused this host's credential" in e["event"]]
    assert refused["log_level"] == "error"
    assert "was revoked or reset" in refused["reason"]
    assert "--join-token-file" in refused["event"]
    assert "test-credential" not in str(logs)


async def test_a_refused_join_token_is_not_sent_again(tmp_path: Path, servers: list[Any]) -> None:
    """Its credential revoked, the agent joins again with its join token; that refused too
    (rotated), it logs an error saying it needs another and never calls again."""
    servicer = Revoking(full_set(2, "web-1"))
    server, address = await serve(servicer)
    servers.append(server)
    with structlog.testing.capture_logs() as logs:
        async with Agent(tmp_path, (address,), join_token="0123456789abcdef.join-secret") as agent:
            await eventually(lambda: servicer.joins == 1)
            await eventually(lambda: sum("degraded_for_s" in e for e in logs) >= 3, within=10)
            assert (servicer.calls, servicer.joins) == (1, 1)
            assert "web-1" in agent.driver.running()
    [refused] = [e for e in logs if "refused the join token" in e["event"]]
    assert refused["log_level"] == "error"
    assert "--join-token-file" in refused["event"]
    assert "join-secret" not in str(logs)
