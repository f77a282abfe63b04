"""Convergence SLIs measured on a running fleet (`make run` in another terminal).

    .venv/bin/python -m bench.slis [--controlplane 127.0.0.1:7443] [--metrics 127.0.0.1:9464]

1. 100 creates: one workload of N replicas (`sleep`, no health check) applied at once; prints
   the wall time from the apply to every replica RUNNING and the median / p99 of
   keel_convergence_seconds{change="create"} over those creates (histogram_quantile's linear
   interpolation over the scraped bucket deltas, as Prometheus would compute it).
2. Crash loop to `keelctl stuck`: a workload whose command exits 1 at once; prints the time
   from its first exit (as observed) to ListStuck showing CRASH_LOOP, and from the apply.

Both workloads are deleted at the end. Figures depend on the agents' settings: with the
defaults a crash loop is the second exit, 10 s (the first back-off) after the first.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from bench import auth
from keel.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

T = TypeVar("T")


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def buckets(samples: dict[str, float], change: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of keel_convergence_seconds for one change."""
    prefix = "keel_convergence_seconds_bucket{"
    found = []
    for key, value in samples.items():
        if key.startswith(prefix) and f'change="{change}"' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            found.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(found)


def quantile(
    q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> float:
    """histogram_quantile over the increase between two scrapes (Prometheus's interpolation)."""
    delta = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = delta[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower_bound
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return float("nan")


def wait_for(predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def apply(stub: fleet_pb2_grpc.FleetServiceStub, doc: dict[str, object]) -> None:
    stub.ApplyWorkload(fleet_pb2.ApplyWorkloadRequest(manifest_json=json.dumps(doc)), timeout=10)


def instances(stub: fleet_pb2_grpc.FleetServiceStub, workload: str) -> list[types_pb2.Instance]:
    request = fleet_pb2.ListInstancesRequest(workload=workload)
    return list(stub.ListInstances(request, timeout=10).instances)


def delete(stub: fleet_pb2_grpc.FleetServiceStub, name: str) -> None:
    stub.DeleteWorkload(fleet_pb2.DeleteWorkloadRequest(name=name), timeout=10)
    wait_for(lambda: not instances(stub, name) or None, timeout=120, what=f"{name} removed")


def measure_creates(stub: fleet_pb2_grpc.FleetServiceStub, metrics: str, n: int) -> None:
    name = "bench-creates"
    before = scrape(metrics)
    start = time.monotonic()
    apply(
        stub,
        {
            "name": name,
            "replicas": n,
            "max_surge": 1,
            "spec": {"command": ["sleep", "3600"], "min_ready": "0s", "stop_grace": "1s"},
        },
    )

    def all_running() -> bool:
        got = instances(stub, name)
        return len(got) == n and all(
            i.status.phase == types_pb2.PHASE_RUNNING and i.status.ready for i in got
        )

    wait_for(all_running, timeout=300, what=f"{n} replicas RUNNING")
    wall = time.monotonic() - start

    def observed() -> dict[str, float] | None:
        after = scrape(metrics)
        done = after.get('keel_convergence_seconds_count{change="create"}', 0) - before.get(
            'keel_convergence_seconds_count{change="create"}', 0
        )
        return after if done >= n else None

    after = wait_for(observed, timeout=60, what=f"{n} creates in keel_convergence_seconds")
    b, a = buckets(before, "create"), buckets(after, "create")
    print(f"{n} creates: all RUNNING {wall:.2f}s after the apply")
    print(
        f"keel_convergence_seconds{{change=create}}: median {quantile(0.5, b, a) * 1000:.0f} ms, "
        f"p99 {quantile(0.99, b, a) * 1000:.0f} ms"
    )
    delete(stub, name)


def measure_crash_loop(stub: fleet_pb2_grpc.FleetServiceStub) -> None:
    name = "bench-crashloop"
    start = time.monotonic()
    apply(
        stub,
        {
            "name": name,
            "replicas": 1,
            "spec": {"command": ["python3", "-c", "import sys; sys.exit(1)"]},
        },
    )

    def first_exit() -> float | None:
        got = instances(stub, name)
        return time.monotonic() if got and got[0].status.last_exit else None

    exited = wait_for(first_exit, timeout=60, what="the first exit")

    def stuck() -> float | None:
        resp = stub.ListStuck(fleet_pb2.ListStuckRequest(), timeout=10)
        hit = any(
            o.object.startswith(f"instance/{name}-") and o.stuck.reason == "CRASH_LOOP"
            for o in resp.objects
        )
        return time.monotonic() if hit else None

    shown = wait_for(stuck, timeout=120, what="keelctl stuck showing CRASH_LOOP")
    print(
        f"crash loop: CRASH_LOOP in keelctl stuck {shown - exited:.2f}s after the first exit "
        f"({shown - start:.2f}s after the apply)"
    )
    delete(stub, name)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.slis", description=__doc__.splitlines()[0])
    p.add_argument("--controlplane", default="127.0.0.1:7443")
    p.add_argument("--metrics", default="127.0.0.1:9464", help="the control plane's /metrics")
    p.add_argument("--creates", type=int, default=100)
    args = p.parse_args()
    with auth.channel(args.controlplane) as channel:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        measure_creates(stub, args.metrics, args.creates)
        measure_crash_loop(stub)


if __name__ == "__main__":
    main()
