"""Cordon and uncordon in Postgres: hosts made unschedulable, or schedulable again, all in one
transaction (all or none), with an event per host that changed and who changed it.

Neighbours: `fleet` (the Cordon and Uncordon RPCs) calls it through `store.Store`; the host rows
and their reads are `hosts`. Why a cordon never races a placement: the scheduler never places on
a cordoned host (`scheduler.eligible`), and a plan made from a read taken before the cordon is
refused by its own transaction, which compares the cordon it saw of every host it places on
(`instance_store.apply_plan`) under the host's row lock, which this transaction holds too. The
`*` notification makes the leader's cache read the hosts again and look at every workload, so
an uncordon lets waiting instances be placed at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.errors import FailedPrecondition, NotFound
from controlplane.hosts import HostRow, HostStore, hosts_on
from controlplane.idempotency import Once, once_in
from controlplane.scheduler import format_selector
from controlplane.sql import WORKLOAD_CHANNEL, Conn
from keel.text import first_of

# How many host names a message lists before it says "and N more".
_MESSAGE_HOSTS = 10


@dataclass(frozen=True)
class CordonResult:
    """Every selected host as it is after the write, and those the write changed."""

    hosts: list[HostRow]
    changed: list[str]


class CordonStore(HostStore):
    """Cordon and uncordon over the shared pool (a base of `store.Store`)."""

    async def cordon(
        self,
        names: Sequence[str],
        selector: Mapping[str, str],
        *,
        reason: str,
        actor: str,
        once: Once[CordonResult] | None = None,
    ) -> CordonResult:
        """Marks the hosts named and those matching `selector` unschedulable, with `reason` and
        `actor`. A host already cordoned keeps its cordon (reason, actor, time) as it was:
        cordoning twice is one cordon. NotFound, and nothing changed, if a named host does not
        exist or nothing is selected. `once`: the request id's record (`idempotency`)."""

        async def write() -> CordonResult:
            selected = await select_hosts(conn, names, selector)
            changed = await cordon_hosts(conn, selected, reason=reason, actor=actor)
            return CordonResult(await hosts_on(conn, selected), changed)

        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(conn, once, write)

    async def resolve_hosts(self, names: Sequence[str], selector: Mapping[str, str]) -> list[str]:
        """The hosts named and those matching `selector`, as `cordon` would select them, read
        without a lock (a dry run changes nothing). NotFound like `cordon`."""
        async with self.pool.acquire() as conn:
            return await select_hosts(conn, names, selector, lock=False)

    async def uncordon(
        self,
        names: Sequence[str],
        selector: Mapping[str, str],
        *,
        actor: str,
        once: Once[CordonResult] | None = None,
    ) -> CordonResult:
        """Makes the hosts named and those matching `selector` schedulable again and forgets
        their cordon (a drained host runs its daemons again); a host already schedulable is
        left as it is. NotFound, and nothing changed, if a named host does not exist or nothing
        is selected; FailedPrecondition if a drain runs on one of them (cancel it first)."""

        async def write() -> CordonResult:
            selected = await select_hosts(conn, names, selector)
            draining = await conn.fetch(
                """SELECT id, hosts FROM operation
                   WHERE state IN ('PENDING', 'RUNNING') AND hosts && $1::text[]
                   ORDER BY created_at""",
                selected,
            )
            if draining:
                op = draining[0]
                hosts = sorted(set(op["hosts"]) & set(selected))
                raise FailedPrecondition(
                    f"{_names(hosts)} {'is' if len(hosts) == 1 else 'are'} being drained by "
                    f"{op['id']}; cancel it first (keelctl op cancel {op['id']} --uncordon); "
                    "nothing was changed"
                )
            changed = await uncordon_hosts(conn, selected, actor=actor)
            return CordonResult(await hosts_on(conn, selected), changed)

        async with self.pool.acquire() as conn, conn.transaction():
            return await once_in(conn, once, write)


async def cordon_hosts(
    conn: Conn, hosts: Sequence[str], *, reason: str, actor: str, message: str = ""
) -> list[str]:
    """Cordons the hosts not cordoned yet (locked by the caller); returns those it changed,
    each with a HostCordoned event (`message`, by default the reason)."""
    rows = await conn.fetch(
        """UPDATE host SET schedulable = false, cordon_reason = $2, cordon_actor = $3,
                  cordoned_at = now()
           WHERE name = ANY($1::text[]) AND schedulable
           RETURNING name""",
        list(hosts),
        reason,
        actor,
    )
    changed = sorted(r["name"] for r in rows)
    text = message or (f"cordoned: {reason}" if reason else "cordoned")
    await _record(conn, changed, "HostCordoned", text, actor=actor)
    return changed


async def uncordon_hosts(conn: Conn, hosts: Sequence[str], *, actor: str) -> list[str]:
    """Uncordons the hosts that are cordoned (locked by the caller); returns those it changed,
    each with a HostUncordoned event."""
    rows = await conn.fetch(
        """UPDATE host SET schedulable = true, cordon_reason = '', cordon_actor = '',
                  cordoned_at = NULL, drained = false
           WHERE name = ANY($1::text[]) AND NOT schedulable
           RETURNING name""",
        list(hosts),
    )
    changed = sorted(r["name"] for r in rows)
    await _record(conn, changed, "HostUncordoned", "uncordoned", actor=actor)
    return changed


_SELECT = """SELECT name FROM host
    WHERE name = ANY($1::text[]) OR ($2::jsonb <> '{}'::jsonb AND labels @> $2::jsonb)
    ORDER BY name"""


async def select_hosts(
    conn: Conn, names: Sequence[str], selector: Mapping[str, str], *, lock: bool = True
) -> list[str]:
    """The hosts named and those whose labels match `selector` (none when it is empty), locked
    in name order (the lock order every writer of hosts keeps) unless not `lock`. NotFound if a
    named host does not exist or nothing is selected."""
    rows = await conn.fetch(
        _SELECT + " FOR UPDATE" if lock else _SELECT, list(names), dict(selector)
    )
    found = [r["name"] for r in rows]
    missing = sorted(set(names) - set(found))
    if missing:
        noun = "host" if len(missing) == 1 else "hosts"
        raise NotFound(f"{noun} {_names(missing)} not found; nothing was changed")
    if not found:
        raise NotFound(
            f"no host has labels {format_selector(selector)}; nothing was changed "
            "(keelctl get hosts -o json lists every host's labels)"
        )
    return found


async def _record(conn: Conn, hosts: Sequence[str], kind: str, message: str, *, actor: str) -> None:
    """One event per host that changed, in one statement; the hosts changed: look again."""
    if not hosts:
        return
    await conn.execute(
        """INSERT INTO event (object, kind, actor, message)
           SELECT 'host/' || h, $2, $3, $4 FROM unnest($1::text[]) AS h""",
        list(hosts),
        kind,
        actor,
        message,
    )
    await conn.execute("SELECT pg_notify($1, '*')", WORKLOAD_CHANNEL)


def _names(names: Sequence[str]) -> str:
    return first_of([f'"{n}"' for n in names], _MESSAGE_HOSTS)
