"""Control-plane memory against short-lived agent streams: RSS after N streams opened and closed.

    .venv/bin/python -m bench.streams                      # 6,500 streams of each kind
    .venv/bin/python -m bench.streams --kind refused --streams 6500

A real `keel-controlplane` on a real (embedded) Postgres, on loopback; this process opens and
closes Sync streams against it, 20 at a time, each on a connection of its own as an agent's
would be, and samples the replica's RSS every 500 streams. The kinds:
- `clean`: Hello (one of 100 host names), the assignments, a heartbeat, close;
- `refused`: a Hello the control plane refuses (INVALID_ARGUMENT), as an impostor or a broken
  agent sends;
- `replaced`: Hello, then a second stream for the same host, which replaces the first.
A replica whose memory is bounded levels off after the first few thousand streams (caches and
the allocator's arenas filled) and stays there; one that keeps something per stream grows in
a straight line. Before the interceptor stopped using `context.abort()`, `refused` took a
replica from 65 to 130 MB; see docs/scaling.md. Not a `make bench` scenario: it needs no
hollow fleet and measures one figure.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import psutil
import uvloop

from agent import convert
from bench.fleet import ControlPlane
from bench.postgres import Postgres, with_database
from bench.procs import Children
from keel.model import Resources
from keel.v1 import agent_pb2_grpc

KINDS = ("clean", "refused", "replaced")
SAMPLE_EVERY = 500
HOSTS = 100  # host names the clean and replaced streams take turns with
CONCURRENCY = 20
OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, like a host


def _hello(host: str) -> object:
    hello = convert.Hello(
        host=host, agent_version="bench", revision=0, labels={}, capacity=Resources(1000, 1024)
    )
    return convert.hello_to_pb(hello)


async def _clean(address: str, host: str) -> None:
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Sync()
        await call.write(_hello(host))
        await call.read()
        await call.write(convert.heartbeat_to_pb(0))
        call.cancel()


async def _refused(address: str, host: str) -> None:
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Sync()
        await call.write(_hello("NOT A HOST NAME"))
        try:
            await call.read()
        except grpc.aio.AioRpcError as e:
            if e.code() is not grpc.StatusCode.INVALID_ARGUMENT:
                raise


async def _replaced(address: str, host: str) -> None:
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        first, second = stub.Sync(), stub.Sync()
        await first.write(_hello(host))
        await first.read()
        await second.write(_hello(host))
        await second.read()
        try:
            while await first.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass  # replaced: the expected end
        second.cancel()


STREAMS: dict[str, Callable[[str, str], Awaitable[None]]] = {
    "clean": _clean,
    "refused": _refused,
    "replaced": _replaced,
}


async def measure(kind: str, *, streams: int, root: Path) -> list[tuple[int, int]]:
    """(streams so far, the replica's RSS in MiB), every SAMPLE_EVERY streams."""
    children = Children(root)
    postgres = Postgres(root)
    try:
        uri = await asyncio.to_thread(postgres.start)
        cp = await ControlPlane.start(
            children, name=f"cp-{kind}", database_url=with_database(uri, "postgres"), args=[]
        )
        process = psutil.Process(cp.child.pid)
        one = STREAMS[kind]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def stream(i: int) -> None:
            async with gate:
                await one(cp.grpc, f"bench-{i % HOSTS}")

        samples = [(0, process.memory_info().rss >> 20)]
        for start in range(0, streams, SAMPLE_EVERY):
            end = min(streams, start + SAMPLE_EVERY)
            await asyncio.gather(*(stream(i) for i in range(start, end)))
            children.check_alive()
            samples.append((end, process.memory_info().rss >> 20))
        return samples
    finally:
        children.stop_all()
        await asyncio.to_thread(postgres.stop)


async def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.streams", description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=6500)
    p.add_argument("--kind", choices=(*KINDS, "all"), default="all")
    args = p.parse_args(argv)
    kinds = KINDS if args.kind == "all" else (args.kind,)
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix=f"keel-bench-streams-{kind}-") as tmp:
            samples = await measure(kind, streams=args.streams, root=Path(tmp))
        steps = "  ".join(f"{n}:{rss}" for n, rss in samples)
        first, last = samples[0][1], samples[-1][1]
        print(f"{kind:>8}: RSS {first} MiB -> {last} MiB after {args.streams:,} streams")
        print(f"{'':>8}  (streams:MiB) {steps}", flush=True)


if __name__ == "__main__":
    uvloop.run(main())
