"""Desired changes as a benchmark makes them: manifests, applies at a steady rate, and pairing
each change with the instance that carried it out.

`apply_changes` scales workloads up one replica at a time, `rate` per second, each apply sent
at its scheduled time whatever the latency of the ones before; it returns each change's write
time (database time, `updated_at` in the answer) and every apply's latency as the client saw
it. `pair_changes` matches them with the instances made afterwards. Used by
`bench.convergence` (change to placement) and `bench.churn` (change to RUNNING).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from bench import auth
from bench.procs import BenchError
from keel.v1 import fleet_pb2, fleet_pb2_grpc

# Every bench workload: a long `sleep` (the fake and hollow drivers run nothing), no health
# check, ready at once, a small request so placement does its capacity arithmetic.
SPEC: dict[str, Any] = {
    "command": ["sleep", "3600"],
    "min_ready": "0s",
    "stop_grace": "1s",
    "resources": {"cpu": "10m", "memory": "16Mi"},
}


def manifest(
    name: str, replicas: int, *, env: Mapping[str, str] | None = None, resources: bool = True
) -> str:
    spec = dict(SPEC)
    if not resources:
        del spec["resources"]
    if env:
        spec["env"] = dict(env)
    return json.dumps({"name": name, "replicas": replicas, "spec": spec})


@dataclass
class Changes:
    """What `apply_changes` did: per workload, the write time of each change, in order."""

    written: dict[str, list[datetime]]
    latencies_s: list[float] = field(default_factory=list)
    late_s: float = 0.0  # how far behind schedule the last apply finished

    @property
    def total(self) -> int:
        return sum(len(w) for w in self.written.values())


async def apply_changes(
    address: str,
    replicas: Mapping[str, int],
    *,
    rate: float,
    duration_s: float,
    resources: bool = True,
) -> Changes:
    """Scales the workloads (at their current `replicas`) up one replica at a time, round-robin,
    `rate` times a second for `duration_s`."""
    names = sorted(replicas)
    current = dict(replicas)
    written: dict[str, list[tuple[int, datetime]]] = {name: [] for name in names}
    latencies: list[float] = []
    failures: list[str] = []
    async with auth.aio_channel(address) as channel:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)

        async def one(name: str, target: int) -> None:
            body = manifest(name, target, resources=resources)
            started = time.monotonic()
            try:
                reply = await stub.ApplyWorkload(
                    fleet_pb2.ApplyWorkloadRequest(manifest_json=body), timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{name}: {exc.code().name} {exc.details()}")
                return
            latencies.append(time.monotonic() - started)
            written[name].append((target, reply.workload.updated_at.ToDatetime(tzinfo=UTC)))

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            name = names[n % len(names)]
            current[name] += 1
            tasks.append(asyncio.create_task(one(name, current[name])))
        await asyncio.gather(*tasks)
        late = loop.time() - start - duration_s
    if failures:
        raise BenchError(f"{len(failures)} applies failed, first: {failures[0]}")
    # Ordered by the replica count each asked for, which is the order they were made.
    by_name = {name: [at for _, at in sorted(w)] for name, w in written.items()}
    return Changes(by_name, latencies, max(0.0, late))


def pair_changes(
    written: Mapping[str, Sequence[datetime]],
    instances: Iterable[tuple[str, datetime, datetime | None]],
    *,
    complete: bool = True,
) -> list[float]:
    """Seconds from each change's write to when the instance that carried it out got to the
    point measured: `instances` are (workload, created_at, reached_at); a workload's instances
    made after its first change, in creation order, pair with its changes in order.

    `complete=False` counts a change whose instance is missing or has not got there (reached
    None) as infinitely slow instead of failing: a run that gave up waiting still reports.
    """
    by_workload: dict[str, list[tuple[datetime, datetime | None]]] = {}
    for workload, created, reached in instances:
        by_workload.setdefault(workload, []).append((created, reached))
    seconds: list[float] = []
    for name, writes in written.items():
        if not writes:
            continue
        made = sorted((x for x in by_workload.get(name, []) if x[0] >= writes[0]), key=_created)
        if complete and len(made) != len(writes):
            raise BenchError(f"{name}: {len(writes)} changes but {len(made)} new instances")
        for n, w in enumerate(writes):
            reached = made[n][1] if n < len(made) else None
            if reached is None and complete:
                raise BenchError(f"{name}: an instance made for a change never got there")
            seconds.append(math.inf if reached is None else (reached - w).total_seconds())
    return seconds


def _created(x: tuple[datetime, datetime | None]) -> datetime:
    return x[0]
