"""Shared SQL plumbing of the control plane's stores: the pool, NOTIFY channels, events,
revisions and the leadership fence. `workload_store` and `instance_store` (desired state),
`hosts` (liveness) and `status` (observed state) build their queries on these.

Ordering rule: every transaction that changes a host's instances bumps that host's `revision`
in the same transaction (`bump_revisions`; the row lock orders them), so a watcher asking
"what changed on host H since revision N" never skips a slow transaction's change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from controlplane.errors import NotLeader

HOST_CHANNEL = "keel_host"
WORKLOAD_CHANNEL = "keel_workload"

# A connection, whether held directly or borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )
    assert pool is not None
    return pool


async def check_epoch(conn: Conn, epoch: int | None) -> None:
    """Fences a deposed leader: NotLeader if another replica took over since `epoch`."""
    if epoch is None:
        return
    # FOR SHARE: a new leader's epoch bump waits for this transaction, and this one
    # sees the bump if it came first.
    current = await conn.fetchval("SELECT epoch FROM leader FOR SHARE")
    if current != epoch:
        raise NotLeader(f"leadership moved to epoch {current} (this replica held {epoch})")


async def bump_revisions(conn: Conn, hosts: Sequence[str]) -> dict[str, int]:
    """Bumps each host's revision in this transaction; returns the new revisions."""
    if not hosts:
        return {}
    # Lock in name order first, so two writers touching the same hosts cannot deadlock.
    await conn.execute(
        "SELECT 1 FROM host WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE",
        sorted(hosts),
    )
    rows = await conn.fetch(
        """UPDATE host SET revision = revision + 1
           WHERE name = ANY($1::text[]) RETURNING name, revision""",
        sorted(hosts),
    )
    return {r["name"]: int(r["revision"]) for r in rows}


async def record_event(conn: Conn, obj: str, kind: str, message: str, *, actor: str = "") -> None:
    """Appends to the audit history (keelctl events), in the caller's transaction."""
    await conn.execute(
        "INSERT INTO event (object, kind, actor, message) VALUES ($1, $2, $3, $4)",
        obj,
        kind,
        actor,
        message,
    )
