"""AgentService.Sync: one long-lived bidirectional stream per host.

The agent opens with Hello (checked by `controlplane.convert`); we answer with its assignments
(the changes since the revision it holds, or the full set), then push what changes: a NOTIFY on
`keel_host` wakes the stream of that host, and every stream also looks again each resync period,
so a lost notification only delays a change (`check_streams` reads the revisions of the hosts
streaming here, one query per slice of streams spread over the period, so a look that finds
nothing new costs no query of its own and the streams never all wake at once). Status reports go
to the batching `ReportWriter`; heartbeats to the batching `HeartbeatWriter` (with this stream's
id: a heartbeat of a replaced or ended stream changes nothing), which acknowledges it on the
stream once recorded: at once when its agent runs a self-fencing instance, otherwise just
before the stream next sends assignments (`_acknowledge`); log chunks to
`controlplane.logrelay`. A second stream for the same host replaces the first.

While the database is away a stream stays open: the agent keeps running its last desired
state, heartbeats are dropped and counted (`keel_heartbeats_dropped_total`), the opening
registration and each look are tried again at the next wake (the database probe wakes every
stream when Postgres answers again) or resync. One warning per stream says when it started
and one when it is over, so an outage is not a storm of reconnects or log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import structlog

from controlplane import convert
from controlplane.auth import require_host
from controlplane.errors import InvalidArgument, KeelError, Replaced, StreamFailed, Unavailable
from controlplane.heartbeats import HeartbeatWriter
from controlplane.logrelay import LogRelay
from controlplane.report_secrets import AssignedSecrets
from controlplane.reports import ReportWriter
from controlplane.secrets import SecretBox
from controlplane.store import Store
from controlplane.tokens import TokenStore
from controlplane.tokens_api import JoinApi
from keel.fields import SpecError
from keel.v1 import agent_pb2, agent_pb2_grpc

log = structlog.get_logger("keel.sync")

# How many streams one periodic check reads and wakes at once (`AgentSync.check_streams`).
CHECK_SLICE = 100


class _Session:
    def __init__(self, host: str) -> None:
        self.host = host
        # Recorded with the host at Hello: only this stream's end may mark it disconnected.
        self.stream_id = uuid.uuid4().hex
        self.wake = asyncio.Event()
        # The host's revision as the registry's periodic check read it (`StreamRegistry.
        # checked`), if nothing woke the stream since: the look needs no query when the agent
        # has been sent that revision. `notified` counts the other wakes, so a check that
        # read the revision before a notification never hides the change notified.
        self.checked: int | None = None
        self.notified = 0
        self.replaced = asyncio.Event()
        # Messages other than assignments (log requests) waiting to go out on this stream.
        self.outbox: asyncio.Queue[agent_pb2.ControlMessage] = asyncio.Queue()
        # The last heartbeat recorded whose agent deferred its ack (0: none unacknowledged):
        # acknowledged just before the next assignments (`_acknowledge`).
        self.deferred_ack = 0
        # The sealed secret_env of what this stream assigned: its reports are redacted.
        self.secrets = AssignedSecrets()

    def send(self, msg: agent_pb2.ControlMessage) -> None:
        self.outbox.put_nowait(msg)


class StreamRegistry:
    """Which host has a stream open on this replica, and how to wake it."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        # Set when the control plane stops: every stream ends at once instead of holding the
        # graceful stop for its whole grace (agents reconnect to another replica).
        self.stopping = asyncio.Event()

    def open(self, host: str) -> _Session:
        old = self._sessions.get(host)
        if old is not None:
            old.replaced.set()
            old.wake.set()  # a stream waits on its wake alone (`AgentSync._next`)
        session = _Session(host)
        if self.stopping.is_set():
            session.wake.set()
        self._sessions[host] = session
        return session

    def close(self, session: _Session) -> bool:
        """Forgets the session; True if it was still the host's current one."""
        if self._sessions.get(session.host) is session:
            del self._sessions[session.host]
            return True
        return False

    def get(self, host: str) -> _Session | None:
        return self._sessions.get(host)

    def stop(self) -> None:
        """The control plane stops: every stream ends at once."""
        self.stopping.set()
        for session in self._sessions.values():
            session.wake.set()

    def wake(self, host: str) -> None:
        session = self._sessions.get(host)
        if session is not None:
            _notify(session)

    def wake_all(self) -> None:
        for session in self._sessions.values():
            _notify(session)

    def sessions(self) -> list[_Session]:
        return list(self._sessions.values())

    def checked(self, revisions: Mapping[str, int], *, notified: Mapping[_Session, int]) -> None:
        """The periodic check read these hosts' revisions; `notified`: each session's count of
        notifications when it began. Wakes every session checked, with the revision read
        unless a notification came meanwhile (or the host was not found: it looks itself)."""
        for session, before in notified.items():
            revision = revisions.get(session.host)
            if session.notified == before and revision is not None:
                session.checked = revision
            session.wake.set()

    def __len__(self) -> int:
        return len(self._sessions)


def _notify(session: _Session) -> None:
    """Something may have changed for the host: the stream looks in the database."""
    session.notified += 1
    session.checked = None
    session.wake.set()


class _Event(enum.Enum):
    OUTBOX = "outbox"
    REPLACED = "replaced"
    STOPPING = "stopping"
    AGENT_DONE = "agent done"
    LOOK = "look"  # woken, or the resync period passed


class _Outage:
    """Logs a stream's database outage once when it starts and once when it is over."""

    def __init__(self, bound: structlog.typing.FilteringBoundLogger) -> None:
        self.log = bound
        self.away = False

    def failed(self, what: str) -> None:
        if not self.away:
            self.away = True
            self.log.warning(
                "database unavailable; the stream stays open and the agent keeps its last "
                "desired state",
                during=what,
            )

    def over(self) -> None:
        if self.away:
            self.away = False
            self.log.info("database available again; stream resumed")


class AgentSync(JoinApi, agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: Store,
        *,
        registry: StreamRegistry,
        reports: ReportWriter,
        heartbeats: HeartbeatWriter,
        logs: LogRelay,
        resync_period_s: float,
        secrets: SecretBox,
        hello_timeout_s: float = 10.0,
        tokens: TokenStore | None = None,
        on_denied: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._secrets = secrets
        self._tokens = tokens
        self._on_denied = on_denied
        self._hello_timeout_s = hello_timeout_s
        self._store = store
        self._logs = logs
        self._registry = registry
        self._reports = reports
        self._heartbeats = heartbeats
        self._resync_period_s = resync_period_s

    async def Sync(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.ControlMessage]:
        hello = await _hello(request_iterator, timeout_s=self._hello_timeout_s)
        host = hello.host
        require_host(host, on_denied=self._on_denied)  # before anything is registered
        bound = log.bind(host=host)
        outage = _Outage(bound)
        session = self._registry.open(host)
        reader = asyncio.create_task(
            self._read(session, request_iterator, outage), name=f"sync-read-{host}"
        )
        outgoing: asyncio.Future[agent_pb2.ControlMessage] = asyncio.ensure_future(
            session.outbox.get()
        )
        sent: int | None = None  # the revision the agent has been sent; None: nothing yet
        error: BaseException | None = None  # why the agent's side failed
        try:
            event = _Event.LOOK
            while True:
                if event is _Event.OUTBOX:
                    yield outgoing.result()
                    outgoing = asyncio.ensure_future(session.outbox.get())
                elif event is _Event.REPLACED:
                    bound.info("stream replaced by a newer one")
                    raise Replaced("replaced by a newer stream for this host")
                elif event is _Event.STOPPING:
                    return
                elif event is _Event.AGENT_DONE:
                    error = None if reader.cancelled() else reader.exception()
                    if error is None:
                        return  # the agent closed its side
                    if isinstance(error, KeelError | SpecError):
                        raise error  # the error table gives it its code
                    bound.warning("agent stream failed", error=str(error))
                    raise StreamFailed("the stream from the agent failed; reconnect") from error
                else:
                    session.wake.clear()
                    checked, session.checked = session.checked, None
                    try:
                        if sent is None:
                            message = await self._opening(hello, session, bound)
                        elif checked is not None and checked <= sent:
                            # Nothing new since the agent was sent `sent` (the periodic check
                            # read the host's revision): no query of its own.
                            message = convert.assignments_pb(False, sent, [], secrets=self._secrets)
                        else:
                            revision, rows = await self._store.host_assignments(host, since=sent)
                            session.secrets.remember(rows, full=False)
                            # Sent even when empty (each resync period at least): the agent then
                            # knows its desired state is current.
                            message = convert.assignments_pb(
                                False, max(sent, revision), rows, secrets=self._secrets
                            )
                    except Unavailable:
                        outage.failed("the assignments" if sent else "the agent's registration")
                    else:
                        outage.over()
                        sent = message.assignments.revision
                        if session.deferred_ack and message.assignments.assignments:
                            yield _ack(session.deferred_ack)
                            session.deferred_ack = 0
                        yield message
                event = await self._next(session, reader, outgoing)
        finally:
            reader.cancel()
            outgoing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            # The agent's error, raised here, holds this frame in its traceback, and this frame
            # holds it (through `reader` too): a reference cycle that would keep the whole call
            # until the cyclic collector runs (see `interceptors._refuse`). Broken now.
            error = None
            del reader
            self._logs.session_closed(session)
            if self._registry.close(session):
                with contextlib.suppress(Exception):
                    await self._store.disconnect_host(host, stream_id=session.stream_id)
                bound.info("agent disconnected")

    async def check_streams(self) -> None:
        """Every resync period each stream open here is checked once: one query reads the
        revision of a slice of hosts and wakes their streams, and those whose agent holds that
        revision send their periodic (empty) assignments without a query each. The slices
        (`CHECK_SLICE` streams) are spread evenly over the period, so thousands of streams do
        not all wake in one instant and hold the event loop from everything else (a change
        arriving then would wait behind them). Runs until cancelled."""
        while True:
            sessions = self._registry.sessions()
            slices = [
                sessions[at : at + CHECK_SLICE] for at in range(0, len(sessions), CHECK_SLICE)
            ]
            pause = self._resync_period_s / max(len(slices), 1)
            if not slices:
                await asyncio.sleep(pause)
            for part in slices:
                await asyncio.sleep(pause)
                notified = {s: s.notified for s in part}
                try:
                    revisions = await self._store.host_revisions([s.host for s in part])
                except Exception as exc:  # the database may be away: each stream looks itself
                    log.debug("stream check failed; streams look by themselves", error=str(exc))
                    revisions = {}
                self._registry.checked(revisions, notified=notified)

    async def _opening(
        self,
        hello: convert.Hello,
        session: _Session,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> agent_pb2.ControlMessage:
        """Registers the host and returns its first assignments message."""
        host = hello.host
        revision = await self._store.register_host(
            host,
            labels=hello.labels,
            capacity=hello.capacity,
            agent_version=hello.agent_version,
            stream_id=session.stream_id,
        )
        if 0 < hello.revision <= revision:
            sent, rows = await self._store.host_assignments(host, since=hello.revision)
            # Tombstones again, whatever their revision: a removal confirmation lost with
            # the last stream (or with a stopped control plane) is then sent once more.
            seen = {r.id for r in rows}
            rows += [r for r in await self._store.host_tombstones(host) if r.id not in seen]
            full = False
        else:
            sent, rows = await self._store.host_assignments(host, since=None)
            full = True
        session.secrets.remember(rows, full=full)
        bound.info(
            "agent connected",
            agent_revision=hello.revision,
            revision=sent,
            full=full,
            assignments=len(rows),
        )
        return convert.assignments_pb(full, sent, rows, secrets=self._secrets)

    async def _next(
        self,
        session: _Session,
        reader: asyncio.Task[None],
        outgoing: asyncio.Future[agent_pb2.ControlMessage],
    ) -> _Event:
        """Waits for what the stream must do next: the periodic check (`check_streams`) wakes
        it every resync period; after two without one (opened just after a check began, or
        the check is slow) it looks by itself."""
        # One waiter besides the reader and the outbox: being replaced and the control plane
        # stopping set the wake too (`StreamRegistry.open`, `stop`), and a look is cheap when
        # thousands of streams are woken together each resync period.
        woken = asyncio.ensure_future(session.wake.wait())
        futures: list[asyncio.Future[Any]] = [woken, reader, outgoing]
        try:
            await asyncio.wait(
                futures,
                timeout=2 * self._resync_period_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()
        # In order of precedence: messages already queued go out before anything else.
        if outgoing.done():
            return _Event.OUTBOX
        if session.replaced.is_set():
            return _Event.REPLACED
        if self._registry.stopping.is_set():
            return _Event.STOPPING
        if reader.done():
            return _Event.AGENT_DONE
        return _Event.LOOK

    async def _read(
        self,
        session: _Session,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        outage: _Outage,
    ) -> None:
        host = session.host

        def dropped() -> None:
            # Buffering would only delay the truth: the next heartbeat that lands says the
            # host is alive, and liveness judges by database time.
            outage.failed("a heartbeat")

        async for msg in request_iterator:
            which = msg.WhichOneof("msg")
            if which == "heartbeat":
                beat = msg.heartbeat
                self._heartbeats.submit(
                    host,
                    stream_id=session.stream_id,
                    dropped=dropped,
                    revision=beat.revision,
                    written=_acknowledge(session, beat.sequence, deferred=beat.ack_deferred),
                )
            elif which == "report":
                reports = [convert.report_from_pb(host, s) for s in msg.report.instances]
                if session.secrets.incomplete(reports):
                    with contextlib.suppress(Unavailable):  # the agent has redacted them
                        _, rows = await self._store.host_assignments(host, since=None)
                        session.secrets.remember_all(rows)
                self._reports.submit(
                    [session.secrets.redacted(r, secrets=self._secrets) for r in reports]
                )
            elif which == "log_chunk":
                self._logs.deliver(msg.log_chunk)
            elif which == "hello":
                outage.log.warning("ignoring a second Hello on an open stream")


def _ack(sequence: int) -> agent_pb2.ControlMessage:
    return agent_pb2.ControlMessage(heartbeat_ack=agent_pb2.HeartbeatAck(sequence=sequence))


def _nothing() -> None:
    return None


def _acknowledge(session: _Session, sequence: int, *, deferred: bool) -> Callable[[], None]:
    """Tells the agent its heartbeat `sequence` is recorded: its on_disconnect clock starts
    over from the heartbeat's sending. Only an agent running a self-fencing instance needs
    that at once; one that deferred it (`ack_deferred`: an ack per heartbeat per host was
    most of an idle fleet's cost) gets the last one recorded just before its next
    assignments, which may give it such an instance. Sequence 0: not to be acknowledged."""
    if not sequence:
        return _nothing
    if deferred:

        def remembered() -> None:
            session.deferred_ack = sequence

        return remembered

    def written() -> None:
        session.deferred_ack = 0
        session.send(_ack(sequence))

    return written


async def _hello(
    requests: AsyncIterator[agent_pb2.AgentMessage], *, timeout_s: float
) -> convert.Hello:
    """The stream's opening Hello, checked; InvalidArgument when there is none."""
    try:
        async with asyncio.timeout(timeout_s):
            first = await anext(requests)
    except (TimeoutError, StopAsyncIteration):
        raise InvalidArgument(
            f"hello: the stream must open with Hello within {timeout_s:g}s"
        ) from None
    if first.WhichOneof("msg") != "hello":
        raise InvalidArgument("hello: the first message must be Hello with a host name")
    return convert.hello_from_pb(first.hello)
