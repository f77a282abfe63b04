"""Secret env values in Postgres: stored sealed only, an unchanged value leaves the workload
alone and a changed one rolls it, the agent's assignment carries them opened (a tombstone
never needs the key), and a plain value never reaches the store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from plans import write_plan

from controlplane import convert
from controlplane.secrets import SecretBox, SecretsUnopenable, load_or_create, new_key_line
from controlplane.store import Store
from keel.model import Desired, Resources, SecretValue, Workload, WorkloadSpec

SECRET = "pg-dump-must-not-see-this"
BIN = Path(sys.executable).parent


def workload(value: str) -> Workload:
    return Workload(
        name="db",
        replicas=1,
        spec=WorkloadSpec(
            command=("sleep", "1000"),
            resources=Resources(100, 64),
            secret_env={"DB_PASS": SecretValue(value=value), "F": SecretValue(file="/etc/f")},
        ),
    )


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None)


def sealed(box: SecretBox, value: str) -> Workload:
    w = workload(value)
    return Workload(name=w.name, replicas=w.replicas, spec=box.seal(w.name, w.spec))


async def test_the_database_holds_no_secret_and_a_changed_one_rolls(
    store: Store, box: SecretBox
) -> None:
    """Applied twice unchanged: one generation; a new value: a new generation."""
    row, result = await store.apply_workload(sealed(box, SECRET))
    assert (result, row.generation) == ("created", 1)
    row, result = await store.apply_workload(sealed(box, SECRET))
    assert (result, row.generation) == ("unchanged", 1)
    row, result = await store.apply_workload(sealed(box, SECRET + "-rotated"))
    assert (result, row.generation) == ("configured", 2)
    dump = await store.pool.fetch("SELECT spec::text AS spec FROM workload")
    assert all(SECRET not in r["spec"] for r in dump) and "/etc/f" in dump[0]["spec"]


async def test_a_plain_value_never_reaches_the_store(store: Store) -> None:
    with pytest.raises(ValueError, match="unsealed"):
        await store.apply_workload(workload(SECRET))
    assert await store.pool.fetchval("SELECT count(*) FROM workload") == 0


async def test_the_assignment_carries_values_opened_and_tombstones_need_no_key(
    store: Store, box: SecretBox, tmp_path: Path
) -> None:
    """The agent's message has the value; a replica without the key fails it, not omits it;
    a tombstone goes out without opening anything."""
    await store.register_host("h1", labels={}, capacity=Resources(4000, 8192), agent_version="t")
    await store.apply_workload(sealed(box, SECRET))
    await write_plan(store, "db", create_on=["h1"])
    _, rows = await store.host_assignments("h1", since=None)
    stored = rows[0].spec.secret_env["DB_PASS"]
    assert stored.sealed and SECRET not in stored.sealed
    message = convert.assignments_pb(True, 1, rows, secrets=box)
    spec = message.assignments.assignments[0].spec
    assert spec.secret_env["DB_PASS"].value == SECRET
    assert spec.secret_env["F"].file == "/etc/f"

    other = load_or_create(tmp_path / "other.key", on_open_failure=lambda: None)
    with pytest.raises(SecretsUnopenable):
        convert.assignments_pb(True, 1, rows, secrets=other)

    await write_plan(store, "db", remove=[rows[0].id])
    _, rows = await store.host_assignments("h1", since=None)
    assert rows[0].desired is Desired.REMOVED
    tombstone = convert.assignments_pb(True, 1, rows, secrets=other).assignments.assignments[0]
    assert tombstone.spec.secret_env["DB_PASS"].redacted


async def test_reseal_moves_every_value_to_the_new_key_and_nothing_else(
    store: Store, box: SecretBox, tmp_path: Path, migrated_database: str
) -> None:
    """Rotation: new key first, `keel-controlplane reseal-secrets`; every text is sealed with
    the new key, no generation, version or revision moves, and the old key can then go."""
    await store.register_host("h1", labels={}, capacity=Resources(4000, 8192), agent_version="t")
    await store.apply_workload(sealed(box, SECRET))
    await write_plan(store, "db", create_on=["h1"])
    before = await store.pool.fetch(
        "SELECT w.generation, w.version, h.revision FROM workload w, host h"
    )
    key = tmp_path / "secret.key"
    old_lines = key.read_text()
    key.write_text(new_key_line() + "\n" + old_lines)

    done = await asyncio.to_thread(
        subprocess.run,
        [
            str(BIN / "keel-controlplane"),
            "--database-url",
            migrated_database,
            "--state-dir",
            str(tmp_path),
            "reseal-secrets",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 workloads, 1 instances, 1 revisions" in done.stdout and SECRET not in done.stdout

    rotated = load_or_create(key, on_open_failure=lambda: None)
    texts = [
        r["spec"] for r in await store.pool.fetch("SELECT spec::text AS spec FROM workload")
    ] + [
        r["spec"]
        for table in ("instance", "workload_revision")
        for r in await store.pool.fetch(f"SELECT spec::text AS spec FROM {table}")
    ]
    assert all(f"keel1:{rotated.sealing_key_id}:" in t and SECRET not in t for t in texts)
    assert (
        await store.pool.fetch("SELECT w.generation, w.version, h.revision FROM workload w, host h")
        == before
    )
    # The old key can go: the new one alone opens everything, and the same value re-applied
    # is unchanged (no roll).
    key.write_text(rotated_only(key))
    new_only = load_or_create(key, on_open_failure=lambda: None)
    _, rows = await store.host_assignments("h1", since=None)
    assert new_only.open("db", rows[0].spec).secret_env["DB_PASS"].value == SECRET
    row, result = await store.apply_workload(sealed(new_only, SECRET))
    assert (result, row.generation) == ("unchanged", 1)


def rotated_only(key: Path) -> str:
    """The key file without its old key (the first key line is the new one)."""
    keys = [line for line in key.read_text().splitlines() if line and not line.startswith("#")]
    return keys[0] + "\n"
