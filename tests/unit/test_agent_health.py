"""The agent's health monitor: results belong to the process they probed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from agent.health import HealthMonitor, ProbeResult, Target
from keel.model import HealthCheck


async def test_a_probe_of_a_replaced_process_is_dropped() -> None:
    """A failing probe still in flight when the instance restarts does not mark the new
    process unhealthy (nor start its failing_since)."""
    release = asyncio.Event()

    async def slow_failing_probe(
        check: HealthCheck,
        *,
        ports: Mapping[str, int],
        env: Mapping[str, str],
        timeout_s: float,
        user: str = "",
    ) -> ProbeResult:
        await release.wait()
        return ProbeResult(False, "connection refused")

    target = Target("web-1-abc123", HealthCheck(tcp="http"), {"http": 1}, {})
    monitor = HealthMonitor(
        targets=lambda: [target],
        on_change=lambda: None,
        prober=slow_failing_probe,
        interval_s=1.0,
        timeout_s=1.0,
    )
    probing = asyncio.create_task(monitor.probe_all())
    await asyncio.sleep(0)
    monitor.forget("web-1-abc123")  # the process exited and is being restarted
    release.set()
    await probing
    assert monitor.result("web-1-abc123") is None
    assert monitor.failing_since("web-1-abc123") is None

    release.set()
    await monitor.probe_all()  # the next probe is of the new process: it counts
    assert monitor.result("web-1-abc123") == ProbeResult(False, "connection refused")
