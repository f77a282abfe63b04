"""Fixtures for the end-to-end tests: a running fleet per test, its logs on failure.

`fleet` is a fresh control plane with three agents and a database of its own for each test;
`quiet_fleet` is one shared by a module's read-only tests (validation, unknown names), which
saves a start-up per test. When a test fails, the tail of every process's log is attached to
its report: that is usually where the reason is.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from harness import Fleet

# What tests/conftest.py's `database_factory` fixture returns.
DatabaseFactory = Callable[[], AbstractContextManager[str]]


@pytest.fixture
def fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    """A control plane and agents host-1..host-3, all hosts READY."""
    with database_factory() as url, Fleet(tmp_path, database_url=url, agents=3) as f:
        yield f


@pytest.fixture(scope="module")
def quiet_fleet(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[Fleet]:
    """A control plane alone (no agent), shared by a module's tests that change nothing."""
    root = tmp_path_factory.mktemp("quiet_fleet")
    with database_factory() as url, Fleet(root, database_url=url, agents=0) as f:
        yield f


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, Fleet):
                for name, tail in value.log_tails():
                    report.sections.append((f"keel log: {name}", tail))
    return report
