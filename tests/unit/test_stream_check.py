"""The periodic check of every stream (`sync.StreamRegistry.checked`): a stream is told the
revision read only when no notification came while the check ran."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

from controlplane.secrets import load_or_create
from controlplane.sync import CHECK_SLICE, AgentSync, StreamRegistry


async def test_a_check_wakes_every_stream_with_the_revision_it_read() -> None:
    """Each stream checked is woken with its host's revision; a host the check did not find
    is woken without one (it looks in the database itself)."""
    registry = StreamRegistry()
    a, b = registry.open("a"), registry.open("b")
    notified = {s: s.notified for s in registry.sessions()}
    registry.checked({"a": 7}, notified=notified)
    assert (a.checked, a.wake.is_set()) == (7, True)
    assert (b.checked, b.wake.is_set()) == (None, True)


async def test_a_notification_during_the_check_is_never_hidden_by_it() -> None:
    """A host notified after the check read its revision looks in the database: the revision
    read may be older than the change notified."""
    registry = StreamRegistry()
    a = registry.open("a")
    notified = {s: s.notified for s in registry.sessions()}
    registry.wake("a")  # the NOTIFY of a change, while the check's query runs
    registry.checked({"a": 7}, notified=notified)
    assert a.checked is None and a.wake.is_set()


async def test_a_notification_after_the_check_clears_what_it_read() -> None:
    """Woken by a notification after the check, the stream does not trust the check's
    revision either."""
    registry = StreamRegistry()
    a = registry.open("a")
    registry.checked({"a": 7}, notified={a: a.notified})
    registry.wake_all()
    assert a.checked is None


async def test_being_replaced_or_stopping_wakes_the_stream() -> None:
    """A stream waits on its wake alone: a newer stream for its host, and the control plane
    stopping (even for a stream opened after), set it."""
    registry = StreamRegistry()
    old = registry.open("a")
    new = registry.open("a")
    assert old.replaced.is_set() and old.wake.is_set()
    assert not new.wake.is_set()
    registry.stop()
    assert new.wake.is_set() and registry.stopping.is_set()
    assert registry.open("b").wake.is_set()


class _Revisions:
    """The one query the periodic check makes, answered from memory, with when it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, list[str]]] = []
        self.three = asyncio.Event()

    async def host_revisions(self, names: list[str]) -> dict[str, int]:
        self.asked.append((asyncio.get_running_loop().time(), list(names)))
        if len(self.asked) >= 3:
            self.three.set()
        return dict.fromkeys(names, 1)


async def test_a_period_checks_every_stream_once_in_slices_spread_over_it(tmp_path: Path) -> None:
    """250 streams and a 0.3 s period: three queries of at most CHECK_SLICE hosts, about a
    third of the period apart, and every stream woken once."""
    registry = StreamRegistry()
    for n in range(250):
        registry.open(f"h{n}")
    store = _Revisions()
    sync = AgentSync(
        store,  # type: ignore[arg-type]
        registry=registry,
        reports=None,  # type: ignore[arg-type]
        heartbeats=None,  # type: ignore[arg-type]
        logs=None,  # type: ignore[arg-type]
        resync_period_s=0.3,
        secrets=load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None),
    )
    task = asyncio.create_task(sync.check_streams())
    try:
        async with asyncio.timeout(5):
            await store.three.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    sizes = [len(names) for _, names in store.asked[:3]]
    assert sizes == [CHECK_SLICE, CHECK_SLICE, 250 - 2 * CHECK_SLICE]
    assert sorted(h for _, names in store.asked[:3] for h in names) == sorted(
        f"h{n}" for n in range(250)
    )
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(store.asked[:3])]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert all(s.checked == 1 and s.wake.is_set() for s in registry.sessions())
