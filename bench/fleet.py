"""A benchmark stage: a fresh database, its control plane(s) and a hollow fleet, torn down whole.

`Stage` is what every scenario size runs in: a database of its own on the run's Postgres
(`bench.postgres`), one or more `keel-controlplane` replicas on it (port 0, loopback, default
settings unless a scenario says otherwise), the hollow agents (`HollowFleet`: `bench.hollow`
processes of up to --agents-per-process agents each) and whatever real agent a scenario adds,
every process started through `bench.procs.Children` so that leaving the stage, however it is
left, ends them all and drops the database. It also holds what scenarios read while they run:
a gRPC channel to the first replica, a connection to the database for counting rows (cheaper
than asking the control plane being measured), and `window`, the process groups to measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import grpc
import psutil

from bench import auth
from bench.measure import Window, tree
from bench.postgres import Postgres
from bench.procs import BIN, Child, Children, await_for
from keel.v1 import fleet_pb2_grpc

START_TIMEOUT_S = 120.0


@dataclass
class Run:
    """What every stage of one bench run shares."""

    root: Path
    postgres: Postgres
    agents_per_process: int = 2500


class ControlPlane:
    """One `keel-controlplane` replica of a stage."""

    def __init__(self, child: Child, state: Path) -> None:
        self.child = child
        self.state = state
        self.grpc = ""
        self.metrics = ""

    @classmethod
    async def start(
        cls,
        children: Children,
        *,
        name: str,
        database_url: str,
        args: Sequence[str],
        tokens: Path | None = None,
    ) -> ControlPlane:
        state = children.root / name
        argv = [str(BIN / "keel-controlplane"), "--database-url", database_url,
                "--state-dir", str(state), "--listen", "127.0.0.1:0",
                "--metrics", "127.0.0.1:0", "--log-format", "json", *args]  # fmt: skip
        cp = cls(children.start(name, argv), state)

        async def bound() -> dict[str, str] | None:
            children.check_alive()
            data: dict[str, str] = json.loads((state / "addresses.json").read_text())
            return data if "grpc" in data and "metrics" in data else None

        addresses = await await_for(bound, within_s=START_TIMEOUT_S, what=f"{name} to listen")
        cp.grpc, cp.metrics = addresses["grpc"], addresses["metrics"]
        # The first replica of a database writes the tokens; the others share them.
        auth.remember([cp.grpc], tokens or state)
        return cp

    def processes(self) -> list[psutil.Process]:
        return tree(self.child.pid) if self.child.running() else []


@dataclass
class FleetStats:
    """Every hollow process's latest stats, summed; `hosts` rows as `bench.hollow` writes them."""

    agents: int = 0
    connected: int = 0
    running: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    hosts: list[list[Any]] = field(default_factory=list)


class HollowFleet:
    """`bench.hollow` processes, grown to any number of agents (see the module doc)."""

    def __init__(
        self,
        children: Children,
        *,
        addresses: Sequence[str],
        per_process: int,
        prefix: str = "hollow-",
        heartbeat_interval_s: float = 5.0,
    ) -> None:
        self._children = children
        self._addresses = ",".join(addresses)
        self._per_process = per_process
        self._prefix = prefix
        self._heartbeat_s = heartbeat_interval_s
        self._procs: list[tuple[Child, Path]] = []
        self.count = 0

    @property
    def hosts(self) -> list[str]:
        return [f"{self._prefix}{n}" for n in range(self.count)]

    def grow(self, total: int) -> None:
        """Starts processes for the agents numbered count..total-1."""
        while self.count < total:
            n = min(self._per_process, total - self.count)
            index = len(self._procs)
            stats = self._children.root / f"hollow-{index}.json"
            argv = [sys.executable, "-m", "bench.hollow", "--controlplane", self._addresses,
                    "--prefix", self._prefix, "--first", str(self.count), "--count", str(n),
                    "--stats", str(stats), "--heartbeat-interval", str(self._heartbeat_s),
                    *auth.join_args(self._addresses.split(",")[0]),
                    ]  # fmt: skip
            self._procs.append((self._children.start(f"hollow-{index}", argv), stats))
            self.count += n

    def stats(self) -> FleetStats:
        total = FleetStats()
        for _, path in self._procs:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # not written yet
            total.agents += data["agents"]
            total.connected += data["connected"]
            total.running += data["running"]
            total.counts.update(data["counts"])
            total.errors += data["errors"]
            total.hosts += data["hosts"]
        return total

    def processes(self) -> list[psutil.Process]:
        return [p for child, _ in self._procs if child.running() for p in tree(child.pid)]


class Stage:
    """One scenario size: `async with Stage(run, "burst-1000") as stage:` (see the module doc)."""

    def __init__(
        self, run: Run, name: str, *, replicas: int = 1, controlplane_args: Sequence[str] = ()
    ) -> None:
        self.run = run
        self.name = name
        self.dir = run.root / name
        self.children = Children(self.dir)
        self._replicas = replicas
        self._cp_args = list(controlplane_args)
        self._database: contextlib.AbstractAsyncContextManager[str] | None = None
        self.database_url = ""
        self.controlplanes: list[ControlPlane] = []
        self.fleets: list[HollowFleet] = []
        self.extra: dict[str, Child] = {}  # real agents and the like, measured on their own
        self._db: asyncpg.Connection | None = None
        self._channels: list[grpc.aio.Channel] = []
        self.api: Any = None  # FleetServiceStub on the first replica

    async def __aenter__(self) -> Stage:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._database = self.run.postgres.database("bench")
            self.database_url = await self._database.__aenter__()
            self._db = await asyncpg.connect(self.database_url)
            for n in range(self._replicas):
                cp = await ControlPlane.start(
                    self.children, name=f"controlplane-{n}", database_url=self.database_url,
                    args=self._cp_args,
                    tokens=self.controlplanes[0].state if self.controlplanes else None,
                )  # fmt: skip
                self.controlplanes.append(cp)
            self.api = self.client(self.controlplanes[0])
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for channel in self._channels:
                await channel.close()
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.close(timeout=5)
            await asyncio.to_thread(self.children.stop_all)
        finally:
            if self._database is not None:
                await self._database.__aexit__(None, None, None)

    def client(self, cp: ControlPlane) -> Any:
        """A FleetServiceStub on `cp` (its channel is closed with the stage)."""
        channel = auth.aio_channel(cp.grpc)
        self._channels.append(channel)
        return fleet_pb2_grpc.FleetServiceStub(channel)

    # Processes ------------------------------------------------------------------------------

    def hollow(self, agents: int, *, heartbeat_s: float = 5.0) -> HollowFleet:
        """A hollow fleet of `agents` (grow it later with `grow`), connected to every replica."""
        fleet = HollowFleet(
            self.children,
            addresses=[cp.grpc for cp in self.controlplanes],
            per_process=self.run.agents_per_process,
            heartbeat_interval_s=heartbeat_s,
        )
        fleet.grow(agents)
        self.fleets.append(fleet)
        return fleet

    def window(self) -> Window:
        """The groups a scenario's cost is reported by: the control plane(s), Postgres, the
        hollow fleet, any real agent, and the bench itself (the driver of the load)."""
        groups = {
            "controlplane": lambda: [p for cp in self.controlplanes for p in cp.processes()],
            "postgres": self.run.postgres.processes,
            "hollow": lambda: [p for f in self.fleets for p in f.processes()],
            "bench": lambda: [psutil.Process()],
        }
        for name, child in self.extra.items():
            groups[name] = _alone(child)
        return Window(groups)

    # Reading the database -----------------------------------------------------------------

    @property
    def db(self) -> asyncpg.Connection:
        assert self._db is not None, "the stage is not open"
        return self._db

    async def hosts_ready(self, n: int, *, within_s: float) -> None:
        """Waits until at least `n` hosts are connected and READY."""

        async def ready() -> bool:
            self.children.check_alive()
            got = await self.db.fetchval(
                "SELECT count(*) FROM host WHERE connected AND state = 'READY'"
            )
            return int(got) >= n

        await await_for(ready, within_s=within_s, what=f"{n} hosts connected and READY")

    async def instances(self) -> asyncpg.Record:
        """Counts of instances: all, RUNNING and ready; and the newest creation and report."""
        row = await self.db.fetchrow(
            """SELECT count(*) AS total,
                      count(*) FILTER (WHERE phase = 'RUNNING' AND ready) AS running,
                      max(created_at) AS created, max(observed_at) AS observed
               FROM instance"""
        )
        assert row is not None
        return row

    async def running(self, n: int, *, within_s: float, what: str) -> asyncpg.Record:
        """Waits until `n` instances exist and all are RUNNING and ready; the counts."""

        async def done() -> asyncpg.Record | None:
            self.children.check_alive()
            row = await self.instances()
            return row if row["running"] >= n and row["total"] == row["running"] else None

        return await await_for(done, within_s=within_s, what=what, interval=0.5)

    async def leader(self) -> tuple[int, int, datetime | None]:
        """The leading replica's pid (0: none yet), its epoch and when it took the lead."""
        row = await self.db.fetchrow("SELECT holder, epoch, acquired_at FROM leader")
        assert row is not None
        pid = row["holder"].rpartition(":")[2]
        return (int(pid) if pid.isdigit() else 0), int(row["epoch"]), row["acquired_at"]

    async def commits(self) -> int:
        """Transactions committed in this stage's database so far (pg_stat_database)."""
        got = await self.db.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(got or 0)


def _alone(child: Child) -> Callable[[], list[psutil.Process]]:
    """The child's own process, without its children (an agent's workloads are not its cost)."""
    return lambda: [psutil.Process(child.pid)] if child.running() else []
