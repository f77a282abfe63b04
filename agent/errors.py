"""The agent's exception root; the class docstring is what a person reads.

Drivers (`agent.runtime`) raise `StartFailed`; `agent.main` turns `ConfigError` into a usage
error and `StateDirLocked` (`agent.lock`) into one error line and exit 1; the reconciler turns
everything else into a status report and a log line.
"""

from __future__ import annotations

from pathlib import Path


class AgentError(Exception):
    """The agent could not do what was asked."""


class ConfigError(AgentError):
    """A flag or setting is invalid; the message names the flag and the rule."""


class StartFailed(AgentError):
    """The workload's command could not be started (missing executable, permission, ...)."""


class StateError(AgentError):
    """The agent's local state file could not be read or written."""


class StateDirLocked(AgentError):
    """Another agent holds this state directory; the message names its pid."""

    def __init__(self, message: str, *, pid: int | None, path: Path) -> None:
        super().__init__(message)
        self.pid = pid
        self.path = path
