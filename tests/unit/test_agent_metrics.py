"""The agent's connection metrics: keel_agent_disconnected_seconds is 0 while connected and,
computed at scrape time, the seconds since the stream was lost otherwise."""

from __future__ import annotations

from agent.metrics import AgentMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def disconnected(m: AgentMetrics) -> float | None:
    return m.registry.get_sample_value("keel_agent_disconnected_seconds")


def test_disconnected_seconds_follows_the_stream() -> None:
    """Since start before the first stream, 0 while connected, then growing from the loss."""
    clock = Clock()
    m = AgentMetrics(clock=clock)
    clock.now += 4
    assert disconnected(m) == 4.0  # on local state only, since the agent started
    m.connection(True, at=clock.now)
    clock.now += 60
    assert disconnected(m) == 0.0
    assert m.registry.get_sample_value("keel_agent_connected") == 1.0
    m.connection(False, at=clock.now)
    clock.now += 2.5
    assert disconnected(m) == 2.5
    clock.now += 300
    assert disconnected(m) == 302.5  # grows between updates: computed when scraped
    m.connection(True, at=clock.now)
    assert disconnected(m) == 0.0
