"""A workload whose reconcile keeps failing is reported stuck, and clears once it succeeds.

The fault is real: a trigger the test puts on the instance table makes Postgres refuse every
instance of one workload, so each plan write for it fails, as a full disk would.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from harness import Fleet, wait_for

pytestmark = pytest.mark.e2e

FAULT_TEXT = "could not extend file: No space left on device"

INSTALL_FAULT = f"""
CREATE FUNCTION keel_e2e_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.workload = 'doomed' THEN
        RAISE EXCEPTION '{FAULT_TEXT}';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER keel_e2e_fault BEFORE INSERT ON instance
    FOR EACH ROW EXECUTE FUNCTION keel_e2e_fault();
"""
REMOVE_FAULT = "DROP TRIGGER keel_e2e_fault ON instance; DROP FUNCTION keel_e2e_fault();"


def execute(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def stuck_objects(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {o["object"]: o["stuck"] for o in fleet.keelctl_json("stuck").get("objects", [])}


def test_a_workload_whose_reconcile_keeps_failing_is_stuck_until_it_succeeds(
    tmp_path: Path, database_factory: Callable[[], AbstractContextManager[str]]
) -> None:
    """Past its deadline the workload is RECONCILE_FAILING with the error a person reads (no
    SQL, no class name), its runbook and next command; removing the fault clears it and the
    instance is placed."""
    # Retries back off to at most 1 s, so the fix is picked up within a second.
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=1, controlplane_args=["--retry-max", "1s"]) as f,
    ):
        execute(url, INSTALL_FAULT)
        f.apply_ok(f.manifest("doomed", replicas=1, deadline="2s"))

        def failing() -> dict[str, Any] | None:
            stuck = stuck_objects(f).get("workload/doomed")
            return stuck if stuck and stuck["reason"] == "RECONCILE_FAILING" else None

        stuck = wait_for(failing, timeout=30, message="doomed stuck RECONCILE_FAILING")
        message = stuck["message"]
        assert FAULT_TEXT in message
        assert not re.search(r"\b(INSERT|UPDATE|SELECT)\b|[A-Z][a-z]+Error\b", message), message
        assert stuck["runbook"] == "runbooks/stuck/reconcile-failing.md"
        assert stuck["next_command"] == "keelctl events --for workload/doomed"
        table = f.keelctl_ok("stuck").stdout
        assert "RECONCILE_FAILING" in table and "workload/doomed" in table
        assert f.instances("doomed") == []

        execute(url, REMOVE_FAULT)
        f.wait_running("doomed", 1)
        wait_for(
            lambda: "workload/doomed" not in stuck_objects(f),
            timeout=30,
            message="doomed no longer stuck",
        )
        events = f.keelctl_json("events", "--for", "workload/doomed")["events"]
        detected = [e for e in events if e["kind"] == "StuckDetected"]
        assert detected and detected[0]["message"].startswith("RECONCILE_FAILING: ")
        assert FAULT_TEXT in detected[0]["message"]
        assert "StuckCleared" in [e["kind"] for e in events]
