"""The operator's paged lists on a real Postgres, through the real FleetService over gRPC:
every object once in order across pages, bounded pages, the filters, bad page sizes and
tokens refused naming the field, and a workload's status counted without its rows."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleetapi import serve_fleet
from plans import write_plan

from controlplane import paging
from controlplane.metrics import Metrics
from controlplane.status import StatusStore
from controlplane.store import Report, Store
from keel.model import Kind, Resources, Workload, WorkloadSpec
from keel.v1 import fleet_pb2


def _workload(name: str, *, replicas: int = 3, kind: Kind = Kind.SERVICE) -> Workload:
    spec = WorkloadSpec(command=("sleep", "1000"), resources=Resources(10, 16))
    return Workload(name=name, replicas=replicas, kind=kind, spec=spec)


async def _hosts(store: Store, n: int) -> list[str]:
    names = [f"h{i:03d}" for i in range(n)]
    for name in names:
        await store.register_host(
            name, labels={}, capacity=Resources(64000, 65536), agent_version="test"
        )
    return names


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Any]:
    """FleetService over the store, served in this process through the real interceptor."""
    async with serve_fleet(store, tmp_path, Metrics()) as stub:
        yield stub


async def _pages(call: Callable[..., Any], request: Any, field: str) -> list[list[Any]]:
    """Every page of a list call, in order."""
    pages = []
    while True:
        reply = await call(request, timeout=10)
        pages.append(list(getattr(reply, field)))
        if not reply.next_page_token:
            return pages
        request.page_token = reply.next_page_token


async def test_instances_come_once_each_in_order_across_pages(store: Store, api: Any) -> None:
    """Paged at 7, 30 instances of 3 workloads come as 7, 7, 7, 7, 2, in (workload, generation,
    id) order, each once; the default page holds them all; the filters page too."""
    hosts = await _hosts(store, 5)
    for name in ("a", "b", "c"):
        await store.apply_workload(_workload(name, replicas=10))
        await write_plan(store, name, create_on=[hosts[i % 5] for i in range(10)])
    pages = await _pages(
        api.ListInstances, fleet_pb2.ListInstancesRequest(page_size=7), "instances"
    )
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    listed = [(i.workload, i.generation, i.id) for p in pages for i in p]
    assert listed == sorted(listed) and len(set(listed)) == 30
    whole = await api.ListInstances(fleet_pb2.ListInstancesRequest(), timeout=10)
    assert [(i.workload, i.generation, i.id) for i in whole.instances] == listed
    assert whole.next_page_token == ""

    by_workload = await _pages(
        api.ListInstances, fleet_pb2.ListInstancesRequest(workload="b", page_size=4), "instances"
    )
    assert [len(p) for p in by_workload] == [4, 4, 2]
    assert {i.workload for p in by_workload for i in p} == {"b"}
    by_host = await _pages(
        api.ListInstances, fleet_pb2.ListInstancesRequest(host="h001", page_size=4), "instances"
    )
    on_h1 = [(i.workload, i.id) for p in by_host for i in p]
    assert len(on_h1) == 6 and on_h1 == sorted(on_h1)
    both = await api.ListInstances(
        fleet_pb2.ListInstancesRequest(workload="c", host="h001"), timeout=10
    )
    assert [(i.workload, i.host) for i in both.instances] == [("c", "h001")] * 2


async def test_an_instance_created_between_pages_is_never_listed_twice(
    store: Store, api: Any
) -> None:
    """Keyset pages: an instance placed while a client pages (before or after the page it has
    reached) never shifts a page, so nothing is listed twice or skipped from before."""
    [host] = await _hosts(store, 1)
    for name in ("a", "c"):
        await store.apply_workload(_workload(name, replicas=4))
        await write_plan(store, name, create_on=[host] * 4)
    first = await api.ListInstances(fleet_pb2.ListInstancesRequest(page_size=3), timeout=10)
    await store.apply_workload(_workload("b", replicas=1))
    await write_plan(store, "b", create_on=[host])
    request = fleet_pb2.ListInstancesRequest(page_size=3, page_token=first.next_page_token)
    rest = await _pages(api.ListInstances, request, "instances")
    ids = [i.id for i in first.instances] + [i.id for p in rest for i in p]
    assert len(ids) == len(set(ids)) == 9


async def test_hosts_and_workloads_page_by_name_with_their_counts(store: Store, api: Any) -> None:
    """Hosts and workloads page by name; each page carries each host's allocation and each
    workload's status, counted for the objects on the page alone."""
    hosts = await _hosts(store, 5)
    for n in range(5):
        await store.apply_workload(_workload(f"w{n}", replicas=2))
        await write_plan(store, f"w{n}", create_on=[hosts[n], hosts[n]])
    host_pages = await _pages(api.ListHosts, fleet_pb2.ListHostsRequest(page_size=2), "hosts")
    assert [[h.name for h in p] for p in host_pages] == [
        ["h000", "h001"],
        ["h002", "h003"],
        ["h004"],
    ]
    assert {h.instances for p in host_pages for h in p} == {2}
    assert {h.allocated.cpu_millis for p in host_pages for h in p} == {20}
    workload_pages = await _pages(
        api.ListWorkloads, fleet_pb2.ListWorkloadsRequest(page_size=3), "workloads"
    )
    assert [[w.name for w in p] for p in workload_pages] == [["w0", "w1", "w2"], ["w3", "w4"]]
    assert {(w.status.desired, w.status.instances) for p in workload_pages for w in p} == {(2, 2)}


async def test_a_workload_status_is_counted_from_its_instances(store: Store, api: Any) -> None:
    """get: desired, instances, running, ready and updated as the instances say; a daemon's
    desired count is the hosts its live instances are on; tombstones do not count."""
    hosts = await _hosts(store, 3)
    await store.apply_workload(_workload("web", replicas=3))
    placed = (await write_plan(store, "web", create_on=hosts)).created
    await StatusStore(store.pool).write_reports(
        [
            Report(hosts[0], placed[0], "RUNNING", 10, 0, "", "", "", {}, True, False, None),
            Report(hosts[1], placed[1], "RUNNING", 11, 0, "", "", "", {}, False, False, None),
        ]
    )
    web = await api.GetWorkload(fleet_pb2.GetWorkloadRequest(name="web"), timeout=10)
    s = web.status
    assert (s.desired, s.instances, s.running, s.ready, s.updated) == (3, 3, 2, 1, 3)
    await write_plan(store, "web", remove=[placed[2]])
    web = await api.GetWorkload(fleet_pb2.GetWorkloadRequest(name="web"), timeout=10)
    assert web.status.instances == 2

    await store.apply_workload(_workload("agent", kind=Kind.DAEMON))
    await write_plan(store, "agent", create_on=hosts[:2])
    daemon = await api.GetWorkload(fleet_pb2.GetWorkloadRequest(name="agent"), timeout=10)
    assert (daemon.status.desired, daemon.status.instances) == (2, 2)


def _token(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            fleet_pb2.ListInstancesRequest(page_size=-1),
            "page_size: must be >= 0, got -1",
        ),
        (
            fleet_pb2.ListInstancesRequest(page_size=paging.MAX_PAGE_SIZE + 1),
            f"page_size: must be <= {paging.MAX_PAGE_SIZE}, got {paging.MAX_PAGE_SIZE + 1}",
        ),
        (fleet_pb2.ListInstancesRequest(page_token="not a token"), "page_token: not a token"),
        (fleet_pb2.ListInstancesRequest(page_token="%%%"), "page_token: not a token"),
        (fleet_pb2.ListInstancesRequest(page_token="x" * 5000), "page_token: not a token"),
        # A token of another list, a key of the wrong shape, values Postgres cannot take.
        (
            fleet_pb2.ListInstancesRequest(page_token=_token({"list": "hosts", "after": ["h"]})),
            "page_token: not a token",
        ),
        (
            fleet_pb2.ListInstancesRequest(
                page_token=_token({"list": "instances", "after": ["a", True, "x"]})
            ),
            "page_token: not a token",
        ),
        (
            fleet_pb2.ListInstancesRequest(
                page_token=_token({"list": "instances", "after": ["a", 2**64, "x"]})
            ),
            "page_token: not a token",
        ),
        (
            fleet_pb2.ListInstancesRequest(
                page_token=_token({"list": "instances", "after": ["a\x00", 1, "x"]})
            ),
            "page_token: not a token",
        ),
        (
            fleet_pb2.ListInstancesRequest(
                page_token=_token({"list": "instances", "after": ["\ud800", 1, "x"]})
            ),
            "page_token: not a token",
        ),
        (fleet_pb2.ListHostsRequest(page_size=100_000), "page_size: must be <= 1000"),
        (
            fleet_pb2.ListWorkloadsRequest(page_token=_token({"list": "workloads", "after": []})),
            "page_token: not a token",
        ),
    ],
)
async def test_a_bad_page_request_is_invalid_argument_naming_the_field(
    store: Store, api: Any, request_: Any, message: str
) -> None:
    """A page size out of range or a token this list did not give: INVALID_ARGUMENT naming
    page_size or page_token and the rule."""
    call = {
        fleet_pb2.ListInstancesRequest: api.ListInstances,
        fleet_pb2.ListHostsRequest: api.ListHosts,
        fleet_pb2.ListWorkloadsRequest: api.ListWorkloads,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request_, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(message)


async def test_stuck_lists_only_what_is_stuck(store: Store, api: Any) -> None:
    """ListStuck answers from the instances and workloads marked stuck, and only those."""
    [host] = await _hosts(store, 1)
    await store.apply_workload(_workload("web", replicas=2))
    a, b = (await write_plan(store, "web", create_on=[host, host])).created
    await store.pool.execute(
        """UPDATE instance SET stuck_reason = 'CRASH_LOOP', stuck_since = now(),
                  stuck_message = 'exit 1' WHERE id = $1""",
        a,
    )
    reply = await api.ListStuck(fleet_pb2.ListStuckRequest(), timeout=10)
    assert [(o.object, o.stuck.reason) for o in reply.objects] == [(f"instance/{a}", "CRASH_LOOP")]
    assert b not in {o.object for o in reply.objects}
