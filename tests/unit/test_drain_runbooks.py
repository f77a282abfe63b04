"""Every drain blocker reason has its runbook, the runbook shows the blocker's next command,
and keelctl accepts that command."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_runbooks import argv_of, keelctl_commands, keelctl_refusal

from controlplane.operations import RUNBOOK
from keel.blockers import GUIDES, BlockerReason, next_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("reason", list(BlockerReason), ids=str)
def test_every_blocker_reason_has_a_runbook(reason: BlockerReason) -> None:
    """runbooks/drain/<reason-kebab>.md exists and is the guide's runbook."""
    kebab = reason.value.lower().replace("_", "-")
    assert GUIDES[reason].runbook == f"runbooks/drain/{kebab}.md"
    assert (ROOT / GUIDES[reason].runbook).is_file()


@pytest.mark.parametrize("reason", list(BlockerReason), ids=str)
def test_every_blocker_runbook_shows_a_command_keelctl_accepts_for_it(
    reason: BlockerReason,
) -> None:
    """The blocker's next command parses; its runbook's commands include one like it."""
    command = next_command(
        reason, instance="web-1-abc123", workload="web", host="host-1", replacement="web-1-def456"
    )
    assert keelctl_refusal(argv_of(command)[1:]) is None, command
    verb = " ".join(command.split()[:3])
    lines = [c.text for c in keelctl_commands(ROOT / GUIDES[reason].runbook)]
    assert any(line.startswith(verb) for line in lines), (reason, verb, lines)


def test_the_operations_runbook_exists() -> None:
    """Every operation names runbooks/cordon-and-drain.md, and it is there."""
    assert (ROOT / RUNBOOK).is_file()
