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

from keel.ctl import output
from keel.ctl.args import CANONICAL, CtlError
from keel.v1 import fleet_pb2


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
        fleet_pb2.ApplyWorkloadRequest(manifest_json=body), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    result = resp.result or "configured"
    return f"workload/{resp.workload.name} {result} (generation {resp.workload.generation})"


def cmd_get(ctx: Context) -> str:
    kind = CANONICAL[ctx.args.resource]
    if kind != "instance" and (ctx.args.workload or ctx.args.host):
        raise CtlError("--workload and --host filter instances only")
    resp: Any
    items: list[Any]
    if kind == "workload":
        resp = ctx.stub.ListWorkloads(fleet_pb2.ListWorkloadsRequest(), timeout=ctx.timeout)
        items = list(resp.workloads)
    elif kind == "host":
        resp = ctx.stub.ListHosts(fleet_pb2.ListHostsRequest(), timeout=ctx.timeout)
        items = list(resp.hosts)
    else:
        request = fleet_pb2.ListInstancesRequest(
            workload=ctx.args.workload or "", host=ctx.args.host or ""
        )
        resp = ctx.stub.ListInstances(request, timeout=ctx.timeout)
        items = list(resp.instances)
    if ctx.json:
        return output.to_json(resp)
    if not items:
        # Like kubectl: nothing on stdout, a note on stderr, success.
        print(f"No {kind}s found.", file=sys.stderr)
        return ""
    if kind == "workload":
        return output.workloads_table(items, now=ctx.now)
    if kind == "host":
        return output.hosts_table(items, now=ctx.now)
    return output.instances_table(items, now=ctx.now)


def cmd_describe(ctx: Context) -> str:
    kind = CANONICAL[ctx.args.resource]
    name = ctx.args.name
    if kind == "workload":
        w = ctx.stub.GetWorkload(fleet_pb2.GetWorkloadRequest(name=name), timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(w)
        insts = _instances(ctx, workload=name)
        return output.describe_workload(w, insts, now=ctx.now)
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
    return list(ctx.stub.ListInstances(request, timeout=ctx.timeout).instances)


def cmd_delete(ctx: Context) -> str:
    resp = ctx.stub.DeleteWorkload(
        fleet_pb2.DeleteWorkloadRequest(name=ctx.args.name), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    return f"workload/{ctx.args.name} deleted (its instances are being stopped and removed)"
