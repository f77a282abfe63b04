"""A fleet on its own embedded Postgres (the control plane starts it under its state dir), for
the tests that take that Postgres away or reach into it: never a server another test shares."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness import Fleet


@contextlib.contextmanager
def embedded(controlplane_args: list[str]) -> Iterator[Fleet]:
    """A control plane on its own embedded Postgres, with two agents.

    Not under pytest's temp dir: as root the server runs as another user, which must traverse
    every parent of its data dir, and any pytest session started meanwhile makes pytest's base
    dir 0700 again (tests/conftest.py's session Postgres lives apart for the same reason).
    """
    root = Path(tempfile.mkdtemp(prefix="keel-e2e-embedded-"))
    try:
        with Fleet(
            root, database_url=None, agents=2, controlplane_args=controlplane_args, start_timeout=90
        ) as f:
            yield f
    finally:
        shutil.rmtree(root, ignore_errors=True)
