"""Fixtures the integration tests share: a store over a fresh, migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import asyncpg
import pytest

from controlplane import migrate
from controlplane.store import Store, create_pool


@pytest.fixture(scope="session")
async def migrated_template(
    database_factory: Callable[[], AbstractContextManager[str]],
) -> AsyncIterator[str]:
    """A database migrated to the newest schema once per session, by the migrations as the
    control plane runs them; what `migrated_database` copies (tests/integration/
    test_migrations.py runs them on empty databases)."""
    with database_factory() as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        yield url


@pytest.fixture
def migrated_database(
    database_copier: Callable[[str], AbstractContextManager[str]], migrated_template: str
) -> Iterator[str]:
    """The URL of a database of this test's own at the newest schema: a copy of the session's
    migrated template (a file copy, where migrating each test's database took longer)."""
    with database_copier(migrated_template) as url:
        yield url


@pytest.fixture
async def store(migrated_database: str) -> AsyncIterator[Store]:
    """A Store over a fresh database migrated to the newest schema (migrated_database)."""
    pool = await create_pool(migrated_database, min_size=2, max_size=12)
    try:
        yield Store(pool)
    finally:
        await pool.close()


@pytest.fixture(autouse=True)
def host_credential(tmp_path: Path) -> None:
    """The agents here talk to fake control planes that check no credential: their state dir
    (the test's tmp_path, or its `state` for a keel-agent process) holds one already, as after
    a join, so they never call Join."""
    for state in (tmp_path, tmp_path / "state"):
        state.mkdir(exist_ok=True)
        (state / "credential").write_text("test-credential\n")
