"""The closed set of stuck reasons: what each means, its runbook and the next command to run.

Shared by the control plane's stuck detector, the agent (which names its own terminal states),
keelctl and the runbook tests (every reason has a runbook whose commands keelctl accepts).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    UNSCHEDULABLE = "UNSCHEDULABLE"
    START_FAILED = "START_FAILED"
    CRASH_LOOP = "CRASH_LOOP"
    HEALTH_CHECK_FAILING = "HEALTH_CHECK_FAILING"
    STOP_TIMEOUT = "STOP_TIMEOUT"
    HOST_UNREACHABLE = "HOST_UNREACHABLE"
    AGENT_DISCONNECTED = "AGENT_DISCONNECTED"
    ROLLOUT_BLOCKED = "ROLLOUT_BLOCKED"
    RECONCILE_FAILING = "RECONCILE_FAILING"
    NOT_STARTED = "NOT_STARTED"
    DRAIN_BLOCKED = "DRAIN_BLOCKED"
    CANARY_AWAITING_PROMOTION = "CANARY_AWAITING_PROMOTION"
    ROLLOUT_PAUSED = "ROLLOUT_PAUSED"
    ROLLOUT_FAILED = "ROLLOUT_FAILED"


# Reasons the agent sees for itself and that are stuck at once, without waiting for the deadline.
IMMEDIATE = frozenset({Reason.START_FAILED, Reason.CRASH_LOOP})

# The most stderr a CRASH_LOOP message carries.
STDERR_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Guide:
    summary: str
    runbook: str
    # {instance}, {workload} and {host} are filled in for the stuck object.
    next_command: str


GUIDES: dict[Reason, Guide] = {
    Reason.UNSCHEDULABLE: Guide(
        "no READY, schedulable host matches the selector and has room",
        "runbooks/stuck/unschedulable.md",
        "keelctl describe workload {workload}",
    ),
    Reason.START_FAILED: Guide(
        "the agent could not start the command",
        "runbooks/stuck/start-failed.md",
        "keelctl describe instance {instance}",
    ),
    Reason.CRASH_LOOP: Guide(
        "the process keeps exiting and is being restarted with back-off",
        "runbooks/stuck/crash-loop.md",
        "keelctl logs {instance} --tail 50",
    ),
    Reason.HEALTH_CHECK_FAILING: Guide(
        "the process runs but its health check fails",
        "runbooks/stuck/health-check-failing.md",
        "keelctl logs {instance} --tail 50",
    ),
    Reason.STOP_TIMEOUT: Guide(
        "the process did not exit within its stop grace and was killed, or cannot be",
        "runbooks/stuck/stop-timeout.md",
        "keelctl describe instance {instance}",
    ),
    Reason.HOST_UNREACHABLE: Guide(
        "the host stopped heartbeating",
        "runbooks/stuck/host-unreachable.md",
        "keelctl describe host {host}",
    ),
    Reason.AGENT_DISCONNECTED: Guide(
        "the host's agent has no stream open to the control plane",
        "runbooks/stuck/agent-disconnected.md",
        "keelctl describe host {host}",
    ),
    Reason.ROLLOUT_BLOCKED: Guide(
        "the rollout cannot progress without breaking the disruption budget",
        "runbooks/stuck/rollout-blocked.md",
        "keelctl describe workload {workload}",
    ),
    Reason.RECONCILE_FAILING: Guide(
        "the control plane keeps failing to reconcile the workload (the message has the error)",
        "runbooks/stuck/reconcile-failing.md",
        "keelctl events --for workload/{workload}",
    ),
    Reason.NOT_STARTED: Guide(
        "the agent has never reported the instance since it was placed",
        "runbooks/stuck/not-started.md",
        "keelctl describe host {host}",
    ),
    Reason.DRAIN_BLOCKED: Guide(
        "a drain has had blockers and no move finishing for longer than --drain-blocked-after",
        "runbooks/stuck/drain-blocked.md",
        "keelctl ops",
    ),
    Reason.CANARY_AWAITING_PROMOTION: Guide(
        "a canary rollout has waited for promotion longer than --canary-waiting-after",
        "runbooks/stuck/canary-awaiting-promotion.md",
        "keelctl rollout promote {workload}",
    ),
    Reason.ROLLOUT_PAUSED: Guide(
        "the workload's rollout has been paused for longer than --rollout-paused-after",
        "runbooks/stuck/rollout-paused.md",
        "keelctl rollout resume {workload}",
    ),
    Reason.ROLLOUT_FAILED: Guide(
        "the workload's rollout failed and Keel holds it (no auto_rollback, or nothing to "
        "return to)",
        "runbooks/stuck/rollout-failed.md",
        "keelctl rollout undo {workload}",
    ),
}


def next_command(reason: Reason, *, instance: str = "", workload: str = "", host: str = "") -> str:
    return GUIDES[reason].next_command.format(instance=instance, workload=workload, host=host)
