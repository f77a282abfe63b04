"""The operator's reads: pages of workloads, hosts and instances, and the counts a workload's
status is made of, each bounded by what it shows rather than by the size of the fleet.

Operator calls may go to any replica, so they read Postgres, never the leader's cache
(`controlplane.cache`). A page is read through an index in its list's order after the key the
previous page ended with (`controlplane.paging`, which makes and checks the tokens). Only what
an answer shows is read: an instance's spec (its workload's, with its JSON) is not decoded for a
list (`InstanceStatusRow`), and a workload's status comes from counts Postgres makes (`Tally`),
not from every one of its instances' rows. `store.Store` inherits these queries;
`controlplane.fleet` calls them and `controlplane.convert` presents what they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from controlplane import paging
from controlplane.errors import NotFound
from controlplane.hosts import USAGE_OF, HostRow, host_row
from controlplane.paging import Page, PageRequest
from controlplane.sql import Conn, Database, decode_each
from controlplane.view import StuckState
from controlplane.workload_store import WorkloadRow, stuck_state, workload_row
from keel.model import Desired, Kind, Phase, converged

# What an operator is shown of an instance (fixed text, never input).
INSTANCE_STATUS_COLUMNS = """id, workload, generation, host, desired, desired_changed_at, replaces,
    created_at, phase, pid, restart_count, last_exit, reason, message, ports, ready,
    started_at, observed_at, stuck_reason, stuck_since, stuck_message"""

# Enum lookups by value without EnumType.__call__ (a measurable share of a long page).
_DESIRED = {d.value: d for d in Desired}
_PHASE = {p.value: p for p in Phase}


@dataclass(frozen=True)
class InstanceStatusRow:
    """An instance as the operator API presents it: where it runs, what is desired of it and
    what its agent last reported. (The full row, spec included, is `store.InstanceRow`.)"""

    id: str
    workload: str
    generation: int
    host: str
    desired: Desired
    desired_changed_at: datetime
    created_at: datetime
    phase: Phase
    pid: int
    restart_count: int
    last_exit: str
    reason: str
    message: str
    ports: dict[str, int]
    ready: bool
    started_at: datetime | None
    observed_at: datetime | None
    stuck: StuckState | None
    replaces: str = ""  # a drain's replacement: the instance it replaces

    @property
    def converged(self) -> bool:
        return converged(self.desired, self.phase, self.ready)


def instance_status_row(r: asyncpg.Record) -> InstanceStatusRow:
    return InstanceStatusRow(
        id=r["id"],
        workload=r["workload"],
        generation=r["generation"],
        host=r["host"],
        desired=_DESIRED[r["desired"]],
        desired_changed_at=r["desired_changed_at"],
        created_at=r["created_at"],
        phase=_PHASE[r["phase"]],
        pid=r["pid"],
        restart_count=r["restart_count"],
        last_exit=r["last_exit"],
        reason=r["reason"],
        message=r["message"],
        ports=dict(r["ports"]),
        ready=r["ready"],
        started_at=r["started_at"],
        observed_at=r["observed_at"],
        stuck=stuck_state(r),
        replaces=r["replaces"],
    )


@dataclass(frozen=True)
class Tally:
    """How many of a workload's instances share one generation, desired state, phase and
    readiness (and host, for a daemon, whose desired count is its hosts)."""

    generation: int
    desired: Desired
    phase: Phase
    ready: bool
    host: str | None
    count: int


# A workload's instances counted in groups; $2 names the daemons, whose groups keep the host.
_TALLIES = """
SELECT workload, generation, desired, phase, ready,
       CASE WHEN workload = ANY($2::text[]) THEN host END AS host, count(*)::int AS n
FROM instance WHERE workload = ANY($1::text[])
GROUP BY 1, 2, 3, 4, 5, 6
"""

# One page of instances in (workload, generation, id) order after the key $1..$3, at most $4
# rows, by filter (workload, host); the index instance_workload_generation_id serves the order.
# One statement per filter, not one with "$5 IS NULL OR": a prepared statement's generic plan
# could use no index for that. By host alone, the host's instances (instance_host_revision)
# are sorted: a host holds a bounded number.
_AFTER = "(workload, generation, id) > ($1, $2, $3)"
_ORDER = "ORDER BY workload, generation, id LIMIT $4"
_INSTANCE_PAGE = {
    (False, False): f"SELECT {INSTANCE_STATUS_COLUMNS} FROM instance WHERE {_AFTER} {_ORDER}",
    (True, False): f"""SELECT {INSTANCE_STATUS_COLUMNS} FROM instance
                       WHERE workload = $5 AND {_AFTER} {_ORDER}""",
    (False, True): f"""SELECT {INSTANCE_STATUS_COLUMNS} FROM instance
                       WHERE host = $5 AND {_AFTER} {_ORDER}""",
    (True, True): f"""SELECT {INSTANCE_STATUS_COLUMNS} FROM instance
                      WHERE workload = $5 AND host = $6 AND {_AFTER} {_ORDER}""",
}
# Before every key: no name is empty, no generation negative.
_FIRST_INSTANCE = ("", -1, "")


def _instance_key(r: asyncpg.Record) -> tuple[str, int, str]:
    return r["workload"], r["generation"], r["id"]


def _name_key(r: asyncpg.Record) -> tuple[str]:
    return (r["name"],)


class ListingStore:
    """The operator's reads over the shared pool (a base of `store.Store`)."""

    pool: Database

    async def page_instances(
        self, page: PageRequest, *, workload: str | None = None, host: str | None = None
    ) -> Page[InstanceStatusRow]:
        after = page.after or _FIRST_INSTANCE
        filters = [f for f in (workload, host) if f is not None]
        records = await self.pool.fetch(
            _INSTANCE_PAGE[(workload is not None, host is not None)],
            *after,
            page.size + 1,
            *filters,
        )
        kept = paging.page_of(paging.INSTANCES, records, size=page.size, key=_instance_key)
        rows = decode_each(kept.rows, instance_status_row, what="instance")
        return Page(rows, kept.next_token)

    async def instance_status(self, instance_id: str) -> InstanceStatusRow:
        row = await self.pool.fetchrow(
            f"SELECT {INSTANCE_STATUS_COLUMNS} FROM instance WHERE id = $1", instance_id
        )
        if row is None:
            raise NotFound(f'instance "{instance_id}" not found')
        return instance_status_row(row)

    async def stuck_instances(self) -> list[InstanceStatusRow]:
        """Every instance marked stuck (the partial index instance_stuck holds just those)."""
        rows = await self.pool.fetch(
            f"SELECT {INSTANCE_STATUS_COLUMNS} FROM instance WHERE stuck_reason <> ''"
        )
        return decode_each(rows, instance_status_row, what="instance")

    async def stuck_workloads(self) -> list[WorkloadRow]:
        rows = await self.pool.fetch("SELECT * FROM workload WHERE stuck_reason <> ''")
        return decode_each(rows, workload_row, what="workload")

    async def page_hosts(self, page: PageRequest) -> Page[HostRow]:
        """A page of hosts by name, each with what its instances hold (one snapshot)."""
        after = page.after[0] if page.after else ""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            records = await conn.fetch(
                "SELECT * FROM host WHERE name > $1 ORDER BY name LIMIT $2", after, page.size + 1
            )
            kept = paging.page_of(paging.HOSTS, records, size=page.size, key=_name_key)
            usage = await conn.fetch(USAGE_OF, [r["name"] for r in kept.rows])
        by_host: dict[str, list[asyncpg.Record]] = {}
        for u in usage:
            by_host.setdefault(u["host"], []).append(u)
        return Page([host_row(r, by_host.get(r["name"], [])) for r in kept.rows], kept.next_token)

    async def page_workloads(
        self, page: PageRequest
    ) -> tuple[Page[WorkloadRow], dict[str, list[Tally]]]:
        """A page of workloads by name, and their instances' tallies (one snapshot)."""
        after = page.after[0] if page.after else ""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            records = await conn.fetch(
                "SELECT * FROM workload WHERE name > $1 ORDER BY name LIMIT $2",
                after,
                page.size + 1,
            )
            kept = paging.page_of(paging.WORKLOADS, records, size=page.size, key=_name_key)
            rows = decode_each(kept.rows, workload_row, what="workload")
            tallies = await tallies_on(conn, rows)
        return Page(rows, kept.next_token), tallies

    async def tallies(self, workloads: Sequence[WorkloadRow]) -> dict[str, list[Tally]]:
        """Each workload's instances, counted (a workload without any maps to [])."""
        async with self.pool.acquire() as conn:
            return await tallies_on(conn, workloads)


async def tallies_on(conn: Conn, rows: Sequence[WorkloadRow]) -> dict[str, list[Tally]]:
    names = [r.workload.name for r in rows]
    daemons = [r.workload.name for r in rows if r.workload.kind is Kind.DAEMON]
    out: dict[str, list[Tally]] = {name: [] for name in names}
    if not names:
        return out
    for t in await conn.fetch(_TALLIES, names, daemons):
        desired, phase = _DESIRED[t["desired"]], _PHASE[t["phase"]]
        out[t["workload"]].append(
            Tally(t["generation"], desired, phase, t["ready"], t["host"], t["n"])
        )
    return out
