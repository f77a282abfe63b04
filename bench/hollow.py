"""Hollow agents: many simulated hosts in one process, each speaking the real Sync protocol.

    .venv/bin/python -m bench.hollow --controlplane A[,B] --first 0 --count 2500 --stats FILE

Like Kubernetes' kubemark hollow nodes: each hollow agent is a host of its own to the control
plane (its own connection, stream and host name), says Hello with capacity and labels, sends a
heartbeat every --heartbeat-interval, and answers every assignment at once, as an agent whose
processes start in no time would: STARTING then RUNNING and ready for desired RUNNING, STOPPED
for STOPPED, STOPPED with the removal confirmed for a tombstone; an instance whose spec sets
`HOLLOW_CRASH` is reported in a crash loop instead, with that value as its stderr. It runs no
process and keeps no state on disk. Its messages are built and read by the real agent's edge
(`agent.convert`), and it reconnects as the agent does (`agent.backoff`, round-robin over the
addresses, starting at a different one per host so a fleet spreads over the replicas), saying Hello
with the revision it holds and then a full report of what it runs.

The process writes what its agents did to --stats (JSON, atomically) every --stats-interval
and at exit, for `bench.fleet`: counters, and per host its stream's replica, when it opened,
when its first assignments arrived (resynced), and when it last lost a stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop

from agent import convert
from agent.backoff import Reconnects
from agent.convert import DesiredUpdate, LogRequest
from agent.state import Assignment
from agent.status import InstanceReport
from agent.stuck import StuckInfo
from agent.sync import connect, describe
from keel.model import Desired, Phase, Resources
from keel.stuck import GUIDES, Reason, next_command
from keel.v1 import agent_pb2_grpc

VERSION = "hollow"
# A workload whose spec sets this variable crashes at once on a hollow agent, with the value as
# its stderr (bench.rollback): the rollout controller's input, without a process.
CRASH_ENV = "HOLLOW_CRASH"
_ERRORS_KEPT = 5


@dataclass(frozen=True)
class Config:
    addresses: tuple[str, ...]
    heartbeat_interval_s: float = 10.0
    connect_timeout_s: float = 5.0
    reconnect_base_s: float = 0.2
    reconnect_max_s: float = 10.0
    reconnect_reset_s: float = 30.0
    capacity: Resources = field(
        default_factory=lambda: Resources(cpu_millis=16_000, memory_mib=65_536)
    )
    labels: dict[str, str] = field(default_factory=lambda: {"fleet": "hollow"})
    # The control plane's join token: each hollow agent joins its host once, as an agent does,
    # and keeps the credential in memory (a hollow agent has no state dir).
    join_token: str | None = field(default=None, repr=False)


class Tally:
    """What every agent of the process did, summed (and the last few errors)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        self.counts["errors"] += 1
        self.errors = [*self.errors[-(_ERRORS_KEPT - 1) :], text]


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


class HollowAgent:
    """One simulated host (see the module doc)."""

    def __init__(self, host: str, *, config: Config, first_address: int, tally: Tally) -> None:
        self.host = host
        self._config = config
        self._next_address = first_address
        self._tally = tally
        self._backoff = Reconnects(
            base_s=config.reconnect_base_s,
            max_s=config.reconnect_max_s,
            reset_after_s=config.reconnect_reset_s,
            rng=random.random,
        )
        self.revision = 0
        self.instances: dict[str, Desired] = {}  # what it runs (RUNNING) or holds stopped
        self._started: set[str] = set()  # every instance it ever started: a second is a restart
        self.address = -1  # the replica of the open stream; -1 while disconnected
        self.opened_at = 0.0
        self.resynced_at = 0.0
        self.lost_at = 0.0
        self._write_lock = asyncio.Lock()
        self._credential: str | None = None
        # Its own credential secret, the same for every Join it retries (`agent.credentials`).
        self._join_secret = secrets.token_urlsafe(32)

    @property
    def running(self) -> int:
        return sum(1 for d in self.instances.values() if d is Desired.RUNNING)

    def row(self) -> list[Any]:
        return [self.host, self.address, self.opened_at, self.resynced_at, self.lost_at]

    async def run(self) -> None:
        """Stays connected until cancelled, reconnecting with the agent's back-off."""
        while True:
            index = self._next_address % len(self._config.addresses)
            self._next_address += 1
            opened = None
            try:
                opened = await self._session(index)
            except (TimeoutError, OSError) as e:
                if self.address >= 0:  # a stream that broke, not a replica that is down
                    self._tally.error(f"{self.host}: {describe(e)}")
            except Exception as e:
                # Whatever ended the stream, the agent carries on as the real one does (a dead
                # task would be a host that silently never reconnects), and it is counted.
                self._tally.error(f"{self.host}: {type(e).__name__}: {describe(e)}")
            finally:
                if self.address >= 0:
                    self.address = -1
                    self.lost_at = time.time()
                    self._tally.counts["streams_lost"] += 1
            up_s = None if opened is None else time.time() - opened
            await asyncio.sleep(self._backoff.delay_after(up_s))

    async def _session(self, index: int) -> float | None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, like a host
        async with grpc.aio.insecure_channel(self._config.addresses[index], options=options) as ch:
            async with asyncio.timeout(self._config.connect_timeout_s):
                await connect(ch)
            stub = agent_pb2_grpc.AgentServiceStub(ch)
            if self._credential is None and self._config.join_token:
                reply = await stub.Join(
                    convert.join_request_pb(self.host, self._join_secret),
                    metadata=_bearer(self._config.join_token),
                    timeout=self._config.connect_timeout_s,
                )
                self._credential = convert.credential_from_pb(reply)
            call = stub.Sync(metadata=_bearer(self._credential) if self._credential else None)
            try:
                hello = convert.Hello(
                    host=self.host,
                    agent_version=VERSION,
                    revision=self.revision,
                    labels=dict(self._config.labels),
                    capacity=self._config.capacity,
                )
                async with asyncio.timeout(self._config.connect_timeout_s):
                    await call.write(convert.hello_to_pb(hello))
                self.address, self.opened_at = index, time.time()
                self._tally.counts["streams_opened"] += 1
                now = time.time()
                full = [_running(i, now) for i, d in self.instances.items() if d is Desired.RUNNING]
                await self._send(call, full)
                beat = asyncio.create_task(self._heartbeats(call), name=f"beat {self.host}")
                try:
                    await self._read(call)
                finally:
                    beat.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                        await beat
                return self.opened_at
            finally:
                call.cancel()

    async def _send(self, call: Any, reports: Sequence[InstanceReport]) -> None:
        if not reports:
            return
        msg = convert.reports_to_pb(reports, observed_at=time.time())
        async with self._write_lock, asyncio.timeout(self._config.connect_timeout_s):
            await call.write(msg)
        self._tally.counts["reports"] += 1

    async def _heartbeats(self, call: Any) -> None:
        # Spread over the interval, as agents started at different times would be.
        await asyncio.sleep(random.random() * self._config.heartbeat_interval_s)
        while True:
            async with self._write_lock, asyncio.timeout(self._config.connect_timeout_s):
                await call.write(convert.heartbeat_to_pb(self.revision))
            self._tally.counts["heartbeats"] += 1
            await asyncio.sleep(self._config.heartbeat_interval_s)

    async def _read(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            asked = convert.control_from_pb(msg)
            if isinstance(asked, DesiredUpdate):
                self._tally.counts["assignment_messages"] += 1
                if self.resynced_at < self.opened_at:
                    self.resynced_at = time.time()
                starting, done = self.apply(asked)
                await self._send(call, starting)
                await self._send(call, done)
            elif isinstance(asked, LogRequest) and not asked.cancel:
                chunk = convert.log_chunk_to_pb(
                    asked.request_id, eof=True, error="a hollow agent keeps no logs"
                )
                async with self._write_lock:
                    await call.write(chunk)

    def apply(self, update: DesiredUpdate) -> tuple[list[InstanceReport], list[InstanceReport]]:
        """Takes an assignments message; the reports it calls for (STARTING ones, then the rest)."""
        now = time.time()
        starting: list[InstanceReport] = []
        done: list[InstanceReport] = []
        if update.full:
            wanted = {a.instance_id for a in update.assignments}
            for gone in [i for i in self.instances if i not in wanted]:
                self._stopped(self.instances.pop(gone))
        for a in update.assignments:
            iid, had = a.instance_id, self.instances.get(a.instance_id)
            if a.desired is Desired.RUNNING:
                if had is not Desired.RUNNING:
                    self._tally.counts["starts"] += 1
                    if iid in self._started:
                        self._tally.counts["restarts"] += 1
                    self._started.add(iid)
                    self.instances[iid] = Desired.RUNNING
                    starting.append(InstanceReport(iid, Phase.STARTING))
                    crash = a.spec.env.get(CRASH_ENV)
                    done.append(_crash_loop(a, now, crash) if crash else _running(iid, now))
            elif a.desired is Desired.STOPPED:
                if had is not Desired.STOPPED:
                    self._stopped(had)
                    self.instances[iid] = Desired.STOPPED
                    done.append(InstanceReport(iid, Phase.STOPPED))
            else:  # a tombstone, known or not: confirm it (it is resent until confirmed)
                self._stopped(self.instances.pop(iid, None))
                self._tally.counts["removals"] += 1
                done.append(InstanceReport(iid, Phase.STOPPED, removed=True))
        self.revision = max(self.revision, update.revision)
        return starting, done

    def _stopped(self, was: Desired | None) -> None:
        if was is Desired.RUNNING:
            self._tally.counts["stops"] += 1


def _crash_loop(a: Assignment, now: float, stderr: str) -> InstanceReport:
    """What an agent reports of a process that exits at once, from its second exit on: a
    crash loop with the agent's own verdict and the stderr tail (`agent.stuck`). The hollow
    agent reports it at once: its back-off between the two exits takes no time."""
    last_exit, restarts = "exit code 1", 1
    message = f"last exit: {last_exit}; restarts: {restarts}\nstderr (last lines):\n{stderr}"
    guide = GUIDES[Reason.CRASH_LOOP]
    verdict = StuckInfo(
        Reason.CRASH_LOOP.value,
        now,
        message,
        guide.runbook,
        next_command(Reason.CRASH_LOOP, instance=a.instance_id, workload=a.workload),
    )
    return InstanceReport(
        a.instance_id,
        Phase.FAILED,
        restart_count=restarts,
        last_exit=last_exit,
        reason=Reason.CRASH_LOOP.value,
        message=message,
        stuck=verdict,
    )


def _running(instance_id: str, now: float) -> InstanceReport:
    # Pids are made up, like the fake driver's, beyond any real pid_max default.
    pid = 1_000_000 + (zlib.crc32(instance_id.encode()) & 0xFFFFF)
    return InstanceReport(instance_id, Phase.RUNNING, pid=pid, ready=True, started_at=now)


# The process ------------------------------------------------------------------------------


def write_stats(path: Path, agents: Sequence[HollowAgent], tally: Tally) -> None:
    """The process's stats, replaced atomically (a reader never sees half a file)."""
    stats = {
        "pid": os.getpid(),
        "at": time.time(),
        "agents": len(agents),
        "connected": sum(1 for a in agents if a.address >= 0),
        "running": sum(a.running for a in agents),
        "counts": dict(tally.counts),
        "errors": tally.errors,
        "hosts": [a.row() for a in agents],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    tmp.replace(path)


async def run_fleet(args: argparse.Namespace) -> None:
    config = Config(
        addresses=tuple(a.strip() for a in args.controlplane.split(",") if a.strip()),
        heartbeat_interval_s=args.heartbeat_interval,
        reconnect_max_s=args.reconnect_max,
        join_token=args.join_token,
    )
    tally = Tally()
    agents = [
        HollowAgent(f"{args.prefix}{n}", config=config, first_address=n, tally=tally)
        for n in range(args.first, args.first + args.count)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = Path(args.stats)
    tasks: list[asyncio.Task[None]] = []

    async def start_all() -> None:
        # At --connect-rate a second: a fleet booting together, not a thundering herd.
        for n, agent in enumerate(agents):
            tasks.append(asyncio.create_task(agent.run(), name=f"hollow {agent.host}"))
            if args.connect_rate > 0 and n % 10 == 9:
                await asyncio.sleep(10 / args.connect_rate)

    async def report() -> None:
        while True:
            write_stats(stats, agents, tally)
            await asyncio.sleep(args.stats_interval)

    starter = asyncio.create_task(start_all(), name="start agents")
    writer = asyncio.create_task(report(), name="stats")
    await stop.wait()
    for t in [starter, writer, *tasks]:
        t.cancel()
    await asyncio.gather(starter, writer, *tasks, return_exceptions=True)
    write_stats(stats, agents, tally)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.hollow", description=__doc__.splitlines()[0])
    p.add_argument("--controlplane", required=True, help="comma-separated replica addresses")
    p.add_argument("--prefix", default="hollow-", help="host names are PREFIX + number")
    p.add_argument("--first", type=int, default=0, help="the number of the first host")
    p.add_argument("--count", type=int, required=True, help="how many hollow agents")
    p.add_argument("--stats", required=True, help="where the stats JSON goes")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--heartbeat-interval", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--reconnect-max", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--connect-rate", type=float, default=500.0, help="new streams per second")
    p.add_argument("--join-token-file", default=None, help="the control plane's join token")
    args = p.parse_args(argv)
    args.join_token = (
        Path(args.join_token_file).read_text().strip() if args.join_token_file else None
    )
    uvloop.run(run_fleet(args))


if __name__ == "__main__":
    main()
