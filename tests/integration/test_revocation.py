"""Open streams end when their credential is revoked (`controlplane.revocation`), on a real
Postgres and loopback gRPC, through the real interceptors: an agent's Sync stream whose host
credential is reset, an operator's WatchOperation whose token is revoked, a stream on one
replica whose token is revoked on another (by its NOTIFY, and by the periodic check when the
notification is lost). Each ends UNAUTHENTICATED within the bound with a message naming the
credential and what to do, never the token; the calls of other credentials stay open."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
import structlog.testing
from plans import until

from agent import convert
from controlplane.auth import AuthInterceptor
from controlplane.convert import log_request_pb
from controlplane.fleet import FleetApi
from controlplane.heartbeats import HeartbeatWriter
from controlplane.interceptors import ObservabilityInterceptor
from controlplane.listener import Listener
from controlplane.logrelay import LogRelay
from controlplane.metrics import Metrics
from controlplane.operations import DrainParams
from controlplane.operations_api import OperationWatch
from controlplane.reports import ReportWriter
from controlplane.revocation import REASON, OpenCalls
from controlplane.secrets import load_or_create
from controlplane.sql import TOKEN_CHANNEL
from controlplane.status import StatusStore
from controlplane.store import Store
from controlplane.sync import AgentSync, StreamRegistry
from controlplane.tokens import TokenStore
from keel.model import Resources
from keel.v1 import agent_pb2_grpc, fleet_pb2, fleet_pb2_grpc

READ_S = 10.0


class Replica:
    """One control-plane replica in this process: AgentService and FleetService behind the
    observability and auth interceptors, its token cache, its open calls and (unless
    `listening` is False: its notifications lost) its listener."""

    def __init__(
        self, store: Store, url: str, tmp_path: Path, *, check_s: float, listening: bool
    ) -> None:
        self.metrics = Metrics()
        self.registry = StreamRegistry()
        # A long cache: a token checked here stays trusted unless the NOTIFY says otherwise.
        self.tokens = TokenStore(store.pool, cache_s=60.0)
        self.open_calls = OpenCalls(
            store.pool, interval_s=check_s, on_denied=self.metrics.count_auth_denied
        )
        self.heartbeats = HeartbeatWriter(store, metrics=self.metrics, on_written=lambda _: None)
        secrets = load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None)
        logs = LogRelay(self.registry)
        self.sync = AgentSync(
            store,
            registry=self.registry,
            reports=ReportWriter(StatusStore(store.pool), on_written=lambda _: None),
            heartbeats=self.heartbeats,
            logs=logs,
            resync_period_s=30.0,
            secrets=secrets,
            tokens=self.tokens,
        )
        self.fleet = FleetApi(
            store,
            status=StatusStore(store.pool),
            logs=logs,
            log_wait_s=1.0,
            watch=OperationWatch(),
            watch_poll_s=30.0,
            secrets=secrets,
            tokens=self.tokens,
        )

        self.heard: list[str] = []

        def token_revoked(name: str) -> None:
            self.heard.append(name)
            self.tokens.forget(name)
            self.open_calls.notified(name)

        self.listener = Listener(
            url,
            on_host=self.registry.wake,
            on_workload=lambda _: None,
            on_reconnect=self.open_calls.notified,
            on_token=token_revoked,
        )
        self.listening = listening
        self._store = store
        self.address = ""
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Replica:
        self._server = grpc.aio.server(
            interceptors=[
                ObservabilityInterceptor(metrics=self.metrics),
                AuthInterceptor(
                    tokens=self.tokens, metrics=self.metrics, open_calls=self.open_calls
                ),
            ]
        )
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.sync, self._server)
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(self.fleet, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        self._tasks = [
            asyncio.create_task(self.heartbeats.run()),
            asyncio.create_task(self.open_calls.watch()),
        ]
        if self.listening:
            self._tasks.append(asyncio.create_task(self.listener.run()))
            await self._listening()
        return self

    async def _listening(self) -> None:
        """Until the listener hears: a notification sent before it listens is not lost in
        production (the periodic check covers it) but would be here, where the check is slow."""

        async def heard() -> bool:
            await self._store.pool.execute("SELECT pg_notify($1, 'probe')", TOKEN_CHANNEL)
            return "probe" in self.heard

        await until(heard, what="the listener listening")

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.registry.stop()
        await self._server.stop(1)

    def ended(self) -> float:
        """Streams ended here because their token was revoked (keel_auth_denied_total)."""
        return float(self.metrics.auth_denied.labels(REASON)._value.get())


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.asynccontextmanager
async def replicas(
    store: Store, url: str, tmp_path: Path, *specs: tuple[float, bool]
) -> AsyncIterator[list[Replica]]:
    """Replicas over the one database: (check interval, listening) each."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                Replica(store, url, tmp_path, check_s=check_s, listening=listening)
            )
            for check_s, listening in specs
        ]


async def admin_of(replica: Replica) -> str:
    token, _ = await replica.tokens.create(name="root", role="admin", actor="test")
    return token


async def open_sync(channel: grpc.aio.Channel, host: str, credential: str) -> Any:
    """A Sync stream for host, its Hello answered."""
    call = agent_pb2_grpc.AgentServiceStub(channel).Sync(metadata=bearer(credential))
    hello = convert.Hello(
        host=host, agent_version="t", revision=0, labels={}, capacity=Resources(1000, 1024)
    )
    await call.write(convert.hello_to_pb(hello))
    first = await asyncio.wait_for(call.read(), READ_S)
    assert first.WhichOneof("msg") == "assignments"
    return call


async def ended_with(call: Any, *, within: float) -> grpc.aio.AioRpcError:
    """Reads the stream until it ends with an error, within `within` seconds."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(within):
            while await call.read() is not grpc.aio.EOF:
                pass
    return ended.value


async def still_open(replica: Replica, host: str) -> bool:
    session = replica.registry.get(host)
    return session is not None and not session.replaced.is_set()


async def test_a_reset_host_credential_ends_its_open_sync_stream(
    store: Store, migrated_database: str, tmp_path: Path
) -> None:
    """keelctl host reset-credential: the host's open Sync stream ends UNAUTHENTICATED within
    the check interval, the host is marked disconnected, another host's stream stays open."""
    check_s = 2.0
    async with replicas(store, migrated_database, tmp_path, (check_s, True)) as [replica]:
        admin = await admin_of(replica)
        h1 = await replica.tokens.join("h1", actor="join")
        h2 = await replica.tokens.join("h2", actor="join")
        async with grpc.aio.insecure_channel(replica.address) as channel:
            one, two = await open_sync(channel, "h1", h1), await open_sync(channel, "h2", h2)
            assert (await store.get_host("h1")).connected
            fleet = fleet_pb2_grpc.FleetServiceStub(channel)
            started = time.monotonic()
            reply = await fleet.ResetHostCredential(
                fleet_pb2.ResetHostCredentialRequest(host="h1"), metadata=bearer(admin)
            )
            assert reply.had_credential
            error = await ended_with(one, within=check_s + 1.0)
            assert time.monotonic() - started < check_s + 1.0
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            details = error.details() or ""
            assert "credential of host 'h1' (host/h1) was revoked or reset" in details
            assert "join again" in details
            assert h1.split(".")[1] not in details

            async def disconnected() -> bool:
                return not (await store.get_host("h1")).connected

            await until(disconnected, what="h1 marked disconnected")
            assert await still_open(replica, "h2")
            assert (await store.get_host("h2")).connected
            assert replica.ended() == 1
            # The dead credential opens nothing any more.
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await open_sync(channel, "h1", h1)
            assert again.value.code() is grpc.StatusCode.UNAUTHENTICATED
            two.cancel()


async def test_a_revoked_operator_token_ends_its_open_watch(
    store: Store, migrated_database: str, tmp_path: Path
) -> None:
    """keelctl token revoke: an operation watch the token opened ends UNAUTHENTICATED, naming
    the token and how to get another; a watch by another token stays open."""
    check_s = 2.0
    async with replicas(store, migrated_database, tmp_path, (check_s, True)) as [replica]:
        admin = await admin_of(replica)
        viewer, _ = await replica.tokens.create(name="night-shift", role="viewer", actor="root")
        other, _ = await replica.tokens.create(name="day-shift", role="viewer", actor="root")
        await store.register_host(
            "h1", labels={}, capacity=Resources(1000, 1024), agent_version="t"
        )
        # No drain controller runs here: the drain stays PENDING and its watches open.
        op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
        async with grpc.aio.insecure_channel(replica.address) as channel:
            fleet = fleet_pb2_grpc.FleetServiceStub(channel)
            request = fleet_pb2.WatchOperationRequest(id=op.id)
            watch = fleet.WatchOperation(request, metadata=bearer(viewer))
            kept = fleet.WatchOperation(request, metadata=bearer(other))
            for call in (watch, kept):
                assert (await asyncio.wait_for(call.read(), READ_S)).id == op.id
            started = time.monotonic()
            with structlog.testing.capture_logs() as logs:
                await fleet.RevokeToken(
                    fleet_pb2.RevokeTokenRequest(name="night-shift"), metadata=bearer(admin)
                )
                error = await ended_with(watch, within=check_s + 1.0)
            [closed] = [
                e for e in logs if e["event"] == "credential revoked; its open call is closed"
            ]
            assert closed["token_name"] == "night-shift"
            assert closed["rpc"] == "keel.v1.FleetService/WatchOperation"
            assert viewer.split(".")[1] not in str(logs)
            assert time.monotonic() - started < check_s + 1.0
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            details = error.details() or ""
            assert "the token 'night-shift' (viewer) was revoked" in details
            assert "keelctl token create" in details
            assert viewer.split(".")[1] not in details
            assert len(replica.open_calls) == 1  # day-shift's watch
            assert replica.ended() == 1
            kept.cancel()


async def test_a_token_revoked_on_one_replica_ends_its_stream_on_another(
    store: Store, migrated_database: str, tmp_path: Path
) -> None:
    """Revoked through replica A, the stream open on replica B ends at once (the NOTIFY; B
    would check by itself only after a minute), and B refuses the token for a new call
    although it trusted its check for a minute."""
    async with replicas(store, migrated_database, tmp_path, (60.0, True), (60.0, True)) as [a, b]:
        admin = await admin_of(a)
        h1 = await a.tokens.join("h1", actor="join")
        async with (
            grpc.aio.insecure_channel(a.address) as to_a,
            grpc.aio.insecure_channel(b.address) as to_b,
        ):
            call = await open_sync(to_b, "h1", h1)
            await fleet_pb2_grpc.FleetServiceStub(to_a).RevokeToken(
                fleet_pb2.RevokeTokenRequest(name="host/h1"), metadata=bearer(admin)
            )
            error = await ended_with(call, within=5.0)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "host/h1" in (error.details() or "")
            assert (b.ended(), a.ended()) == (1, 0)
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await open_sync(to_b, "h1", h1)
            assert again.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_lost_notification_still_ends_the_stream_within_the_check_interval(
    store: Store, migrated_database: str, tmp_path: Path
) -> None:
    """Replica B hears no notification (its listener is down): its periodic check ends the
    stream of a token revoked on A within the interval."""
    check_s = 1.0
    async with replicas(store, migrated_database, tmp_path, (60.0, True), (check_s, False)) as [
        a,
        b,
    ]:
        h1 = await a.tokens.join("h1", actor="join")
        async with grpc.aio.insecure_channel(b.address) as to_b:
            call = await open_sync(to_b, "h1", h1)
            started = time.monotonic()
            await a.tokens.reset_host("h1", actor="root")
            error = await ended_with(call, within=check_s + 1.0)
            assert time.monotonic() - started < check_s + 1.0
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert b.ended() == 1


async def test_a_stream_whose_client_stopped_reading_is_cancelled_at_the_next_check(
    store: Store, migrated_database: str, tmp_path: Path
) -> None:
    """A stream whose client reads nothing (grpc's write waits for it) cannot end where its
    handler waits: the check after the one that ended it cancels it, and the host is marked
    disconnected all the same."""
    check_s = 1.0
    # No window growth: 64 KiB unread and the server's write waits.
    options = [("grpc.http2.bdp_probe", 0)]
    async with replicas(store, migrated_database, tmp_path, (check_s, True)) as [replica]:
        h1 = await replica.tokens.join("h1", actor="join")
        async with grpc.aio.insecure_channel(replica.address, options=options) as channel:
            call = await open_sync(channel, "h1", h1)
            session = replica.registry.get("h1")
            assert session is not None
            # Log requests nobody answers fill the stream until grpc's write waits for a read.
            for _ in range(200):
                session.send(log_request_pb("r" * 32, "i" * 2000, tail_lines=1, follow=True))

            seen: list[int] = []

            async def stalled() -> bool:
                # Messages left, and none taken over the last half second (polled every 20 ms).
                seen.append(session.outbox.qsize())
                return seen[-1] > 0 and len(seen) > 25 and len(set(seen[-25:])) == 1

            await until(stalled, what="the server's write waiting for the client")
            with structlog.testing.capture_logs() as logs:
                await replica.tokens.reset_host("h1", actor="root")

                async def closed() -> bool:
                    return replica.registry.get("h1") is None and len(replica.open_calls) == 0

                await until(closed, within=3 * check_s + 10.0, what="the unread stream closed")
            assert any("reads nothing" in e["event"] for e in logs), logs
            assert not (await store.get_host("h1")).connected
            call.cancel()


async def test_keel_controlplane_reset_token_ends_the_streams_of_the_token_it_replaces(
    store: Store, migrated_database: str, tmp_path: Path
) -> None:
    """`keel-controlplane reset-token admin` (another process, straight to the database): the
    running replica ends the watch the old admin token opened, by the NOTIFY."""
    async with replicas(store, migrated_database, tmp_path, (60.0, True)) as [replica]:
        await replica.tokens.bootstrap(tmp_path)
        old_admin = (tmp_path / "admin.token").read_text().strip()
        await store.register_host(
            "h1", labels={}, capacity=Resources(1000, 1024), agent_version="t"
        )
        op, _ = await store.begin_drain(["h1"], {}, params=DrainParams(), reason="", actor="a")
        async with grpc.aio.insecure_channel(replica.address) as channel:
            fleet = fleet_pb2_grpc.FleetServiceStub(channel)
            watch = fleet.WatchOperation(
                fleet_pb2.WatchOperationRequest(id=op.id), metadata=bearer(old_admin)
            )
            assert (await asyncio.wait_for(watch.read(), READ_S)).id == op.id
            # As `keel-controlplane reset-token` does it (controlplane.security): its own store.
            await TokenStore(store.pool, cache_s=0).reset("admin", tmp_path)
            error = await ended_with(watch, within=5.0)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "the token 'admin' (admin) was revoked" in (error.details() or "")
            new_admin = (tmp_path / "admin.token").read_text().strip()
            assert new_admin != old_admin
            hosts = await fleet.ListHosts(fleet_pb2.ListHostsRequest(), metadata=bearer(new_admin))
            assert [h.name for h in hosts.hosts] == ["h1"]
