"""What a plan's transaction checks before it writes: that what the plan was made from is still
current. `instance_store.apply_plan` raises `Stale` (nothing written; the controller reads
again and plans again) when the workload's version moved, or when `moved_hosts` finds a host
whose state, cordon or revision is no longer what the plan read from the leader's cache
(`fleet_index.HostSeen`).
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.fleet_index import HostSeen
from controlplane.sql import Conn


class Stale(Exception):
    """A plan was made from a read that is no longer current: nothing is written."""

    def __init__(self, what: str, hosts: tuple[str, ...] = ()) -> None:
        super().__init__(what)
        self.what = what
        self.hosts = hosts


async def moved_hosts(
    conn: Conn, hosts_read: Mapping[str, HostSeen], *, bumped: Mapping[str, int]
) -> tuple[str, ...]:
    """The hosts no longer as the plan saw them. `bumped` counts the bumps this transaction
    made to each host (this write's, and a drain step's earlier ones): such a host is compared
    at the revision before them (it is locked by then, so nothing else moves it)."""
    if not hosts_read:
        return ()
    rows = await conn.fetch(
        "SELECT name, state, schedulable, revision FROM host WHERE name = ANY($1::text[])",
        sorted(hosts_read),
    )
    now = {r["name"]: r for r in rows}

    def moved(name: str, seen: HostSeen) -> bool:
        r = now.get(name)
        if r is None or (r["state"], r["schedulable"]) != (seen.state.value, seen.schedulable):
            return True
        return seen.revision is not None and r["revision"] - bumped.get(name, 0) != seen.revision

    return tuple(name for name, seen in sorted(hosts_read.items()) if moved(name, seen))
