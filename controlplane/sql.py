"""Shared SQL plumbing of the control plane's stores: the pool, NOTIFY channels, events,
revisions and the leadership fence. `workload_store` and `instance_store` (desired state),
`hosts` (liveness) and `status` (observed state) build their queries on these.

Translation rule: the stores reach Postgres only through `Database`, which turns asyncpg's
failures into Keel's errors in this one place: the database unreachable, restarting or not
answering in time is `Unavailable`; a value it refuses (out of range, a character it cannot
store) is `InvalidArgument`. No driver class name travels further.

Ordering rule: every transaction that changes a host's instances bumps that host's `revision`
in the same transaction (`bump_revisions`; the row lock orders them), so a watcher asking
"what changed on host H since revision N" never skips a slow transaction's change. Likewise
every transaction that changes a workload or what the leader's cache holds of its instances
gives it a new `version` (`bump_versions`), which a plan is checked against before it writes.

Lock order, for every transaction that takes more than one kind: the leader row, an operation,
workloads (in name order), hosts (in name order), then instances, so no two writers can
deadlock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from controlplane.errors import Conflict, InvalidArgument, NotLeader, Unavailable

log = structlog.get_logger("keel.sql")

T = TypeVar("T")

HOST_CHANNEL = "keel_host"
WORKLOAD_CHANNEL = "keel_workload"
# An operation's record changed (the payload is its id): watchers send it, the leader's drain
# controller looks at it again.
OPERATION_CHANNEL = "keel_operation"
# Log requests and chunks between replicas (controlplane.logbus): JSON, one object each.
LOGS_CHANNEL = "keel_logs"
# A token was revoked or replaced (the payload is its name): every replica forgets what it
# checked of it and ends the calls it opened (controlplane.revocation).
TOKEN_CHANNEL = "keel_token"

# A connection, whether held directly or borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does first (roll back a
    transaction left open, drop listener callbacks). Its default reset sends
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` at every release: a round
    trip and a transaction for each heartbeat batch, report batch or indexed lookup. None of
    it has anything to undo here: no pooled connection takes an advisory lock (migrations and
    leadership hold theirs on connections of their own), LISTENs (`listener` has its own),
    declares a cursor or SETs a session variable (the jsonb codec is client-side, set at
    connect). Session state of that kind goes on a connection of its own, never the pool's."""


# How long a statement or a wait for a pooled connection may take by default (--db-timeout).
DEFAULT_TIMEOUT_S = 30.0


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 10, timeout_s: float = DEFAULT_TIMEOUT_S
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=timeout_s,
        timeout=timeout_s,
    )
    assert pool is not None
    return pool


# A value asyncpg itself cannot encode for a query (a subclass of InterfaceError, which below
# would otherwise count as "the database is away").
_ClientDataError = asyncpg.exceptions._base.DataError

# The database is away (down, restarting, overloaded, cut off) or did not answer in time.
_AWAY = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, statement cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock: retry
)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Runs a block of database calls, raising asyncpg's failures as Keel's errors."""
    try:
        yield
    except asyncpg.DataError as exc:
        # Postgres refused a value (SQLSTATE class 22). Validation comes first, so this is a gap
        # in it; the server's own words ("bigint out of range") name the rule, never SQL.
        log.warning("the database refused a value", error=str(exc), sqlstate=exc.sqlstate)
        raise InvalidArgument(
            "request: a value is outside what the control plane can store "
            f"({exc.args[0] if exc.args else 'refused'})"
        ) from exc
    except _ClientDataError as exc:
        # asyncpg could not encode an argument ("invalid input for query argument $4: ...",
        # which names a query parameter): the caller's input, but the text stays in the log.
        log.warning("a value could not be sent to the database", error=str(exc))
        raise InvalidArgument(
            "request: a value is outside what the control plane can store"
        ) from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        # A unique or foreign key the transaction ran into: a concurrent change of the same
        # object (the schema's constraints are the backstop of checks made in the store).
        log.warning("a concurrent change conflicted", error=str(exc), sqlstate=exc.sqlstate)
        raise Conflict(
            "the request ran into a concurrent change of the same object and changed nothing; "
            "try again"
        ) from exc
    except _AWAY as exc:
        raise Unavailable(
            "the control plane's database (Postgres) is unreachable or did not answer in "
            "time; try again shortly (with the same request id, a change is made once)"
        ) from exc


class Database:
    """The pool as the stores use it (`acquire`, `fetch`, `fetchrow`, `fetchval`, `execute`),
    with every failure translated (`translated`) and every wait for a connection bounded."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.raw = pool
        self.timeout_s = timeout_s

    @classmethod
    def of(cls, pool: asyncpg.Pool | Database) -> Database:
        return pool if isinstance(pool, Database) else cls(pool)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[PoolConnectionProxy]:
        with translated():
            async with self.raw.acquire(timeout=self.timeout_s) as conn:
                yield conn

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return await conn.execute(query, *args)

    async def close(self) -> None:
        await self.raw.close()


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


@dataclass(frozen=True)
class Versions:
    """A workload's versions as one write moved them (`bump_versions`)."""

    workload: str
    was: int  # the version the write was made over
    version: int
    desired_version: int


async def bump_versions(conn: Conn, workloads: Sequence[str], *, desired: bool) -> list[Versions]:
    """Gives each workload a new `version` in this transaction (from the `workload_version`
    sequence: a version is never handed out twice), and a new `desired_version` too when the
    write changes what should run (`desired`; a report does not). Returns them in name order.
    The caller has locked the workloads' rows first (in name order), so the version before is
    exactly the one its write was made over."""
    if not workloads:
        return []
    names = sorted(set(workloads))
    # Read, then bump, both by primary key (as one UPDATE joined to a read of the same table, a
    # prepared statement's generic plan scans every workload). The rows are locked: nothing
    # moves the versions in between.
    was = {
        r["name"]: int(r["version"])
        for r in await conn.fetch(
            "SELECT name, version FROM workload WHERE name = ANY($1::text[])", names
        )
    }
    rows = await conn.fetch(
        """UPDATE workload SET version = nextval('workload_version'),
                  desired_version = CASE WHEN $2 THEN nextval('workload_version')
                                         ELSE desired_version END
           WHERE name = ANY($1::text[])
           RETURNING name, version, desired_version""",
        names,
        desired,
    )
    return sorted(
        (Versions(r["name"], was[r["name"]], r["version"], r["desired_version"]) for r in rows),
        key=lambda v: v.workload,
    )


def workload_payload(name: str, version: int) -> str:
    """A `WORKLOAD_CHANNEL` payload naming a workload and the version its change took; the
    leader's cache skips the re-read when it holds that version already."""
    return f"{name} {version}"


async def notify(conn: Conn, channel: str, payloads: Sequence[str]) -> None:
    """NOTIFYs each payload on `channel` at commit, in one statement (a statement per payload
    is a round trip each: a plan touching 100 hosts paid 100). Each payload stands alone, so
    their order does not matter."""
    if payloads:
        await conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            channel,
            list(payloads),
        )


async def record_event(conn: Conn, obj: str, kind: str, message: str, *, actor: str = "") -> None:
    """Appends to the audit history (keelctl events), in the caller's transaction."""
    await conn.execute(
        "INSERT INTO event (object, kind, actor, message) VALUES ($1, $2, $3, $4)",
        obj,
        kind,
        actor,
        message,
    )


def decode_each(
    rows: Iterable[asyncpg.Record], decode: Callable[[asyncpg.Record], T], *, what: str
) -> list[T]:
    """decode(row) for every row. A row this code cannot read (written before a rule existed,
    or by a bug) is logged and skipped: one bad row must not break a list for every reader."""
    out = []
    for r in rows:
        try:
            out.append(decode(r))
        except (ValueError, TypeError, KeyError) as exc:
            name = r.get("name") or r.get("id") or "?"
            log.error(f"stored {what} cannot be read; skipped", **{what: name}, error=str(exc))
    return out
