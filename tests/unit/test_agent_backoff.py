"""Table tests for the reconnect back-off (`agent.backoff`): jittered, capped, and reset only
after a stream that stayed up, so a control plane that drops streams is not stormed."""

from __future__ import annotations

import pytest

from agent.backoff import Reconnects, reconnect_delay


@pytest.mark.parametrize(
    ("attempt", "rng", "expected"),
    [
        (0, 0.0, 0.1),
        (0, 1.0, 0.2),
        (1, 0.0, 0.2),
        (3, 1.0, 1.6),
        (10, 0.0, 5.0),
        (10, 1.0, 10.0),
        (1000, 0.5, 7.5),
    ],
)
def test_reconnect_delay_is_jittered_exponential_and_capped(
    attempt: int, rng: float, expected: float
) -> None:
    """Reconnect waits grow from the base, stay under the cap, and carry jitter."""
    got = reconnect_delay(attempt, base_s=0.2, max_s=10.0, rng=lambda: rng)
    assert got == pytest.approx(expected)


# Each case: how long each attempt's stream stayed up (None: it never opened), and the waits
# that follow (rng 1.0: the whole ceiling), with base 1 s, cap 8 s, reset after 30 s up.
RECONNECT_CASES: list[tuple[str, list[float | None], list[float]]] = [
    ("refused connections back off to the cap", [None] * 6, [1, 2, 4, 8, 8, 8]),
    (
        "streams dropped at once back off like refused ones (no storm)",
        [0.0, 0.5, 2.0, 29.9, 0.0],
        [1, 2, 4, 8, 8],
    ),
    ("a stream that stayed up starts over from the base", [None, None, None, 30.0], [1, 2, 4, 1]),
    (
        "after a healthy stream, failures back off again",
        [None, None, 3600.0, None, None],
        [1, 2, 1, 2, 4],
    ),
]


@pytest.mark.parametrize(
    ("streams", "waits"), [c[1:] for c in RECONNECT_CASES], ids=[c[0] for c in RECONNECT_CASES]
)
def test_reconnect_waits(streams: list[float | None], waits: list[float]) -> None:
    """The wait after each attempt grows until a stream stays up --reconnect-reset-after."""
    backoff = Reconnects(base_s=1.0, max_s=8.0, reset_after_s=30.0, rng=lambda: 1.0)
    assert [backoff.delay_after(up) for up in streams] == pytest.approx(waits)
