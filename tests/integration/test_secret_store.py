"""Secret env values in Postgres: stored sealed only, an unchanged value leaves the workload
alone and a changed one rolls it, the agent's assignment carries them opened (a tombstone
never needs the key), and a plain value never reaches the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from plans import write_plan

from controlplane import convert
from controlplane.secrets import SecretBox, SecretsUnopenable, load_or_create
from controlplane.store import Store
from keel.model import Desired, Resources, SecretValue, Workload, WorkloadSpec

SECRET = "pg-dump-must-not-see-this"


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
