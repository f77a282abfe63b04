"""The README stays complete: every flag of both daemons and of keelctl is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from agent.main import build_parser as agent_parser
from controlplane.flags import build_parser as controlplane_parser
from keel.ctl.args import build_parser as keelctl_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags(sub)
    return flags


@pytest.mark.parametrize(
    "parser", [controlplane_parser, agent_parser, keelctl_parser], ids=["cp", "agent", "keelctl"]
)
def test_every_flag_is_in_the_readme(parser: object) -> None:
    """A flag added without its README row fails here."""
    assert callable(parser)
    missing = sorted(
        f for f in _flags(parser()) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", README)
    )
    assert not missing, f"README.md does not document {missing}"
