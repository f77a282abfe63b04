"""Schema migrations: numbered SQL files in `controlplane/migrations/`, each with its down step.

They are package data, so an installed wheel carries them and can run `keel-controlplane
migrate` without the source tree.

`NNNN_name.up.sql` and `NNNN_name.down.sql`. Applied versions are recorded in
`schema_migrations`; every run holds a Postgres advisory lock, so replicas starting together
apply each migration once. A database newer than the files this build knows is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from controlplane.errors import KeelError, SchemaTooNew

log = structlog.get_logger("keel.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# An arbitrary constant shared by every replica: "keel migrations".
_LOCK_KEY = 0x6B65656C_6D696772
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql\Z")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


class MigrationError(KeelError):
    """The migrations directory is inconsistent (a missing down step or a gap in the numbers)."""


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Reads every migration, checking each has both steps and the numbers run 1..N."""
    parts: dict[int, dict[str, str]] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if m is None:
            raise MigrationError(f"{path.name}: not named NNNN_name.up.sql or NNNN_name.down.sql")
        version, name, step = int(m.group(1)), m.group(2), m.group(3)
        entry = parts.setdefault(version, {"name": name})
        entry[step] = path.read_text()
    out = []
    for i, version in enumerate(sorted(parts), start=1):
        if version != i:
            raise MigrationError(f"migration {i:04d} is missing (found {version:04d})")
        entry = parts[version]
        for step in ("up", "down"):
            if step not in entry:
                raise MigrationError(f"migration {version:04d} has no {step} step")
        out.append(Migration(version, entry["name"], entry["up"], entry["down"]))
    return out


async def current_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def migrate(
    conn: asyncpg.Connection, *, to: int | None = None, migrations: list[Migration] | None = None
) -> tuple[int, int]:
    """Moves the schema up or down to version `to` (default: the newest). Returns (from, to)."""
    known = migrations if migrations is not None else load()
    latest = known[-1].version if known else 0
    target = latest if to is None else to
    if not 0 <= target <= latest:
        raise MigrationError(f"--to must be between 0 and {latest}, got {target}")
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        start = await current_version(conn)
        if start > latest:
            raise SchemaTooNew(
                f"the database schema is at version {start}, newer than the newest this control "
                f"plane knows ({latest}); run a newer keel-controlplane, or move the schema down "
                f"with the newer one's `keel-controlplane migrate --to {latest}`"
            )
        for m in known:
            if start < m.version <= target:
                async with conn.transaction():
                    await conn.execute(m.up)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        m.version,
                        m.name,
                    )
                log.info("migration applied", version=m.version, migration=m.name, step="up")
        for m in reversed(known):
            if target < m.version <= start:
                async with conn.transaction():
                    await conn.execute(m.down)
                    await conn.execute(
                        "DELETE FROM schema_migrations WHERE version = $1", m.version
                    )
                log.info("migration applied", version=m.version, migration=m.name, step="down")
        return start, target
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
