"""Workload logs, fetched from the agent over its Sync stream (no extra port on hosts).

`FleetService.GetLogs` asks `LogRelay.fetch`, which sends a LogRequest on the host's stream
and yields the LogChunks the agent sends back (the messages are built in `convert`), routed
here by request id (`deliver`, called by
`controlplane.sync`). The streams are reached through `Streams`, a two-method view of
`sync.StreamRegistry` passed at construction, so this module imports nothing of sync. Only the
replica holding the host's stream relays from it; another replica asks that one through
`controlplane.logbus`. A disconnected or silent agent is named in a clear error, never
blamed on the control plane.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Protocol

from controlplane import convert
from keel.v1 import agent_pb2, types_pb2


class Outbox(Protocol):
    """One agent's stream, as far as logs need it: a way to send it a message."""

    def send(self, msg: agent_pb2.ControlMessage) -> None: ...


class Streams(Protocol):
    """The streams open on this replica, by host."""

    def get(self, host: str) -> Outbox | None: ...


def _ago(at: datetime | None) -> str:
    if at is None:
        return "it has never sent a heartbeat"
    seconds = (datetime.now(UTC) - at).total_seconds()
    return f"its last heartbeat was {seconds:.0f}s ago"


def disconnected(host: str, instance_id: str, *, maybe_back: bool = False) -> str:
    """Why the logs of an instance cannot be fetched: its agent holds no stream."""
    back = "; it may be reconnecting: try again in a few seconds" if maybe_back else ""
    return (
        f'the agent of host "{host}" is disconnected{back}, so the logs of {instance_id} '
        f"cannot be fetched; they stay on the host under <agent state dir>/logs/"
        f"{instance_id}/ (keelctl describe host {host})"
    )


class LogRelay:
    def __init__(self, streams: Streams) -> None:
        self._streams = streams
        # request id -> (the stream it went out on, queue of chunks; None = that stream closed)
        self._pending: dict[str, tuple[Outbox, asyncio.Queue[types_pb2.LogChunk | None]]] = {}

    async def fetch(
        self,
        host: str,
        instance_id: str,
        *,
        tail_lines: int,
        follow: bool,
        wait_s: float,
        last_heartbeat: datetime | None = None,
    ) -> AsyncGenerator[types_pb2.LogChunk, None]:
        """The instance's log chunks; an error chunk names the agent when it cannot answer.

        wait_s bounds the wait for the agent's first chunk (and every chunk unless following:
        a following request may stay quiet for as long as the workload does).
        """
        session = self._streams.get(host)
        if session is None:
            yield convert.log_error_pb(disconnected(host, instance_id))
            return
        rid = uuid.uuid4().hex
        queue: asyncio.Queue[types_pb2.LogChunk | None] = asyncio.Queue()
        self._pending[rid] = (session, queue)
        session.send(convert.log_request_pb(rid, instance_id, tail_lines=tail_lines, follow=follow))
        done = False
        try:
            first = True
            while True:
                try:
                    async with asyncio.timeout(wait_s if first or not follow else None):
                        chunk = await queue.get()
                except TimeoutError:
                    yield convert.log_error_pb(
                        f'the agent of host "{host}" did not answer the log request for '
                        f"{instance_id} within {wait_s:.1f}s ({_ago(last_heartbeat)}); the agent "
                        f"may be frozen or overloaded (keelctl describe host {host})"
                    )
                    return
                first = False
                if chunk is None:
                    done = True
                    yield convert.log_error_pb(
                        f'the stream to the agent of host "{host}" closed while '
                        f"sending logs; try again once it is back (keelctl describe host {host})"
                    )
                    return
                yield chunk
                if chunk.eof:
                    done = True
                    return
        finally:
            self._pending.pop(rid, None)
            if follow and not done:
                # The client went away: tell the agent to stop following.
                live = self._streams.get(host)
                if live is not None:
                    live.send(convert.log_cancel_pb(rid))

    def holds(self, host: str) -> bool:
        """Whether the host's stream is open on this replica."""
        return self._streams.get(host) is not None

    def deliver(self, chunk: types_pb2.LogChunk) -> None:
        entry = self._pending.get(chunk.request_id)
        if entry is not None:
            entry[1].put_nowait(chunk)

    def session_closed(self, session: Outbox) -> None:
        """Ends the requests that went out on this stream (not a newer one of the host)."""
        for s, queue in list(self._pending.values()):
            if s is session:
                queue.put_nowait(None)
