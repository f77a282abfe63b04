"""keelctl's object commands: `apply`, `get`, `describe` and `delete`.

Each command takes a `Context` (the stub, the parsed arguments, the clock) and returns the text
to print; formatting lives in `keel.ctl.output`. The control plane validates manifests
(`keel.spec.parse_workload`), so `apply` sends the document as it was written
(`keel.ctl.documents` reads it). The incident commands (`stuck`, `events`, `logs`) are in
`keel.ctl.observe`; `keel.ctl.main` dispatches.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from keel.ctl import output
from keel.ctl.args import CANONICAL, CtlError
from keel.v1 import fleet_pb2

# Objects asked for per page of a list: the most the control plane gives in one answer
# (controlplane.paging.MAX_PAGE_SIZE), so a long list takes the fewest round trips.
PAGE_SIZE = 1000


class Context:
    """What a command needs: the stub, the parsed arguments, and the clock for ages."""

    def __init__(self, stub: Any, args: argparse.Namespace, *, now: datetime) -> None:
        self.stub = stub
        self.args = args
        self.now = now
        self.timeout: float = args.timeout
        self.json: bool = args.output == "json"


def cmd_apply(ctx: Context, manifest: object) -> str:
    # `default=str` keeps YAML's dates and such sendable; the server says if they are wrong.
    body = json.dumps(manifest, default=str)
    resp = ctx.stub.ApplyWorkload(
        fleet_pb2.ApplyWorkloadRequest(
            manifest_json=body,
            reason=ctx.args.reason,
            override_freeze=ctx.args.override_freeze,
        ),
        timeout=ctx.timeout,
    )
    if ctx.json:
        return output.to_json(resp)
    result = resp.result or "configured"
    return f"workload/{resp.workload.name} {result} (generation {resp.workload.generation})"


def cmd_get(ctx: Context) -> str:
    kind = CANONICAL[ctx.args.resource]
    if kind != "instance" and (ctx.args.workload or ctx.args.host):
        raise CtlError("--workload and --host filter instances only")
    limit = ctx.args.limit
    items: list[Any]
    if kind == "workload":
        request: Any = fleet_pb2.ListWorkloadsRequest()
        items = every_page(ctx, ctx.stub.ListWorkloads, request, "workloads", limit=limit)
        whole: Message = fleet_pb2.ListWorkloadsResponse(workloads=items)
    elif kind == "host":
        request = fleet_pb2.ListHostsRequest()
        items = every_page(ctx, ctx.stub.ListHosts, request, "hosts", limit=limit)
        whole = fleet_pb2.ListHostsResponse(hosts=items)
    else:
        request = fleet_pb2.ListInstancesRequest(
            workload=ctx.args.workload or "", host=ctx.args.host or ""
        )
        items = every_page(ctx, ctx.stub.ListInstances, request, "instances", limit=limit)
        whole = fleet_pb2.ListInstancesResponse(instances=items)
    if ctx.json:
        return output.to_json(whole)
    if not items:
        # Like kubectl: nothing on stdout, a note on stderr, success.
        print(f"No {kind}s found.", file=sys.stderr)
        return ""
    if kind == "workload":
        return output.workloads_table(items, now=ctx.now)
    if kind == "host":
        return output.hosts_table(items, now=ctx.now)
    return output.instances_table(items, now=ctx.now)


def every_page(ctx: Context, call: Any, request: Any, field: str, *, limit: int = 0) -> list[Any]:
    """Every object a paged list call answers in its `field` (the first `limit` of them when
    limit > 0), page after page: an empty next_page_token ends the list."""
    items: list[Any] = []
    while True:
        request.page_size = PAGE_SIZE if limit <= 0 else min(PAGE_SIZE, limit - len(items))
        resp = call(request, timeout=ctx.timeout)
        items.extend(getattr(resp, field))
        if not resp.next_page_token or 0 < limit <= len(items):
            return items
        request.page_token = resp.next_page_token


def cmd_describe(ctx: Context) -> str:
    kind = CANONICAL[ctx.args.resource]
    name = ctx.args.name
    if kind == "workload":
        w = ctx.stub.GetWorkload(fleet_pb2.GetWorkloadRequest(name=name), timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(w)
        insts = _instances(ctx, workload=name)
        request = fleet_pb2.GetRolloutStatusRequest(workload=name)
        rollout = ctx.stub.GetRolloutStatus(request, timeout=ctx.timeout)
        return output.describe_workload(w, insts, now=ctx.now, rollout=rollout)
    if kind == "host":
        h = ctx.stub.GetHost(fleet_pb2.GetHostRequest(name=name), timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(h)
        return output.describe_host(h, _instances(ctx, host=name), now=ctx.now)
    i = ctx.stub.GetInstance(fleet_pb2.GetInstanceRequest(id=name), timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(i)
    return output.describe_instance(i, now=ctx.now)


def _instances(ctx: Context, *, workload: str = "", host: str = "") -> list[Any]:
    request = fleet_pb2.ListInstancesRequest(workload=workload, host=host)
    return every_page(ctx, ctx.stub.ListInstances, request, "instances")


def cmd_delete(ctx: Context) -> str:
    if CANONICAL[ctx.args.resource] == "host":
        return _delete_host(ctx)
    if ctx.args.force:
        raise CtlError("--force: only `delete host` takes it")
    resp = ctx.stub.DeleteWorkload(
        fleet_pb2.DeleteWorkloadRequest(name=ctx.args.name), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    return f"workload/{ctx.args.name} deleted (its instances are being stopped and removed)"


def _delete_host(ctx: Context) -> str:
    request = fleet_pb2.DeleteHostRequest(name=ctx.args.name, force=ctx.args.force)
    resp = ctx.stub.DeleteHost(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(resp)
    removed = list(resp.removed_instances)
    if not removed:
        return f"host/{resp.name} deleted"
    return f"host/{resp.name} deleted with {len(removed)} instance(s): " + ", ".join(removed)
