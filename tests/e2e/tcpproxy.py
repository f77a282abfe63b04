"""A TCP proxy on loopback that a test controls: forward, delay, cut, resume.

The end-to-end partition tests put one between each agent and the control plane (the harness
gives agents the proxy's address as `--controlplane`). It runs its own asyncio loop in a thread,
so the synchronous tests drive it with plain calls:

- `cut()`: nothing crosses any more, in either direction, on open connections or new ones; what
  was sent stays queued, as a partition's unacknowledged TCP segments do, and is delivered on
  `resume()` (TCP retransmits once the path is back). A new connection is accepted and held.
- `delay(seconds)`: every chunk waits that long before it is forwarded (0: none).
- `resume()`: forwarding again, the queued bytes first.
- `close()`: closes every connection and the listener, and stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy", daemon=True)
        self._thread.start()
        self._open: asyncio.Event = self._call(self._make_event())
        self._delay_s = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server = self._call(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    # -- what a test calls ---------------------------------------------------------------------

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def delay(self, seconds: float) -> None:
        self._delay_s = seconds

    @property
    def connections(self) -> int:
        return len(self._writers) // 2

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            self._open.set()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop's side -----------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _make_event(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        try:
            await self._open.wait()  # a connection made during a cut is held, not refused
            up_r, up_w = await asyncio.open_connection(*self._upstream)
        except (OSError, asyncio.CancelledError):
            self._writers.discard(client_w)
            client_w.close()
            return
        self._writers.add(up_w)
        pumps = [
            asyncio.create_task(self._pump(client_r, up_w)),
            asyncio.create_task(self._pump(up_r, client_w)),
        ]
        # Cancelled: the proxy closes; the connection ends as below, without a traceback.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (client_w, up_w):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forwards what `reader` gives, each chunk `delay` after it arrived (a latency, not a
        bandwidth limit: chunks in flight wait together), never while cut."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                arrived, data = await queue.get()
                if not data:
                    return  # the peer closed its side, and what it sent before went through
                due = arrived + self._delay_s
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self._open.wait()
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(_CHUNK):
                    if sender.done():
                        return
                    queue.put_nowait((loop.time(), data))
            queue.put_nowait((loop.time(), b""))
            with contextlib.suppress(OSError):
                await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
