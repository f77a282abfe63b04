"""Workload logs across control-plane replicas, relayed through Postgres NOTIFY.

An agent's Sync stream is open on one replica; `keelctl logs` may reach another (a client
given `--controlplane A,B`, a load balancer). `controlplane.logrelay` serves a host whose
stream is here; for one whose stream is elsewhere, `LogBus.fetch` publishes the request on
the `keel_logs` channel, the replica holding the stream (every replica listens, through
`controlplane.listener`) fetches the chunks with its own `LogRelay` and publishes them back,
and the asking replica yields them. No replica needs to know another's address or
credentials: Postgres, which every replica already reaches, is the only path.

The wire: one JSON object per notification (`kind` is `req`, `ack`, `chunk`, `lease` or
`cancel`). The holder acks a request at once; no ack within `ack_s` means no replica holds
the stream (it closed and the host is being marked disconnected, or it is reconnecting), and
`fetch` raises `NoHolder` so the caller can say which. A NOTIFY payload is at most 8,000
bytes, so a chunk's data goes in parts, all of one chunk in one statement; the holder
publishes a chunk only after the previous one committed, so chunks arrive in order (Postgres
delivers notifications in commit order).
A following request stays open as long as the asker renews its lease; a holder whose asker
went silent (that replica died) stops following after `lease_s` times `_LEASES_MISSED`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from controlplane import convert
from controlplane.logrelay import LogRelay
from controlplane.sql import LOGS_CHANNEL, Database, notify
from keel.v1 import types_pb2

log = structlog.get_logger("keel.logbus")

# Raw bytes per notification: base64 makes 4/3 of it, under the 8,000-byte payload limit
# with room for the envelope.
PART_BYTES = 5_000
# A holder stops following for an asker that missed this many lease renewals.
_LEASES_MISSED = 3

Publish = Callable[[Sequence[str]], Awaitable[None]]


class NoHolder(Exception):
    """No replica acknowledged the request: none holds the host's stream."""


def publisher(db: Database) -> Publish:
    """Publishes on LOGS_CHANNEL through the pool, one statement per call."""

    async def publish(payloads: Sequence[str]) -> None:
        async with db.acquire() as conn:
            await notify(conn, LOGS_CHANNEL, payloads)

    return publish


def chunk_messages(rid: str, chunk: types_pb2.LogChunk) -> list[str]:
    """The notifications that carry one chunk: its data in parts of PART_BYTES."""
    data = bytes(chunk.data)
    pieces = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
    return [
        json.dumps(
            {
                "kind": "chunk",
                "rid": rid,
                "part": i,
                "parts": len(pieces),
                "stream": chunk.stream,
                "data": base64.b64encode(piece).decode("ascii"),
                "eof": chunk.eof,
                "error": chunk.error,
            },
            separators=(",", ":"),
        )
        for i, piece in enumerate(pieces)
    ]


@dataclass
class _Asking:
    """A request this replica published: its chunks, reassembled from their parts."""

    queue: asyncio.Queue[types_pb2.LogChunk] = field(default_factory=asyncio.Queue)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    # The parts of the chunk being received, by index (one statement's notifications need
    # not arrive in the order of its array).
    parts: dict[int, bytes] = field(default_factory=dict)

    def add(self, msg: dict[str, Any]) -> None:
        self.parts[int(msg["part"])] = base64.b64decode(msg["data"])
        if len(self.parts) < int(msg["parts"]):
            return
        data = b"".join(self.parts[i] for i in sorted(self.parts))
        self.parts = {}
        self.queue.put_nowait(
            types_pb2.LogChunk(
                stream=str(msg["stream"]),
                data=data,
                eof=bool(msg["eof"]),
                error=str(msg["error"]),
            )
        )


class LogBus:
    def __init__(self, relay: LogRelay, *, publish: Publish, lease_s: float, ack_s: float) -> None:
        self._relay = relay
        self._publish = publish
        self._lease_s = lease_s
        self._ack_s = ack_s
        self._asking: dict[str, _Asking] = {}
        # Requests this replica serves for another: rid -> the timeout that bounds its lease.
        self._serving: dict[str, asyncio.Timeout] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Requests in flight here, asked or served (a bound a test can check)."""
        return len(self._asking) + len(self._serving)

    async def fetch(
        self,
        host: str,
        instance_id: str,
        *,
        tail_lines: int,
        follow: bool,
        wait_s: float,
    ) -> AsyncIterator[types_pb2.LogChunk]:
        """The chunks of a host whose stream is on another replica. NoHolder (before any
        chunk) if no replica acks within ack_s; an error chunk if the holder sends nothing
        within wait_s (the holder gets a shorter wait, so that the agent's own silence is
        named by the replica that sees it)."""
        rid = uuid.uuid4().hex
        asking = self._asking[rid] = _Asking()
        request = {
            "kind": "req",
            "rid": rid,
            "host": host,
            "instance": instance_id,
            "tail": tail_lines,
            "follow": follow,
            "wait": wait_s * 0.75,
        }
        done = False
        renew: asyncio.Task[None] | None = None
        try:
            await self._publish([json.dumps(request)])
            try:
                async with asyncio.timeout(min(self._ack_s, wait_s)):
                    await asking.acked.wait()
            except TimeoutError:
                raise NoHolder(host) from None
            if follow:
                renew = asyncio.create_task(self._renew(rid), name=f"log-lease-{rid}")
            first = True
            while True:
                try:
                    async with asyncio.timeout(wait_s if first or not follow else None):
                        chunk = await asking.queue.get()
                except TimeoutError:
                    yield convert.log_error_pb(
                        f'no control-plane replica answered for the stream of host "{host}" '
                        f"within {wait_s:.1f}s; its agent may be reconnecting "
                        f"(keelctl describe host {host})"
                    )
                    return
                first = False
                yield chunk
                if chunk.eof:
                    done = True
                    return
        finally:
            self._asking.pop(rid, None)
            if renew is not None:
                renew.cancel()
            if not done:
                # The client went away (or no one answered): a holder stops following. This
                # may run in a cancelled task, so the notification goes out from its own.
                self._spawn(self._publish([json.dumps({"kind": "cancel", "rid": rid})]))

    async def _renew(self, rid: str) -> None:
        while True:
            await asyncio.sleep(self._lease_s)
            with contextlib.suppress(Exception):
                await self._publish([json.dumps({"kind": "lease", "rid": rid})])

    def received(self, payload: str) -> None:
        """A notification on LOGS_CHANNEL (called by the listener, on the event loop)."""
        try:
            self._received(json.loads(payload))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a log relay notification that is not one", size=len(payload))

    def _received(self, msg: dict[str, Any]) -> None:
        kind, rid = msg["kind"], str(msg["rid"])
        if kind == "chunk":
            asking = self._asking.get(rid)
            if asking is not None:
                asking.acked.set()
                asking.add(msg)
        elif kind == "ack":
            asking = self._asking.get(rid)
            if asking is not None:
                asking.acked.set()
        elif kind == "req":
            if self._relay.holds(str(msg["host"])) and rid not in self._serving:
                self._spawn(self._serve(rid, msg))
        elif kind == "lease":
            timeout = self._serving.get(rid)
            if timeout is not None:
                timeout.reschedule(self._lease_deadline())
        elif kind == "cancel":
            timeout = self._serving.get(rid)
            if timeout is not None:
                timeout.reschedule(asyncio.get_running_loop().time())

    def _lease_deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._lease_s * _LEASES_MISSED

    async def _serve(self, rid: str, msg: dict[str, Any]) -> None:
        """Fetches from the local stream and publishes each chunk, in order."""
        host = str(msg["host"])
        try:
            await self._publish([json.dumps({"kind": "ack", "rid": rid})])
            # The first chunk may take the agent up to the asker's wait.
            first = self._lease_deadline() + float(msg["wait"])
            async with asyncio.timeout(first) as lease:
                self._serving[rid] = lease
                chunks = self._relay.fetch(
                    host,
                    str(msg["instance"]),
                    tail_lines=int(msg["tail"]),
                    follow=bool(msg["follow"]),
                    wait_s=float(msg["wait"]),
                )
                try:
                    async for chunk in chunks:
                        if not msg["follow"]:
                            lease.reschedule(self._lease_deadline())
                        await self._publish(chunk_messages(rid, chunk))
                finally:
                    await chunks.aclose()
        except TimeoutError:
            log.info("stopped relaying logs: cancelled, or the asker went away", host=host, rid=rid)
        except Exception as exc:
            # The asker names the silence after its wait; this replica says why here.
            log.warning("could not relay logs", host=host, rid=rid, error=str(exc))
        finally:
            self._serving.pop(rid, None)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:
                log.warning("could not publish a log relay notification", error=str(exc))

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
