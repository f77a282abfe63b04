"""Workload logs, fetched from the agent over its Sync stream (no extra port on hosts).

`FleetService.GetLogs` asks `LogRelay.fetch`, which sends a LogRequest on the host's stream
(`controlplane.sync`) and yields the LogChunks the agent sends back, routed here by request id.
Only the replica holding the host's stream can relay; a disconnected agent is a clear error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from keel.v1 import agent_pb2, types_pb2

if TYPE_CHECKING:
    from controlplane.sync import StreamRegistry


class LogRelay:
    def __init__(self, *, first_chunk_timeout_s: float = 30.0) -> None:
        self._registry: StreamRegistry | None = None
        self._timeout_s = first_chunk_timeout_s
        # request id -> (the stream it went out on, queue of chunks; None = that stream closed)
        self._pending: dict[str, tuple[object, asyncio.Queue[types_pb2.LogChunk | None]]] = {}

    def attach(self, registry: StreamRegistry) -> None:
        self._registry = registry

    async def fetch(
        self, host: str, instance_id: str, *, tail_lines: int, follow: bool
    ) -> AsyncIterator[types_pb2.LogChunk]:
        session = self._registry.get(host) if self._registry is not None else None
        if session is None:
            yield types_pb2.LogChunk(
                eof=True,
                error=f'the agent of host "{host}" is disconnected, so the logs of {instance_id} '
                f"cannot be fetched; they stay on the host under <agent state dir>/logs/"
                f"{instance_id}/ (keelctl describe host {host})",
            )
            return
        rid = uuid.uuid4().hex
        queue: asyncio.Queue[types_pb2.LogChunk | None] = asyncio.Queue()
        self._pending[rid] = (session, queue)
        request = agent_pb2.LogRequest(
            request_id=rid, instance_id=instance_id, tail_lines=tail_lines, follow=follow
        )
        session.send(agent_pb2.ControlMessage(log_request=request))
        done = False
        try:
            first = True
            while True:
                try:
                    # A following request may stay quiet for as long as the workload does.
                    wait = self._timeout_s if first or not follow else None
                    async with asyncio.timeout(wait):
                        chunk = await queue.get()
                except TimeoutError:
                    yield types_pb2.LogChunk(
                        eof=True,
                        error=f'the agent of host "{host}" did not answer the log request '
                        f"within {self._timeout_s:.0f}s",
                    )
                    return
                first = False
                if chunk is None:
                    done = True
                    yield types_pb2.LogChunk(
                        eof=True,
                        error=f'the stream to the agent of host "{host}" closed while '
                        f"sending logs; try again once it is back (keelctl describe host {host})",
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
                live = self._registry.get(host) if self._registry is not None else None
                if live is not None:
                    live.send(
                        agent_pb2.ControlMessage(
                            log_request=agent_pb2.LogRequest(request_id=rid, cancel=True)
                        )
                    )

    def deliver(self, chunk: types_pb2.LogChunk) -> None:
        entry = self._pending.get(chunk.request_id)
        if entry is not None:
            entry[1].put_nowait(chunk)

    def session_closed(self, session: object) -> None:
        """Ends the requests that went out on this stream (not a newer one of the host)."""
        for s, queue in list(self._pending.values()):
            if s is session:
                queue.put_nowait(None)
