"""controlplane.dbclock: database time read once per max_age (or after forget), then carried
on by the local monotonic clock, never ahead of the database's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.dbclock import DatabaseClock

T0 = datetime(2026, 12, 2, 3, 0, 0, tzinfo=UTC)


class Database:
    """The database's clock, and a read of it that takes `round_trip_s` of local time: the
    value is taken when the query arrives, halfway."""

    def __init__(self, local: list[float], *, round_trip_s: float = 0.0) -> None:
        self.local = local
        self.round_trip_s = round_trip_s
        self.reads = 0

    def time(self) -> datetime:
        return T0 + timedelta(seconds=self.local[0])

    async def now(self) -> datetime:
        self.reads += 1
        self.local[0] += self.round_trip_s / 2
        value = self.time()
        self.local[0] += self.round_trip_s / 2
        return value


async def test_the_database_is_read_once_per_max_age_and_after_forget() -> None:
    local = [100.0]
    db = Database(local)
    clock = DatabaseClock(db.now, max_age_s=30.0, monotonic=lambda: local[0])
    assert await clock.now() == db.time()
    local[0] += 29.0
    assert await clock.now() == db.time()
    assert db.reads == 1
    local[0] += 1.0
    await clock.now()
    assert db.reads == 2
    clock.forget()
    await clock.now()
    assert db.reads == 3


async def test_the_clock_is_never_ahead_of_the_database() -> None:
    """A slow read: the value is stamped when its answer arrives, so the clock lags the
    database by at most the part of the round trip after the value was taken."""
    local = [0.0]
    db = Database(local, round_trip_s=0.2)
    clock = DatabaseClock(db.now, max_age_s=30.0, monotonic=lambda: local[0])
    for step in (0.0, 0.5, 10.0, 19.0):
        local[0] += step
        now = await clock.now()
        assert db.time() - timedelta(seconds=0.1) <= now <= db.time()
