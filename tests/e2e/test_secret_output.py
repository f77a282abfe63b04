"""End-to-end: a workload that prints its own secrets never gets them shown by Keel.

The command prints its secret_env values (one sent by the operator, one read from a file on
the host) to stderr and stdout and exits 1. The agent redacts them from the stderr tail it
reports (`keel.redact`), so the instance's message, `keelctl stuck` and `describe instance`
show `[redacted secret_env NAME]` where the value was, and `keelctl logs` does the same; with
`rollout: {auto_rollback: true}` the failure record (`rollout status`, `rollout history`, the
revision's row) and the RolloutRolledBack event carry the marker, never the value.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import asyncpg
import pytest
from harness import Fleet, wait_for

pytestmark = pytest.mark.e2e

# Prints every secret_env value it was given, on both streams, then fails.
LEAK = (
    "import os, sys\n"
    "line = f\"connect failed: DB_PASS={os.environ['DB_PASS']} "
    "FILE_PASS={os.environ['FILE_PASS']}\"\n"
    "print(line)\n"
    "print(line, file=sys.stderr)\n"
    "sys.exit(1)\n"
)
MARKERS = ("[redacted secret_env DB_PASS]", "[redacted secret_env FILE_PASS]")


def _secrets(fleet: Fleet) -> tuple[str, str, dict[str, Any]]:
    """A plain value and a host file's value, and the secret_env that names them."""
    plain, on_host = f"plain-{uuid.uuid4().hex}", f"on-host-{uuid.uuid4().hex}"
    path = fleet.root / "host-secrets" / "file-pass"
    path.parent.mkdir(exist_ok=True)
    path.write_text(on_host + "\n")
    path.chmod(0o600)
    return plain, on_host, {"DB_PASS": plain, "FILE_PASS": {"file": str(path)}}


def _clean(name: str, text: str, values: tuple[str, ...]) -> None:
    leaked = [v[:10] for v in values if v in text]
    assert not leaked, f"{name} shows secret values {leaked}: {text}"


def test_a_crash_loop_message_and_logs_show_markers_not_secrets(fleet: Fleet) -> None:
    """CRASH_LOOP's stderr tail, as stuck, describe instance and the instance listing show it,
    and keelctl logs: the printed line with each value replaced by its marker."""
    plain, on_host, secret_env = _secrets(fleet)
    values = (plain, on_host)
    doc = fleet.manifest("leaky", replicas=1, command=[sys.executable, "-c", LEAK])
    doc["spec"]["secret_env"] = secret_env
    fleet.apply_ok(doc)

    def crash_loop() -> tuple[str, str] | None:
        for o in fleet.keelctl_json("stuck").get("objects", []):
            if o["object"].startswith("instance/leaky-") and o["stuck"]["reason"] == "CRASH_LOOP":
                message: str = o["stuck"]["message"]
                return (
                    (o["object"].removeprefix("instance/"), message)
                    if "stderr" in message
                    else None
                )
        return None

    instance, message = wait_for(crash_loop, timeout=60, message="leaky in CRASH_LOOP")
    assert "connect failed: DB_PASS=" in message and all(m in message for m in MARKERS), message
    _clean("the stuck message", message, values)
    for args in (("stuck",), ("describe", "instance", instance), ("get", "instances")):
        for json_output in (False, True):
            result = fleet.keelctl(*args, json_output=json_output)
            assert result.returncode == 0, result.stderr
            _clean(f"keelctl {' '.join(args)}", result.stdout + result.stderr, values)
    described = fleet.keelctl_ok("describe", "instance", instance).stdout
    assert MARKERS[0] in described, described

    logs = fleet.keelctl("logs", instance, "--tail", "20")
    assert logs.returncode == 0, logs.stderr
    assert all(m in logs.stdout and m in logs.stderr for m in MARKERS), logs
    _clean("keelctl logs", logs.stdout + logs.stderr, values)
    # The workload's own files on the host hold what it printed: redaction is on the way out.
    assert any(plain in p.read_text() for p in fleet.root.rglob("stderr.log")), "it printed"


def test_a_rolled_back_revisions_record_and_events_show_markers_not_secrets(
    fleet: Fleet,
) -> None:
    """A revision that prints its secrets and crashes is rolled back: the failure record
    (rollout status, rollout history, the revision's row) and the events carry the stderr line
    with markers, never a value."""
    plain, on_host, secret_env = _secrets(fleet)
    values = (plain, on_host)
    good = fleet.manifest("web", replicas=2, max_unavailable=1, max_surge=1)
    good["spec"]["secret_env"] = secret_env
    fleet.apply_ok(good)
    fleet.wait_running("web", 2, generation=1)
    leaky = fleet.manifest(
        "web",
        replicas=2,
        max_unavailable=1,
        max_surge=1,
        command=[sys.executable, "-c", LEAK],
        rollout={"auto_rollback": True},
    )
    leaky["spec"]["secret_env"] = secret_env
    fleet.apply_ok(leaky)

    def rolled_back() -> dict[str, Any] | None:
        revisions = fleet.keelctl_json("rollout", "history", "web")["revisions"]
        two = [
            r for r in revisions if int(r.get("number", 0)) == 2 and r.get("state") == "ROLLED_BACK"
        ]
        return two[0] if two else None

    record = wait_for(rolled_back, timeout=90, interval=0.3, message="revision 2 rolled back")
    history = fleet.keelctl("rollout", "history", "web", json_output=True).stdout
    assert all(m in history for m in MARKERS), history
    _clean("rollout history -o json", history, values)
    _clean("the revision's record", str(record), values)
    for json_output in (False, True):
        status = fleet.keelctl("rollout", "status", "web", json_output=json_output)
        _clean("rollout status", status.stdout + status.stderr, values)
        events = fleet.keelctl("events", "--for", "workload/web", json_output=json_output)
        _clean("events", events.stdout + events.stderr, values)
    [rolled] = [
        e
        for e in fleet.keelctl_json("events", "--for", "workload/web")["events"]
        if e["kind"] == "RolloutRolledBack"
    ]
    assert "CRASH_LOOP" in rolled["message"] and MARKERS[0] in rolled["message"], rolled
    assert fleet.database_url
    _clean("workload_revision and event rows", _rows(fleet.database_url), values)


def _rows(url: str) -> str:
    async def read() -> str:
        conn = await asyncpg.connect(url)
        try:
            revisions = await conn.fetch("SELECT failure::text FROM workload_revision")
            events = await conn.fetch("SELECT message FROM event")
            instances = await conn.fetch("SELECT * FROM instance")
            return "\n".join(str(list(r.values())) for r in (*revisions, *events, *instances))
        finally:
            await conn.close()

    return asyncio.run(read())
