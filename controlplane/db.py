"""Where the database comes from: a given URL, or an embedded Postgres under the state dir.

The embedded server's lifecycle lives in `controlplane.embedded`: it is stopped when its last
user exits (at interpreter exit, after the pool has closed); one that a killed control plane
left running is stopped by the next start, which then starts it afresh.
"""

from __future__ import annotations

import asyncio
import atexit
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog

from controlplane.embedded import EmbeddedPostgres
from controlplane.errors import KeelError

log = structlog.get_logger("keel.db")

DATABASE = "keel"


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


def _stop_at_exit(server: EmbeddedPostgres) -> None:
    try:
        server.stop_if_last()
    except KeelError as exc:
        log.error(str(exc))


def _start_embedded(state_dir: Path) -> str:
    server = EmbeddedPostgres(state_dir)
    uri = server.start()
    # At interpreter exit: after serve() has closed the pool and sys.exit ran, on every exit
    # path but SIGKILL (which the next start handles).
    atexit.register(_stop_at_exit, server)
    return uri


async def resolve_database_url(database_url: str | None, state_dir: Path) -> str:
    """The URL to use: the given one, or an embedded server's (database `keel`, created once)."""
    if database_url:
        return database_url
    # Blocking start (initdb, pg_ctl): run it in a thread, off the event loop.
    admin_uri = await asyncio.to_thread(_start_embedded, state_dir)
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
