"""Every log line is one JSON object: structlog's own, the standard library's (grpc, asyncio),
warnings and uncaught exceptions; exceptions are structured fields without local variables."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import logging, threading, warnings
    import structlog
    from keel import logs

    logs.configure("json", component="agent")
    log = structlog.get_logger("agent.test")

    def fail():
        secret_local = "s3cr3t-local-value"
        raise ValueError("boom")

    try:
        fail()
    except ValueError:
        log.exception("structlog with an exception")
    try:
        fail()
    except ValueError:
        logging.getLogger("grpc._cython.cygrpc").error("grpc says", exc_info=True)
    logging.getLogger("asyncio").warning("Task exception was never retrieved")
    logging.getLogger("chatty").info("below warning: not shown")
    warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    t = threading.Thread(target=fail, name="worker")
    t.start()
    t.join()
    fail()
    """
)


def test_every_line_is_json_with_structured_exceptions() -> None:
    """Library, warning and uncaught-exception lines are JSON like structlog's own."""
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1  # the uncaught exception still ends the process
    lines = done.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    events = [e["event"] for e in entries]
    assert events[:3] == [
        "structlog with an exception",
        "grpc says",
        "Task exception was never retrieved",
    ]
    assert "not shown" not in done.stderr
    assert any("deprecated thing" in e for e in events)
    assert events[-2:] == ["uncaught exception in a thread", "uncaught exception"]
    by_event = {e["event"]: e for e in entries}
    assert by_event["grpc says"]["logger"] == "grpc._cython.cygrpc"
    assert by_event["grpc says"]["level"] == "error"
    assert by_event["uncaught exception in a thread"]["thread"] == "worker"
    for name in ("structlog with an exception", "grpc says", "uncaught exception"):
        entry = by_event[name]
        assert entry["component"] == "agent"
        [exc] = entry["exception"]
        assert (exc["exc_type"], exc["exc_value"]) == ("ValueError", "boom")
        assert exc["frames"][-1]["name"] == "fail"
    assert "Traceback" not in done.stderr
    assert "s3cr3t-local-value" not in done.stderr  # frames carry no local variables
