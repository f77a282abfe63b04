"""keelctl's host verbs: `cordon` and `uncordon`, and the host selection `drain` shares.

A cordon marks hosts unschedulable in one call, which the control plane carries out in one
transaction: all the hosts or none, so a maintenance wave never races the scheduler. Both verbs
are safe to repeat: a host already cordoned (or schedulable) is reported as such and left as it
is. Argument parsing lives in `keel.ctl.args`, formatting in `keel.ctl.output`.
"""

from __future__ import annotations

from typing import Any

from keel.ctl import output
from keel.ctl.args import CtlError
from keel.v1 import fleet_pb2


def selection(ctx: Any) -> dict[str, Any]:
    """The request's `hosts` and `selector`, from HOST... and --selector."""
    hosts = list(ctx.args.hosts)
    selector: dict[str, str] = {}
    for given in ctx.args.selector or ():
        for key, value in given.items():
            if selector.get(key, value) != value:
                raise CtlError(f"--selector: {key!r} given twice with different values")
            selector[key] = value
    if not hosts and not selector:
        raise CtlError(f"{ctx.args.command}: name at least one HOST, or give --selector k=v")
    return {"hosts": hosts, "selector": selector}


def cmd_cordon(ctx: Any) -> str:
    request = fleet_pb2.CordonRequest(**selection(ctx), reason=ctx.args.reason or "")
    resp = ctx.stub.Cordon(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(resp)
    return output.cordon_lines(resp.hosts, resp.changed, verb="cordoned")


def cmd_uncordon(ctx: Any) -> str:
    request = fleet_pb2.UncordonRequest(**selection(ctx))
    resp = ctx.stub.Uncordon(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(resp)
    return output.cordon_lines(resp.hosts, resp.changed, verb="uncordoned")
