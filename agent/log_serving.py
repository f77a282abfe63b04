"""Answering the control plane's LogRequests on the agent's sync stream (`agent.sync`).

No extra port on hosts: `keelctl logs` reaches an instance's output through the stream its
agent already holds. A request is served by a task of its own: the last lines of the
instance's stdout then stderr, across rotated files (`agent.logread`), then, when following,
what is appended, until cancelled or the stream ends (`cancel_all`). The instance's secret_env
values are taken out of every chunk on the way (`keel.redact.Streaming`); when a value cannot be
known, the output is withheld (`agent.secretenv.withheld`). Chunks wait while the stream's
queue is long, so a big log is read only as fast as the stream takes it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from agent import convert, logread, secretenv
from agent.convert import LogRequest, Outgoing
from keel.redact import Redactor, Streaming

# Log chunks wait while this many messages are queued for the stream.
_QUEUE_HIGH = 16
_QUEUE_POLL_S = 0.01


class LogSource(Protocol):
    """What the log server asks of the agent's reconciler."""

    def knows(self, instance_id: str) -> bool: ...

    async def redactor(self, instance_id: str) -> tuple[Redactor, list[str]]: ...


class LogServer:
    """Serves the LogRequests of one agent, each in a task of its own."""

    def __init__(
        self, *, source: LogSource, host: str, log_dir: Path, follow_interval_s: float, log: Any
    ) -> None:
        self._source = source
        self._host = host
        self._log_dir = log_dir
        self._follow_interval_s = follow_interval_s
        self._log = log
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def on_request(self, req: LogRequest, queue: asyncio.Queue[Outgoing]) -> None:
        """Starts serving `req` on `queue` (the open stream's), or cancels the one it names."""
        rid = req.request_id
        if req.cancel:
            task = self._tasks.pop(rid, None)
            if task is not None:
                task.cancel()
                queue.put_nowait(convert.log_chunk_to_pb(rid, eof=True))
            return
        if rid in self._tasks:
            return  # a duplicate of a request being served
        task = asyncio.create_task(self._serve(req, queue), name=f"logs {rid}")
        self._tasks[rid] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(rid) is t:
                del self._tasks[rid]
            if not t.cancelled() and t.exception() is not None:
                self._log.error("log request failed", request_id=rid, exc_info=t.exception())

        task.add_done_callback(done)

    def cancel_all(self) -> None:
        """The stream ended: every request it carried ends with it."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _serve(self, req: LogRequest, queue: asyncio.Queue[Outgoing]) -> None:
        rid, iid = req.request_id, req.instance_id
        llog = self._log.bind(instance=iid, request_id=rid)
        if not iid or not self._source.knows(iid):
            error = f'instance "{iid}" is not on host "{self._host}"'
            queue.put_nowait(convert.log_chunk_to_pb(rid, eof=True, error=error))
            return
        redactor, unknown = await self._source.redactor(iid)
        if unknown:
            error = secretenv.withheld(unknown)
            queue.put_nowait(convert.log_chunk_to_pb(rid, eof=True, error=error))
            return
        llog.info("sending logs", tail_lines=req.tail_lines, follow=req.follow)
        log_dir = self._log_dir
        followers: dict[str, tuple[logread.Follower, Streaming]] = {}
        try:
            for stream in logread.STREAMS:
                files = await asyncio.to_thread(logread.stream_files, log_dir, iid, stream)
                segments = await asyncio.to_thread(logread.plan_tail, files, req.tail_lines)
                live = logread.live_file(log_dir, iid, stream)
                offset = next((seg.end for seg in segments if seg.path == live), 0)
                redacting = Streaming(redactor)
                followers[stream] = (logread.Follower(live, offset), redacting)
                chunks = logread.read_segments(segments)
                while (data := await asyncio.to_thread(next, chunks, None)) is not None:
                    await _send_data(queue, rid, stream, redacting.feed(data))
                if not req.follow:
                    await _send_data(queue, rid, stream, redacting.flush())
            while req.follow:
                await asyncio.sleep(self._follow_interval_s)
                for stream, (follower, redacting) in followers.items():
                    for data in await asyncio.to_thread(follower.read_new):
                        await _send_data(queue, rid, stream, redacting.feed(data))
        except OSError as e:
            llog.warning("cannot read logs", error=str(e))
            queue.put_nowait(convert.log_chunk_to_pb(rid, eof=True, error=f"cannot read logs: {e}"))
            return
        queue.put_nowait(convert.log_chunk_to_pb(rid, eof=True))


async def _send_data(queue: asyncio.Queue[Outgoing], rid: str, stream: str, data: bytes) -> None:
    if data:
        await _send(queue, convert.log_chunk_to_pb(rid, stream=stream, data=data))


async def _send(queue: asyncio.Queue[Outgoing], msg: Outgoing) -> None:
    # The writer drains the queue as the stream accepts messages: waiting for it to get short
    # keeps a large log from being read into memory all at once.
    while queue.qsize() >= _QUEUE_HIGH:  # noqa: ASYNC110
        await asyncio.sleep(_QUEUE_POLL_S)
    queue.put_nowait(msg)
