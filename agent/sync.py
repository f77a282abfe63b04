"""The sync client: the agent's one long-lived `AgentService.Sync` stream to the control plane.

It opens with Hello (host, labels, capacity, version, the revision in local state), sends a
full status report, then streams heartbeats (--heartbeat-interval) and the reports the
reconciler puts in the outbox (`agent.outcome.Outbox`, opened with each stream), while it
feeds every desired-set update it receives to the reconciler. Messages are converted to and
from domain types by `agent.convert` only.

It starts at the --controlplane address its host name hashes to (`first_address`: a fleet
spreads over the replicas). When the stream breaks it reconnects round-robin over them, after a
jittered exponential back-off (`agent.backoff.Reconnects`) that starts over only after a
stream that stayed up --reconnect-reset-after: a replica that accepts streams and drops them
at once (its database down, say) is retried ever more slowly, not stormed. Meanwhile the
reconciler keeps running the last desired state, and a warning every --degraded-log-interval
says for how long (`degraded_for_s`); keel_agent_connected and keel_agent_disconnected_seconds
show it too.

Contact, for `on_disconnect.stop_after`: each heartbeat carries a sequence number and the
revision the reconciler has acted on; the control plane acknowledges it once recorded, and
the sending time of the last heartbeat acknowledged (or of the Hello the control plane
answered) is when it last recorded this host alive (`SyncTarget.heard`): never later than the
host's last heartbeat in the database, so the agent stops a self-fencing instance no later than
the control plane presumes it stopped (`controlplane.liveness.self_fence_due`). While no
instance here self-fences (`SyncTarget.self_fencing`) the heartbeats say `ack_deferred`: the
control plane then acknowledges the last one recorded only just before it next sends
assignments, so an instance given on_disconnect counts from a contact one heartbeat old, as
it would with every heartbeat acknowledged, without an ack per heartbeat per host meanwhile.

It also hands the control plane's LogRequests on the same stream to `agent.log_serving` (no
extra port on hosts), whose tasks end with the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc
import structlog

from agent import convert
from agent.backoff import Reconnects
from agent.convert import DesiredUpdate, HeartbeatAck, LogRequest, Outgoing
from agent.credentials import JOIN_TOKEN_ENV, Credentials, NoCredential
from agent.log_serving import LogServer
from agent.metrics import AgentMetrics
from agent.outcome import Outbox
from agent.settings import Settings
from agent.state import Assignment
from agent.status import InstanceReport
from keel.grpctls import channel_credentials
from keel.redact import Redactor
from keel.v1 import agent_pb2_grpc

log = structlog.get_logger("agent.sync")

_ESTABLISHED_EXCEPTIONS = (grpc.aio.AioRpcError, TimeoutError, OSError, ConnectionError)
# Unacknowledged heartbeats remembered per stream.
_UNACKED_KEPT = 64


def _channel(address: str, settings: Settings) -> grpc.aio.Channel:
    """Plain text, or TLS with --tls-ca (and a client certificate for mutual TLS)."""
    if settings.tls.enabled:
        return grpc.aio.secure_channel(address, channel_credentials(settings.tls))
    return grpc.aio.insecure_channel(address)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that carries a token (never logged)."""
    return (("authorization", f"Bearer {token}"),)


def first_address(host: str, count: int) -> int:
    """Which of the `--controlplane` addresses a host tries first: spread by a hash of its
    name, so a fleet given the same list of replicas spreads its streams over all of them (and
    each host goes back to the same replica after a restart) rather than piling onto the first."""
    return zlib.crc32(host.encode()) % max(count, 1)


class SyncTarget(Protocol):
    """What the sync client drives: the reconciler."""

    @property
    def revision(self) -> int: ...

    @property
    def acted_revision(self) -> int: ...

    def heard(self, at: float) -> None: ...

    @property
    def self_fencing(self) -> bool:
        """True while a desired instance has on_disconnect.stop_after: heartbeats need acks."""
        ...

    def apply_assignments(
        self, *, full: bool, revision: int, assignments: Sequence[Assignment]
    ) -> None: ...

    def full_report(self) -> list[InstanceReport]: ...

    def knows(self, instance_id: str) -> bool: ...

    async def redactor(self, instance_id: str) -> tuple[Redactor, list[str]]: ...


class SyncClient:
    def __init__(
        self,
        settings: Settings,
        *,
        target: SyncTarget,
        outbox: Outbox,
        agent_version: str,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or AgentMetrics()
        self._target = target
        self._outbox = outbox
        self._agent_version = agent_version
        self._clock = clock
        self._backoff = Reconnects(
            base_s=settings.reconnect_base_s,
            max_s=settings.reconnect_max_s,
            reset_after_s=settings.reconnect_reset_s,
            rng=rng,
        )
        self._queue: asyncio.Queue[Outgoing] | None = None
        self._opened_at: float | None = None  # when the current attempt's stream opened
        # Heartbeats sent on the current stream and not acknowledged yet: sequence -> sent at.
        self._unacked: dict[int, float] = {}
        self._sequence = 0
        self._hello_at: float | None = None  # set until the Hello is answered
        self._log = log.bind(host=settings.host)
        self._logs = LogServer(
            source=target,
            host=settings.host,
            log_dir=settings.log_dir,
            follow_interval_s=settings.probe_interval_s,
            log=self._log,
        )
        self._credentials = Credentials(
            host=settings.host, state_dir=settings.state_dir, join_token=settings.join_token
        )

    @property
    def connected(self) -> bool:
        return self._queue is not None

    def _send_reports(self, reports: Sequence[InstanceReport]) -> None:
        """The outbox's sink while a stream is open (reports are dropped otherwise: the full
        report after the next Hello covers them)."""
        if self._queue is not None and reports:
            self._queue.put_nowait(convert.reports_to_pb(reports, observed_at=self._clock()))

    # The connection loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled: reconnect with back-off, round-robin.

        Only changes of the connection state are logged above debug, so an agent cut off
        from the control plane for an hour logs that once, not on every attempt.
        """
        addresses = self._settings.controlplanes
        index = first_address(self._settings.host, len(addresses))
        down_since: float | None = None
        warned_at = 0.0
        while True:
            address = addresses[index % len(addresses)]
            index += 1
            alog = self._log.bind(controlplane=address)
            self._opened_at = None
            error = "stream closed by the control plane"
            try:
                alog.debug("connecting")
                await self._session(address, alog)
            except _ESTABLISHED_EXCEPTIONS as e:
                error = describe(e)
            except (grpc.aio.UsageError, NoCredential) as e:
                error = str(e)
            except Exception as e:
                # Not a connection failure we know: still one failed attempt that backs off
                # (a crash of this loop would restart it from the base rate), logged whole.
                error = describe(e)
                alog.error("sync stream failed unexpectedly", exc_info=True)
            now = self._clock()
            stream_up_s = None if self._opened_at is None else now - self._opened_at
            if stream_up_s is not None:
                down_since = None
            if down_since is None:
                down_since = warned_at = now
                alog.warning(
                    "disconnected from the control plane; running the last desired state",
                    error=error,
                    revision=self._target.revision,
                )
            elif now - warned_at >= self._settings.degraded_log_interval_s:
                warned_at = now
                alog.warning(
                    "still disconnected; running the last known desired state",
                    degraded_for_s=round(now - down_since),
                    revision=self._target.revision,
                    error=error,
                )
            else:
                alog.debug("connect attempt failed", error=error)
            delay = self._backoff.delay_after(stream_up_s)
            alog.debug("reconnecting", delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _session(self, address: str, alog: Any) -> None:
        """One stream; returns (or raises) when it ends."""
        s = self._settings
        if await self._credentials.load() is None:
            # No credential and no join token to get one: NoCredential before any connection,
            # so an agent whose credential was revoked does not knock with nothing to show.
            self._credentials.join_token()
        async with _channel(address, s) as channel:
            async with asyncio.timeout(s.connect_timeout_s):
                await connect(channel)
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            credential = await self._credentials.load()
            if credential is None:
                try:
                    reply = await stub.Join(
                        convert.join_request_pb(s.host, await self._credentials.join_secret()),
                        metadata=_bearer(self._credentials.join_token()),
                        timeout=s.connect_timeout_s,
                    )
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                        self._join_refused(alog, e.details() or "")
                    raise
                credential = convert.credential_from_pb(reply)
                await self._credentials.store(credential)
                alog.info("joined the fleet; the host's credential is kept in the state dir")
            call = stub.Sync(metadata=_bearer(credential))
            try:
                hello = convert.Hello(
                    host=s.host,
                    agent_version=self._agent_version,
                    revision=self._target.revision,
                    labels=dict(s.labels),
                    capacity=s.capacity,
                )
                self._unacked.clear()
                self._hello_at = self._clock()
                async with asyncio.timeout(s.connect_timeout_s):
                    await call.write(convert.hello_to_pb(hello))
                self._queue = asyncio.Queue()
                self._opened_at = self._clock()
                self._connection(up=True)
                alog.info("connected", revision=hello.revision)
                self._send_reports(self._target.full_report())
                self._outbox.open(self._send_reports)
                await self._pump(call, self._queue)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._refused(alog, e.details() or "")
                raise
            finally:
                self._outbox.close()
                if self._queue is not None:
                    self._connection(up=False)
                self._queue = None
                self._logs.cancel_all()
                call.cancel()

    def _refused(self, alog: Any, details: str) -> None:
        """The control plane refused this host's credential (reset or revoked by an admin,
        even while the stream was open): it is forgotten, and the agent joins again with the
        join token, or, without one, stays disconnected (running the last desired state) and
        says what it needs; it never retries the dead credential."""
        self._credentials.refused()
        if self._credentials.can_join:
            alog.error("the control plane refused this host's credential; joining again with "
                       "the join token", reason=details)  # fmt: skip
            return
        alog.error(
            "the control plane refused this host's credential and there is no join token to "
            "join again: this agent stays disconnected, running the last desired state, until "
            f"it is restarted with --join-token-file (or {JOIN_TOKEN_ENV})",
            reason=details,
        )

    def _join_refused(self, alog: Any, details: str) -> None:
        """The join token itself is refused (revoked or rotated): never tried again, since only
        a restart with another one can change that."""
        self._credentials.join_refused()
        alog.error(
            "the control plane refused the join token: this agent stays disconnected, running "
            "the last desired state, until it is restarted with a valid --join-token-file (or "
            f"{JOIN_TOKEN_ENV})",
            reason=details,
        )

    def _connection(self, *, up: bool) -> None:
        """The one place the connection state goes to the metrics."""
        self._metrics.connection(up, at=self._clock())

    async def _pump(self, call: Any, queue: asyncio.Queue[Outgoing]) -> None:
        """Run reader, writer and heartbeat until one of them ends; re-raise its error."""
        tasks = [
            asyncio.create_task(self._read(call), name="sync read"),
            asyncio.create_task(self._write(call, queue), name="sync write"),
            asyncio.create_task(self._heartbeat(queue), name="sync heartbeat"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, *_ESTABLISHED_EXCEPTIONS):
                    await t

    async def _read(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            self._metrics.heard_from_controlplane(self._clock())
            asked = convert.control_from_pb(msg)
            if isinstance(asked, DesiredUpdate):
                self._apply(asked)
                if self._hello_at is not None:
                    # The answer to Hello: the control plane recorded the host at Hello.
                    self._target.heard(self._hello_at)
                    self._hello_at = None
            elif isinstance(asked, HeartbeatAck):
                self._acknowledged(asked.sequence)
            elif isinstance(asked, LogRequest) and self._queue is not None:
                self._logs.on_request(asked, self._queue)

    def _acknowledged(self, sequence: int) -> None:
        sent_at = self._unacked.get(sequence)
        if sent_at is None:
            return
        for older in [q for q in self._unacked if q <= sequence]:
            del self._unacked[older]
        self._target.heard(sent_at)

    def _apply(self, update: DesiredUpdate) -> None:
        for instance, error in update.rejected:
            # One bad assignment must not cost the host all the others.
            self._log.error("assignment ignored", instance=instance, error=error)
        self._target.apply_assignments(
            full=update.full, revision=update.revision, assignments=update.assignments
        )

    async def _write(self, call: Any, queue: asyncio.Queue[Outgoing]) -> None:
        while True:
            msg = await queue.get()
            # A write that cannot complete means a dead peer: end the stream and reconnect.
            async with asyncio.timeout(self._settings.connect_timeout_s):
                await call.write(msg)

    async def _heartbeat(self, queue: asyncio.Queue[Outgoing]) -> None:
        # The first one at a random point of the interval (the Hello counted as one): agents
        # that reconnect together after a control-plane restart do not heartbeat in lockstep.
        await asyncio.sleep(random.random() * self._settings.heartbeat_interval_s)
        while True:
            self._sequence += 1
            self._unacked[self._sequence] = self._clock()
            if len(self._unacked) > _UNACKED_KEPT:
                # A control plane that records none of them (its database away): keep the
                # latest; an acknowledgement of an older one no longer matters.
                del self._unacked[min(self._unacked)]
            queue.put_nowait(
                convert.heartbeat_to_pb(
                    self._target.acted_revision,
                    sequence=self._sequence,
                    ack_deferred=not self._target.self_fencing,
                )
            )
            await asyncio.sleep(self._settings.heartbeat_interval_s)


async def connect(channel: Any) -> None:
    """Wait until the channel is READY; fail at once on a refused connection.

    `channel_ready()` alone would sit out the whole timeout on a replica that is down,
    retrying inside gRPC, instead of moving on to the next address.
    """
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionError("cannot connect")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
