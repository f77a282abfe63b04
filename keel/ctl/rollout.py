"""keelctl's rollout commands: `rollout history|status|pause|resume|undo WORKLOAD`.

Each verb is one entry of `VERBS` (the command line is `keel.ctl.args.rollout_verb`), taking
the `Context` and returning the text to print or an exit status. `status --wait` reads
GetRolloutStatus every `--interval` until the rollout ends: 0 when it is complete, 1 when it
failed, was aborted or rolled back (a newer revision that returns to an earlier spec: Keel's
automatic rollback or an operator's undo), or `--wait-timeout` passed; a newer revision that is
not a rollback is followed. Without --wait, `status` exits 1 too when the rollout has failed or
was rolled back, so a script can check either way. Text is `keel.ctl.rollout_output`; the
progress while waiting is `keel.ctl.rollout_progress`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from keel.ctl import canary, output, rollout_output, rollout_progress
from keel.v1 import fleet_pb2

SUCCEEDED = 0
NOT_SUCCEEDED = 1

# While waiting, a read that fails for these is tried again at the next interval: the
# rollout goes on in the control plane whatever keelctl sees.
_PASSING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

T = TypeVar("T")


def cmd_rollout(ctx: Any) -> str | int:
    return VERBS[ctx.args.rollout_command](ctx)


def cmd_history(ctx: Any) -> str | int:
    request = fleet_pb2.GetRolloutHistoryRequest(workload=ctx.args.workload)
    reply = ctx.stub.GetRolloutHistory(request, timeout=ctx.timeout)
    if ctx.args.revision:
        return _one_revision(ctx, reply.revisions)
    if ctx.json:
        return output.to_json(reply)
    return rollout_output.history_table(reply.revisions, now=ctx.now)


def _one_revision(ctx: Any, revisions: Any) -> str | int:
    """`history --revision N`: that revision in full, or exit 1 naming what is kept."""
    name, number = ctx.args.workload, ctx.args.revision
    rev = next((r for r in revisions if r.number == number), None)
    if rev is None:
        kept = ", ".join(str(r.number) for r in revisions) or "none"
        print(
            f"error: workload {name} has no revision {number} in its history (kept: {kept}); "
            f"see keelctl rollout history {name}",
            file=sys.stderr,
        )
        return NOT_SUCCEEDED
    if ctx.json:
        return output.to_json(rev)
    return rollout_output.revision_text(name, rev, now=ctx.now)


def _status(ctx: Any) -> fleet_pb2.RolloutStatus:
    request = fleet_pb2.GetRolloutStatusRequest(workload=ctx.args.workload)
    status: fleet_pb2.RolloutStatus = ctx.stub.GetRolloutStatus(request, timeout=ctx.timeout)
    return status


def cmd_status(ctx: Any) -> str | int:
    if ctx.args.wait:
        # Its first read is retried too: run just after a control plane restarts, it waits.
        return wait(ctx, None, clock=time.monotonic, sleep=time.sleep)
    status = _status(ctx)
    print(output.to_json(status) if ctx.json else rollout_output.status_text(status, now=ctx.now))
    ok = status.state not in rollout_progress.ENDED or status.state in rollout_progress.SUCCEEDED
    return SUCCEEDED if ok else NOT_SUCCEEDED


def wait(
    ctx: Any,
    status: fleet_pb2.RolloutStatus | None,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> int:
    """Follows the rollout from `status` (None: read it first) to its end (see the module
    docstring). Every read goes through `_passing`: one that fails for a passing reason is
    tried again at the next interval, and nothing is decided on what could not be read."""
    name = ctx.args.workload
    limit = ctx.args.wait_timeout
    started = clock()
    view = rollout_progress.view(json=ctx.json)
    try:
        with view:
            while status is None:
                status = _passing(view, lambda: _status(ctx))
                if status is not None:
                    break
                if limit and clock() - started >= limit:
                    print(
                        f"error: could not read the rollout of {name} before --wait-timeout "
                        f"(the control plane did not answer); it goes on regardless: "
                        f"keelctl rollout status {name} --wait",
                        file=sys.stderr,
                    )
                    return NOT_SUCCEEDED
                sleep(ctx.args.interval)
            watched = status.revision
            while True:
                view.update(status)
                if status.revision != watched:
                    history = _passing(view, lambda: _history(ctx))
                    if history is not None:
                        if _rolled_back(ctx, view, watched, status, history):
                            return NOT_SUCCEEDED
                        watched = status.revision
                # A newer revision whose history could not be read may be a rollback: its end
                # is not the followed rollout's until the history says it is not.
                if status.revision == watched and status.state in rollout_progress.ENDED:
                    view.finish(status, now=datetime.now(UTC))
                    ok = status.state in rollout_progress.SUCCEEDED
                    return SUCCEEDED if ok else NOT_SUCCEEDED
                if limit and clock() - started >= limit:
                    print(_timed_out(name, status), file=sys.stderr)
                    return NOT_SUCCEEDED
                sleep(ctx.args.interval)
                read = _passing(view, lambda: _status(ctx))
                status = status if read is None else read
    except KeyboardInterrupt:
        print(
            f"stopped waiting; the rollout goes on (keelctl rollout status {name} --wait)",
            file=sys.stderr,
        )
        return NOT_SUCCEEDED


def _passing(view: rollout_progress.View, read: Callable[[], T]) -> T | None:
    """`read()`, or None (and says so) when it failed for a reason that passes: the caller
    tries again at its next interval. Any other error is raised."""
    try:
        return read()
    except grpc.RpcError as e:
        if e.code() not in _PASSING:
            raise
        view.say(f"cannot read the rollout now ({e.code().name}); trying again")
        return None


def _history(ctx: Any) -> list[fleet_pb2.Revision]:
    request = fleet_pb2.GetRolloutHistoryRequest(workload=ctx.args.workload)
    return list(ctx.stub.GetRolloutHistory(request, timeout=ctx.timeout).revisions)


def _timed_out(name: str, status: fleet_pb2.RolloutStatus) -> str:
    """What --wait-timeout leaves behind: a rollout that goes on by itself, or one that waits
    for an operator (canaries awaiting promotion, a pause) and says for what."""
    head = (
        f"error: revision {status.revision} of {name} is still {status.state} after --wait-timeout"
    )
    if status.state == "AWAITING_PROMOTION":
        return (
            f"{head}; its canaries wait to be promoted: `keelctl rollout promote {name}` "
            f"goes on (rollout.auto_promote does it once they have stayed ready for min_ready), "
            f"`keelctl rollout abort {name}` removes them"
        )
    if status.state == "PAUSED":
        return f"{head}; it holds until `keelctl rollout resume {name}`"
    return f"{head}; it goes on: keelctl rollout status {name} --wait"


def _rolled_back(
    ctx: Any,
    view: rollout_progress.View,
    watched: int,
    status: fleet_pb2.RolloutStatus,
    history: list[fleet_pb2.Revision],
) -> bool:
    """A newer revision replaced the one being followed: True (and says so) when it is a
    rollback, so the one followed will never complete; else it is followed instead."""
    newest = next((r for r in history if r.number == status.revision), None)
    old = next((r for r in history if r.number == watched), None)
    now = datetime.now(UTC)
    if newest is None or not newest.same_as:
        view.say(f"revision {watched} was superseded by revision {status.revision}; following it")
        return False
    text = (
        f"revision {watched} was rolled back: revision {status.revision} returns to revision "
        f"{newest.same_as} ({newest.actor or 'unknown'}: {rollout_output.cause(newest)})"
    )
    if old is not None and old.HasField("failure"):
        text += "\n" + rollout_output.failure_text(old.failure, now=now)
    if ctx.json:
        print(output.to_json(old if old is not None else newest))
    view.say(text)
    return True


def cmd_pause(ctx: Any) -> str:
    return _pause(ctx, ctx.stub.PauseRollout)


def cmd_resume(ctx: Any) -> str:
    return _pause(ctx, ctx.stub.ResumeRollout)


def _pause(ctx: Any, call: Any) -> str:
    request = fleet_pb2.RolloutActionRequest(workload=ctx.args.workload, reason=ctx.args.reason)
    status = call(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(status)
    return rollout_output.pause_text(status, now=ctx.now)


def cmd_undo(ctx: Any) -> str:
    request = fleet_pb2.UndoRolloutRequest(
        workload=ctx.args.workload, to_revision=ctx.args.to_revision, reason=ctx.args.reason
    )
    reply = ctx.stub.UndoRollout(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(reply)
    return rollout_output.undo_text(reply)


# `keelctl rollout VERB`: what runs each verb (`keel.ctl.args.rollout_verb` parses it).
VERBS: dict[str, Callable[[Any], str | int]] = {
    "history": cmd_history,
    "status": cmd_status,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "undo": cmd_undo,
    "promote": canary.cmd_canary,
    "abort": canary.cmd_canary,
}
