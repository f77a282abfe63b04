"""Database time without a query on every read.

Every replica and report is judged by the database's clock (`store.Store.now`), but a
controller that looks at the time on every pass would pay a round trip for it each time.
`DatabaseClock` reads it once (an anchor), then adds the local monotonic time elapsed since,
and reads it again when the anchor is older than `max_age_s` or has been dropped (`forget`: a
new leadership term, a resync).

Never ahead of the database: the anchor is the value the database returned, stamped with the
local time at which the answer arrived, after the database took it; so a deadline judged by
this clock is met late by at most the round trip of the anchor's read (and the drift of the
local clock over `max_age_s`), never early. The rollout controller (`controlplane.rollouts`)
judges with it; `store.Store.now` is the read it is given.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta


class DatabaseClock:
    """Database time: `now()` reads the database at most once per `max_age_s`."""

    def __init__(
        self,
        read: Callable[[], Awaitable[datetime]],
        *,
        max_age_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._anchor: tuple[datetime, float] | None = None

    async def now(self) -> datetime:
        anchor = self._anchor
        if anchor is None or self._monotonic() - anchor[1] >= self._max_age_s:
            value = await self._read()
            anchor = self._anchor = (value, self._monotonic())
        value, at = anchor
        return value + timedelta(seconds=self._monotonic() - at)

    def forget(self) -> None:
        """The next `now()` reads the database again."""
        self._anchor = None
