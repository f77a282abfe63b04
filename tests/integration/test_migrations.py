"""Migrations on a real Postgres: every up, every down, every up again; newer schemas refused."""

from __future__ import annotations

import asyncpg
import pytest

from controlplane import migrate
from controlplane.errors import SchemaTooNew


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> "
        "'schema_migrations'"
    )
    return {r["tablename"] for r in rows}


async def test_all_ups_all_downs_all_ups_again(fresh_database: str) -> None:
    """Each migration applies and reverts cleanly, and can be applied again after."""
    known = migrate.load()
    latest = known[-1].version
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await migrate.migrate(conn) == (0, latest)
        full = await _tables(conn)
        assert {"host", "workload", "instance", "event", "leader"} <= full
        # Step down one at a time, then back up one at a time.
        for version in range(latest - 1, -1, -1):
            await migrate.migrate(conn, to=version)
            assert await migrate.current_version(conn) == version
        assert await _tables(conn) == set()
        for version in range(1, latest + 1):
            await migrate.migrate(conn, to=version)
        assert await _tables(conn) == full
        assert await migrate.migrate(conn) == (latest, latest)
    finally:
        await conn.close()


async def test_schema_newer_than_known_is_refused(fresh_database: str) -> None:
    """A control plane refuses a database migrated by a newer release, saying so."""
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate.migrate(conn)
        latest = migrate.load()[-1].version
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from_the_future')",
            latest + 1,
        )
        with pytest.raises(SchemaTooNew, match=f"version {latest + 1}, newer than"):
            await migrate.migrate(conn)
    finally:
        await conn.close()


def test_every_migration_has_a_down_step() -> None:
    """The migrations directory numbers 1..N with both steps for each."""
    known = migrate.load()
    assert [m.version for m in known] == list(range(1, len(known) + 1))
    assert all(m.up.strip() and m.down.strip() for m in known)
