"""End-to-end: a write whose COMMIT is cut off from its caller, retried with the same request id.

A deferred trigger the test adds to the control plane's own embedded database makes the COMMIT
of a marked write slow; keelctl gives up first (DEADLINE_EXCEEDED), yet the write commits. The
same command with the same request id is answered from the record written in that write's
transaction: the first answer, not `unchanged` and not a second change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import asyncpg
import faults
import pytest
from embedded import embedded
from harness import Fleet
from procs import embedded_url

pytestmark = pytest.mark.e2e


SLOW_COMMIT = """
CREATE FUNCTION keel_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(%s); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER keel_test_slow_commit AFTER INSERT ON request
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.id LIKE 'slow-%%')
    EXECUTE FUNCTION keel_test_slow_commit();
"""
NO_SLOW_COMMIT = """
DROP TRIGGER keel_test_slow_commit ON request;
DROP FUNCTION keel_test_slow_commit();
"""


def _sql(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def _slow_commits(fleet: Fleet, seconds: float) -> Iterator[None]:
    """The COMMIT of every write whose request id starts with `slow-` takes `seconds` (a
    deferred trigger the test adds to the control plane's own database, removed after)."""
    url = embedded_url(fleet.embedded_pgdata)
    _sql(url, SLOW_COMMIT % seconds)
    try:
        yield
    finally:
        _sql(url, NO_SLOW_COMMIT)


@pytest.fixture
def patient_fleet() -> Iterator[Fleet]:
    """An embedded fleet whose statements may take 10s: a slow commit is cut off from its
    caller, not cancelled by the control plane."""
    with embedded(["--db-timeout", "10s"]) as f:
        yield f


def test_a_write_cut_off_mid_commit_is_answered_from_its_record_when_retried(
    patient_fleet: Fleet,
) -> None:
    """An apply whose COMMIT outlasts keelctl's timeout: keelctl reports DEADLINE_EXCEEDED, the
    write commits anyway; the same command with the same request id prints the first answer
    (configured, generation 2) instead of `unchanged` or a second change, and the control
    plane counts the replay."""
    fleet = patient_fleet
    fleet.apply_ok(fleet.manifest("web", replicas=1))
    fleet.wait_running("web", 1)
    path = str(fleet.write_manifest(fleet.manifest("web", replicas=1, env={"V": "2"})))
    with _slow_commits(fleet, seconds=4):
        cut = fleet.keelctl("--request-id", "slow-1", "--timeout", "1s", "apply", "-f", path)
        cut_at = time.monotonic()
        assert cut.returncode == 1 and "(DEADLINE_EXCEEDED)" in cut.stderr, cut
        again = fleet.keelctl("--request-id", "slow-1", "apply", "-f", path)
        answered_s = time.monotonic() - cut_at
    assert again.returncode == 0, again
    assert again.stdout.strip() == "workload/web configured (generation 2)"
    assert fleet.workload("web").generation == 2
    replayed = fleet.metrics()['keel_requests_replayed_total{method="ApplyWorkload"}']
    assert replayed == 1
    events = fleet.keelctl_json("events", "--for", "workload/web", "--limit", "100")["events"]
    assert [e["kind"] for e in events].count("WorkloadApplied") == 2  # create, one change
    assert "unchanged" in fleet.keelctl_ok("apply", "-f", path).stdout
    fleet.wait_running("web", 1, generation=2)
    faults.record(
        "a write's COMMIT cut off from its caller (keelctl timeout 1 s, commit 4 s)",
        observed="keelctl DEADLINE_EXCEEDED, the write committed; retried with the same "
        "request id: the first answer (configured, generation 2), one replay counted",
        lost="nothing, applied once",
        recover_s=answered_s,
    )
