"""The deploy freeze on every replica: ends freezes at their `until`, and feeds the gauges.

`FreezeWatch.run` calls `freeze.expire` (a freeze past its `until` is deleted with its
DeployUnfrozen event, once whichever replica comes first) and hands the freezes that hold to
`on_freezes` (`FreezeMetrics.set_freezes`: `keel_deploy_frozen` and its neighbours). It runs
again every `interval_s` (`--freeze-poll`: another replica's change shows within it), at the
next `until` if that is sooner, and at once when this replica changed the freezes: the
Freeze/Unfreeze calls (`freeze_api`) and the webhook (`alert_hook`) call `changed` after their
write commits. Neighbours: `freeze` (the rows), `main` (starts it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from controlplane import freeze
from controlplane.errors import Unavailable
from controlplane.sql import Database

log = structlog.get_logger("keel.freeze")

# Past a freeze's end, a moment for the database's clock to be past it too.
_AFTER_END_S = 0.05


class FreezeWatch:
    """See the module docstring. `changed` must be called on the event loop's thread."""

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        on_freezes: Callable[[list[freeze.Freeze]], None],
    ) -> None:
        self._db = db
        self._interval_s = interval_s
        self._on_freezes = on_freezes
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """This replica changed the freezes: read them again now."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            wait_s = self._interval_s
            try:
                found = await freeze.expire(self._db)
            except Unavailable as exc:
                # The database is away: the gauge keeps its last value; the probe reports it.
                log.debug("freeze not read", error=str(exc))
            else:
                self._on_freezes(found.holding)
                if found.next_end_s is not None:
                    wait_s = min(wait_s, max(found.next_end_s, 0.0) + _AFTER_END_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._changed.wait()
