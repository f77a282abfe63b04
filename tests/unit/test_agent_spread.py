"""Which control-plane replica an agent tries first (`agent.sync.first_address`)."""

from __future__ import annotations

from collections import Counter

from agent.sync import first_address


def test_a_fleet_given_one_list_spreads_over_every_replica() -> None:
    """3,000 hosts over 3 replicas: each gets about a third."""
    counts = Counter(first_address(f"host-{n}", 3) for n in range(3000))
    assert set(counts) == {0, 1, 2}
    assert all(800 <= c <= 1200 for c in counts.values()), counts


def test_a_host_goes_back_to_the_same_replica() -> None:
    """Stable across processes and restarts (a CRC of the name, not Python's salted hash)."""
    assert [first_address(f"host-{n}", 3) for n in range(5)] == [2, 1, 2, 0, 0]
    assert first_address("web-17", 1) == 0
