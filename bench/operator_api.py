"""Scenario 6's load: what an operator does while scenario 3's changes run.

`Prober` calls the operator API on its own channel, as `keelctl` would, until stopped: a get
(GetWorkload) and a describe (GetWorkload then the workload's instances, what
`keelctl describe workload` does) of a random workload, alternately, every `interval_s`;
a list of every instance every `list_every_s`, page after page as keelctl reads it (the time
of the whole list, and the slowest page: `list_all`); and `keelctl get hosts` as a whole process
(start-up, imports, the call, the table) a few times spread over the run. Latencies are as the
client sees them, in seconds. `bench.churn` runs it and turns the samples into figures, and
uses `list_all` once more on a fleet topped up to the issue's 20,000 instances.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from bench import auth
from bench.procs import BIN, BenchError
from keel.v1 import fleet_pb2, fleet_pb2_grpc

CALL_TIMEOUT_S = 30.0
# What keelctl asks for per page of a list (keel.ctl.commands.PAGE_SIZE): the most the control
# plane gives.
PAGE_SIZE = 1000


@dataclass(frozen=True)
class Listed:
    """One list of every instance: how many, the whole time, the slowest page (seconds)."""

    instances: int
    seconds: float
    slowest_page_s: float


async def list_all(stub: fleet_pb2_grpc.FleetServiceStub) -> Listed:
    """Lists every instance page after page, as keelctl does."""
    started = time.monotonic()
    request = fleet_pb2.ListInstancesRequest(page_size=PAGE_SIZE)
    count, slowest = 0, 0.0
    while True:
        page_started = time.monotonic()
        reply = await stub.ListInstances(request, timeout=CALL_TIMEOUT_S)
        slowest = max(slowest, time.monotonic() - page_started)
        count += len(reply.instances)
        if not reply.next_page_token:
            return Listed(count, time.monotonic() - started, slowest)
        request.page_token = reply.next_page_token


class Prober:
    def __init__(
        self,
        address: str,
        workloads: Sequence[str],
        *,
        interval_s: float = 0.1,
        list_every_s: float = 3.0,
        keelctl_every_s: float = 5.0,
    ) -> None:
        self._address = address
        self._workloads = list(workloads)
        self._interval_s = interval_s
        self._list_every_s = list_every_s
        self._keelctl_every_s = keelctl_every_s
        self.samples: dict[str, list[float]] = {
            "get": [],
            "describe": [],
            "list": [],
            "page": [],
            "keelctl": [],
        }
        self.listed = 0  # instances in the last full list
        self.errors: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        async with auth.aio_channel(self._address) as channel:
            stub = fleet_pb2_grpc.FleetServiceStub(channel)
            loops = [
                asyncio.create_task(self._gets(stub, stop), name="probe gets"),
                asyncio.create_task(self._lists(stub, stop), name="probe lists"),
                asyncio.create_task(self._keelctl(stop), name="probe keelctl"),
            ]
            try:
                await asyncio.gather(*loops)
            finally:
                for t in loops:
                    t.cancel()
        if self.errors:
            raise BenchError(f"{len(self.errors)} operator calls failed, first: {self.errors[0]}")

    async def _every(self, stop: asyncio.Event, seconds: float) -> bool:
        """Waits `seconds` or until stopped; False once stopped."""
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _gets(self, stub: fleet_pb2_grpc.FleetServiceStub, stop: asyncio.Event) -> None:
        describe = False
        while await self._every(stop, self._interval_s):
            name = random.choice(self._workloads)
            started = time.monotonic()
            try:
                await stub.GetWorkload(
                    fleet_pb2.GetWorkloadRequest(name=name), timeout=CALL_TIMEOUT_S
                )
                if describe:
                    await stub.ListInstances(
                        fleet_pb2.ListInstancesRequest(workload=name), timeout=CALL_TIMEOUT_S
                    )
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            self.samples["describe" if describe else "get"].append(time.monotonic() - started)
            describe = not describe

    async def _lists(self, stub: fleet_pb2_grpc.FleetServiceStub, stop: asyncio.Event) -> None:
        # The first one at once: a short run still gets a sample.
        wait = 0.0
        while await self._every(stop, wait):
            wait = self._list_every_s
            try:
                listed = await list_all(stub)
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            self.samples["list"].append(listed.seconds)
            self.samples["page"].append(listed.slowest_page_s)
            self.listed = listed.instances

    async def _keelctl(self, stop: asyncio.Event) -> None:
        # The first one at once: a short run still gets a sample.
        wait = 0.0
        while await self._every(stop, wait):
            wait = self._keelctl_every_s
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "keelctl"), "--controlplane", self._address,
                *auth.keelctl_args(self._address), "get", "hosts",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            if proc.returncode != 0:
                self.errors.append(f"keelctl get hosts: {err.decode(errors='replace').strip()}")
                continue
            self.samples["keelctl"].append(time.monotonic() - started)
