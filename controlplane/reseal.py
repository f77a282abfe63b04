"""`keel-controlplane reseal-secrets`: every stored secret_env value sealed again with the
sealing key (the first line of the key file), the step of a key rotation that lets the old key
go (runbooks/secret-key.md).

Neighbours: `controlplane.secrets` opens and seals; `controlplane.main` runs `run` as a
subcommand, beside `migrate`. Each workload, instance and revision row whose spec holds a value
sealed
with another key is rewritten, and nothing else moves: no generation, version or revision, so
no workload rolls and no agent hears of it (the values themselves are the same). A row is
rewritten only while it still holds the spec that was read, so an apply running meanwhile wins.
The leader's cache keeps the texts it read until its replicas restart; they still open, as long
as the old key stays in the file until then.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from controlplane import secrets
from controlplane.db import resolve_database_url
from controlplane.secrets import SecretBox
from controlplane.sql import Conn, create_pool
from keel.model import WorkloadSpec

# Rows that hold a sealed value (written only by SecretBox.seal, which always names its key).
_WORKLOADS = "SELECT name, spec FROM workload WHERE spec ? 'secret_env'"
_INSTANCES = "SELECT id, workload, spec FROM instance WHERE spec ? 'secret_env'"
_SET_WORKLOAD = "UPDATE workload SET spec = $3 WHERE name = $1 AND spec = $2"
_SET_INSTANCE = "UPDATE instance SET spec = $3 WHERE id = $1 AND spec = $2"
# Revisions too: an undo applies a revision's spec again, and a spec equal to an earlier
# revision's (compared as stored) is what keeps that revision's instances (`revision_store`).
_REVISIONS = """SELECT workload || '/' || revision AS key, workload, spec FROM workload_revision
                WHERE spec ? 'secret_env'"""
_SET_REVISION = """UPDATE workload_revision SET spec = $3
                   WHERE workload = split_part($1, '/', 1)
                     AND revision = split_part($1, '/', 2)::bigint AND spec = $2"""


async def run(args: argparse.Namespace) -> int:
    """The subcommand: reseal with the key file the flags name, report the counts."""
    key_file = args.secret_key_file or args.state_dir / secrets.KEY_FILE
    if not key_file.exists():
        # Never create a key here: sealing everything with a key no replica has would lock
        # every replica out of every value.
        raise secrets.SecretKeyError(f"no secret key file at {key_file}")
    box = await asyncio.to_thread(secrets.load_or_create, key_file, on_open_failure=lambda: None)
    url = await resolve_database_url(args.database_url, args.state_dir)
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            done = await reseal(conn, box)
    finally:
        await pool.close()
    print(
        f"resealed with key {box.sealing_key_id}: {done.workloads} workloads, "
        f"{done.instances} instances, {done.revisions} revisions"
        + (f"; {done.skipped} changed meanwhile, run again" if done.skipped else "")
    )
    return 1 if done.skipped else 0


@dataclass(frozen=True)
class Resealed:
    workloads: int
    instances: int
    skipped: int  # changed by someone else while this ran: run again
    revisions: int = 0


async def reseal(conn: Conn, box: SecretBox) -> Resealed:
    """Reseals every stored value not sealed with the box's sealing key; raises
    SecretsUnopenable (naming the row and the key) for a value no key in the file opens."""
    counts = {"workload": 0, "instance": 0, "revision": 0, "skipped": 0}
    for r in await conn.fetch(_WORKLOADS):
        await _one(conn, box, _SET_WORKLOAD, r["name"], r["name"], r["spec"], "workload", counts)
    for r in await conn.fetch(_INSTANCES):
        await _one(conn, box, _SET_INSTANCE, r["id"], r["workload"], r["spec"], "instance", counts)
    for r in await conn.fetch(_REVISIONS):
        await _one(conn, box, _SET_REVISION, r["key"], r["workload"], r["spec"], "revision", counts)
    return Resealed(counts["workload"], counts["instance"], counts["skipped"], counts["revision"])


async def _one(
    conn: Conn,
    box: SecretBox,
    statement: str,
    key: str,
    workload: str,
    stored: dict[str, object],
    table: str,
    counts: dict[str, int],
) -> None:
    spec = WorkloadSpec.from_json(stored)
    # Deterministic sealing: a value already sealed with the sealing key comes back the same.
    again = box.seal(workload, box.open(workload, spec)).to_json()
    if again == stored:
        return
    status = await conn.execute(statement, key, stored, again)
    counts[table if status.endswith(" 1") else "skipped"] += 1
