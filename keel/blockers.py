"""The closed set of drain blockers: why a drain cannot move an instance now, the runbook for
each reason and the next command to run.

Shared by the drain planner (`controlplane.drain`, which names the blockers), the operation
records and keelctl (which print them), and the runbook tests (every reason has a runbook whose
commands keelctl accepts). Like `keel.stuck` for stuck objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BlockerReason(enum.StrEnum):
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    NO_CAPACITY = "NO_CAPACITY"
    REPLACEMENT_NOT_READY = "REPLACEMENT_NOT_READY"
    AGENT_UNREACHABLE = "AGENT_UNREACHABLE"
    STOP_TIMEOUT = "STOP_TIMEOUT"


@dataclass(frozen=True)
class Guide:
    summary: str
    runbook: str
    # {instance} (the instance to move), {workload}, {host} (its host) and {replacement}
    # (its replacement, when it has one) are filled in for the blocker.
    next_command: str


GUIDES: dict[BlockerReason, Guide] = {
    BlockerReason.BUDGET_EXHAUSTED: Guide(
        "moving the instance now would take its workload below max_unavailable (or past max_surge)",
        "runbooks/drain/budget-exhausted.md",
        "keelctl describe workload {workload}",
    ),
    BlockerReason.NO_CAPACITY: Guide(
        "no other READY, schedulable host that matches the selector has room for a replacement",
        "runbooks/drain/no-capacity.md",
        "keelctl get hosts",
    ),
    BlockerReason.REPLACEMENT_NOT_READY: Guide(
        "the replacement started elsewhere does not become ready",
        "runbooks/drain/replacement-not-ready.md",
        "keelctl describe instance {replacement}",
    ),
    BlockerReason.AGENT_UNREACHABLE: Guide(
        "the drained host's agent is not there to stop the instance",
        "runbooks/drain/agent-unreachable.md",
        "keelctl describe host {host}",
    ),
    BlockerReason.STOP_TIMEOUT: Guide(
        "the instance was asked to stop and has not stopped past its stop grace",
        "runbooks/drain/stop-timeout.md",
        "keelctl describe instance {instance}",
    ),
}


def next_command(
    reason: BlockerReason, *, instance: str, workload: str, host: str, replacement: str = ""
) -> str:
    return GUIDES[reason].next_command.format(
        instance=instance, workload=workload, host=host, replacement=replacement or instance
    )
