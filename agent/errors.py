"""The agent's exception root; the class docstring is what a person reads.

Drivers (`agent.runtime`) raise `StartFailed`; `agent.main` turns `ConfigError` into a usage
error; the reconciler turns everything else into a status report and a log line.
"""

from __future__ import annotations


class AgentError(Exception):
    """The agent could not do what was asked."""


class ConfigError(AgentError):
    """A flag or setting is invalid; the message names the flag and the rule."""


class StartFailed(AgentError):
    """The workload's command could not be started (missing executable, permission, ...)."""


class StateError(AgentError):
    """The agent's local state file could not be read or written."""
