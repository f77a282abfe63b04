"""Fixtures the integration tests share: a store over a fresh, migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from controlplane import migrate
from controlplane.store import Store, create_pool


@pytest.fixture
async def store(fresh_database: str) -> AsyncIterator[Store]:
    """A Store over a fresh database migrated to the newest schema."""
    conn = await asyncpg.connect(fresh_database)
    await migrate.migrate(conn)
    await conn.close()
    pool = await create_pool(fresh_database, min_size=2, max_size=12)
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
