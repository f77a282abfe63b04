"""keelctl's operations: `drain` (and its `--dry-run`), `ops`, `op get`, `op watch` and
`op cancel`.

A drain is a durable operation in the control plane: without `--wait` keelctl prints its id and
how to watch it, and a keelctl that dies changes nothing. `--wait` and `op watch` follow the
operation's watch stream (`keel.ctl.progress` renders it: a progress bar on a terminal, plain
lines otherwise) and exit 0 when it succeeds, 1 when it fails, is cancelled or misses its
deadline. Every result names the operation's runbook. Argument parsing lives in
`keel.ctl.args`, tables in `keel.ctl.output`.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc

from keel.convert import from_ts
from keel.ctl import operation_output, output, progress
from keel.ctl.args import WatchLost
from keel.ctl.hostops import selection
from keel.v1 import fleet_pb2

# Exit statuses of a command that waits for an operation.
SUCCEEDED = 0
NOT_SUCCEEDED = 1


def cmd_drain(ctx: Any) -> str | int:
    args = ctx.args
    hosts = selection(ctx)
    if args.dry_run:
        plan_request = fleet_pb2.PlanDrainRequest(
            **hosts, max_parallel=args.max_parallel, ignore_daemons=args.ignore_daemons
        )
        plan = ctx.stub.PlanDrain(plan_request, timeout=ctx.timeout)
        return output.to_json(plan) if ctx.json else operation_output.drain_plan_text(plan)
    request = fleet_pb2.DrainRequest(
        **hosts,
        deadline_ms=args.deadline_ms,
        on_deadline=args.on_deadline,
        max_parallel=args.max_parallel,
        ignore_daemons=args.ignore_daemons,
        reason=args.reason or "",
    )
    resp = ctx.stub.Drain(request, timeout=ctx.timeout)
    op = resp.operation
    if args.wait:
        return watch(ctx, op.id)
    if ctx.json:
        return output.to_json(resp)
    if resp.created:
        head = f"drain {op.id} started: {', '.join(op.hosts)} cordoned, moving everything off"
    else:
        head = f"{', '.join(op.hosts)} already being drained by {op.id} ({op.state})"
    return (
        f"{head}\nwatch it:  keelctl op watch {op.id}\ncancel it: keelctl op cancel {op.id}\n"
        f"runbook:   {op.runbook}"
    )


def cmd_ops(ctx: Any) -> str:
    resp = ctx.stub.ListOperations(
        fleet_pb2.ListOperationsRequest(all=ctx.args.all), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    if not resp.operations:
        print(
            "No operations." if ctx.args.all else "No running operations (--all lists every one).",
            file=sys.stderr,
        )
        return ""
    return operation_output.operations_table(resp.operations, now=ctx.now)


def cmd_op(ctx: Any) -> str | int:
    verb = ctx.args.op_command
    op_id = ctx.args.id
    if verb == "watch":
        return watch(ctx, op_id)
    if verb == "cancel":
        request = fleet_pb2.CancelOperationRequest(id=op_id, uncordon=ctx.args.uncordon)
        op = ctx.stub.CancelOperation(request, timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(op)
        return f"{op.id} {op.state}: {op.message}\nrunbook: {op.runbook}"
    op = ctx.stub.GetOperation(fleet_pb2.GetOperationRequest(id=op_id), timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(op)
    return operation_output.describe_operation(op, now=ctx.now)


def watch(ctx: Any, op_id: str) -> int:
    """Follows the operation until it ends; 0 if it succeeded, 1 otherwise. A stream cut off
    by its replica going away raises WatchLost, so keelctl goes on watching on another."""
    stream = ctx.stub.WatchOperation(fleet_pb2.WatchOperationRequest(id=op_id), timeout=None)
    last = None
    view = progress.view(json=ctx.json)
    try:
        with view:
            for op in stream:
                last = op
                view.update(op, now=from_ts(op.created_at))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        raise WatchLost(op_id) from e
    except KeyboardInterrupt:
        stream.cancel()
        print(
            f"stopped watching; {op_id} goes on (keelctl op watch {op_id})",
            file=sys.stderr,
        )
        return NOT_SUCCEEDED
    if last is None:
        return NOT_SUCCEEDED
    view.finish(last)
    return SUCCEEDED if last.state == "SUCCEEDED" else NOT_SUCCEEDED
