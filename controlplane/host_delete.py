"""Deleting a host: `keelctl delete host NAME [--force]`, one transaction.

A host row lives for ever once its agent said Hello; a host that is gone (not READY for longer
than --gone-after: `liveness.gone`) is removed here. Refused, changing nothing:
- while it is READY (its agent heartbeats: deleted now, it would register again at once);
- while a drain that names it is running (cancel it first);
- while instances are placed on it (live ones, and tombstones its agent never confirmed),
  naming them, unless `force`: then they are deleted with the host, in the same transaction.
  Their workloads take a new desired version and are notified, so their controllers place
  replacements elsewhere (as fencing does, `hosts.HostStore.fence_host`), and a deleting
  workload whose last instance was there is dropped.
An event `HostDeleted` on `host/NAME` records the actor and what was removed.

A deleted host's agent that connects again registers as a new host (`hosts.HostStore.
register_host`): it is sent its full, empty, assignment set, so it stops whatever it still runs,
and only then is given new instances (daemons, placements).

Lock order (see `sql`): the workloads with instances on the host (in name order), the host,
then its instances. A host that is not READY gets no placements, so no plan adds an instance of
another workload meanwhile. Neighbours: `fleet` (the RPC), `liveness` (gone), `hosts`.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.errors import FailedPrecondition, NotFound
from controlplane.idempotency import Once, once_in
from controlplane.sql import (
    HOST_CHANNEL,
    WORKLOAD_CHANNEL,
    Conn,
    Database,
    bump_versions,
    notify,
    record_event,
    workload_payload,
)
from keel.text import first_of

# How many instances a refusal or an event names before it says "and N more".
NAMED = 10


@dataclass(frozen=True)
class HostDeleted:
    name: str
    removed: tuple[str, ...]  # ids of the instances deleted with it (force)


async def delete_host(
    db: Database,
    name: str,
    *,
    force: bool,
    actor: str,
    once: Once[HostDeleted] | None = None,
) -> HostDeleted:
    """Deletes the host (and with `force` its instances); see the module docstring. `once`:
    the request id's record, in the same transaction (`idempotency`)."""
    async with db.acquire() as conn, conn.transaction():
        return await once_in(conn, once, lambda: _delete(conn, name, force=force, actor=actor))


async def _delete(conn: Conn, name: str, *, force: bool, actor: str) -> HostDeleted:
    await conn.execute(
        """SELECT 1 FROM workload WHERE name IN (
               SELECT workload FROM instance WHERE host = $1)
           ORDER BY name FOR UPDATE""",
        name,
    )
    host = await conn.fetchrow("SELECT state, connected FROM host WHERE name = $1 FOR UPDATE", name)
    if host is None:
        raise NotFound(f'host "{name}" not found')
    if host["state"] == "READY":
        raise FailedPrecondition(
            f'host "{name}" is READY (its agent heartbeats): stop its agent first; deleted '
            "now it would register again at once"
        )
    drains = await conn.fetch(
        """SELECT id FROM operation WHERE state IN ('PENDING', 'RUNNING') AND $1 = ANY(hosts)
           ORDER BY id""",
        name,
    )
    if drains:
        ops = ", ".join(r["id"] for r in drains)
        raise FailedPrecondition(
            f'host "{name}" is being drained by {ops}: cancel it first (keelctl op cancel)'
        )
    rows = await conn.fetch(
        "SELECT id, workload, desired FROM instance WHERE host = $1 ORDER BY id", name
    )
    ids = [r["id"] for r in rows]
    if rows and not force:
        unconfirmed = " (removal unconfirmed)"
        shown = first_of([r["id"] + unconfirmed * (r["desired"] == "REMOVED") for r in rows], NAMED)
        raise FailedPrecondition(
            f'host "{name}" has {len(rows)} instance(s): {shown}; drain it first, or '
            "delete it with --force, which removes them (their workloads replace them "
            "elsewhere)"
        )
    workloads = sorted({r["workload"] for r in rows})
    if rows:
        await conn.execute("DELETE FROM instance WHERE host = $1", name)
        # What should run changed (a replacement is wanted), as after fencing.
        await conn.execute(
            """UPDATE workload SET desired_changed_at = CASE WHEN desired_pending
                                                     THEN desired_changed_at ELSE now() END,
                                  desired_pending = true
               WHERE name = ANY($1::text[])""",
            workloads,
        )
    versions = await bump_versions(conn, workloads, desired=True)
    await conn.execute("DELETE FROM host WHERE name = $1", name)
    message = "deleted"
    if rows:
        message = f"deleted with --force; {len(rows)} instance(s) removed: {first_of(ids, NAMED)}"
    await record_event(conn, f"host/{name}", "HostDeleted", message, actor=actor)
    await conn.execute("SELECT pg_notify($1, $2)", HOST_CHANNEL, name)
    await notify(
        conn, WORKLOAD_CHANNEL, [workload_payload(v.workload, v.version) for v in versions]
    )
    return HostDeleted(name, tuple(ids))
