"""keelctl's canary verbs: `rollout promote WORKLOAD` and `rollout abort WORKLOAD`.

A workload whose manifest sets `rollout: {canary: N}` starts N instances of a new revision
beside its old ones and waits. `promote` lets the rollout continue (the canaries count as
updated replicas); `abort` removes the canaries and returns to the revision they ran beside,
whose instances keep running. Both are FleetService calls (PromoteRollout, AbortRollout) that
answer the workload's rollout, printed here; `add_verbs` registers them under `keelctl rollout`
(`keel.ctl.args`), and `keel.ctl.main` dispatches the verbs to `cmd_canary`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from keel.ctl import output
from keel.v1 import fleet_pb2

VERBS = {
    "promote": "let a canary rollout continue: its canaries count as updated replicas and the "
    "old instances are replaced within the budget",
    "abort": "remove a canary rollout's canaries and return to the revision they ran beside "
    "(its instances keep running)",
}


def add_verbs(rollout: Any, add_globals: Callable[..., None]) -> None:
    """Adds promote and abort to the `rollout` command's sub-parsers."""
    for verb, text in VERBS.items():
        p: argparse.ArgumentParser = rollout.add_parser(verb, help=text)
        add_globals(p, on_subcommand=True)
        p.add_argument("workload", metavar="WORKLOAD")
        p.add_argument(
            "--reason",
            default="",
            metavar="TEXT",
            help="why (kept in the workload's events with who did it)",
        )


def cmd_canary(ctx: Any) -> str:
    verb = ctx.args.rollout_command
    request = fleet_pb2.RolloutActionRequest(workload=ctx.args.workload, reason=ctx.args.reason)
    call = ctx.stub.PromoteRollout if verb == "promote" else ctx.stub.AbortRollout
    status = call(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(status)
    return status_lines(status, verb=verb)


def status_lines(status: fleet_pb2.RolloutStatus, *, verb: str) -> str:
    """What promote and abort print: what was done, the rollout now, and how to follow it."""
    done = "promoted" if verb == "promote" else "canaries aborted"
    return "\n".join(
        [
            f"workload/{status.workload} {done}: revision {status.revision} {status.state}",
            f"  {status.message}",
            f"  updated {status.updated}/{status.desired} ({status.ready} ready), "
            f"old remaining {status.old_remaining}",
            f"  follow it: keelctl rollout status {status.workload}",
        ]
    )
