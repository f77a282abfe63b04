"""Pages and their tokens (controlplane.paging), and the timestamps every page is full of
(keel.convert.ts and set_ts, by arithmetic, against protobuf's own FromDatetime)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane import paging
from keel.convert import set_ts, ts
from keel.fields import SpecError


@pytest.mark.parametrize(
    ("rows", "size", "kept", "more"),
    [
        (0, 3, 0, False),
        (2, 3, 2, False),
        (3, 3, 3, False),  # a full last page: no token, so no round trip that finds nothing
        (4, 3, 3, True),  # one row past the page (what the store reads): another page follows
    ],
)
def test_a_page_has_a_token_only_when_more_rows_follow(
    rows: int, size: int, kept: int, more: bool
) -> None:
    """The store reads size + 1 rows; the page keeps size and names the last one it kept."""
    records = [{"name": f"h{n}"} for n in range(rows)]
    page = paging.page_of(paging.HOSTS, records, size=size, key=lambda r: (r["name"],))
    assert len(page.rows) == kept
    assert bool(page.next_token) is more
    if more:
        assert paging.read_token(paging.HOSTS, page.next_token) == (f"h{size - 1}",)


def test_a_token_reads_back_as_the_key_it_was_made_from() -> None:
    """make_token and read_token round-trip an instance's sort key; the empty token is the
    first page."""
    key = ("web", 3, "web-3-00002a")
    assert paging.read_token(paging.INSTANCES, paging.make_token(paging.INSTANCES, key)) == key
    assert paging.read_token(paging.INSTANCES, "") is None


@pytest.mark.parametrize(
    ("lst", "token"),
    [
        (paging.HOSTS, paging.make_token(paging.INSTANCES, ("web", 1, "x"))),  # another list's
        (paging.INSTANCES, paging.make_token(paging.INSTANCES, ("web", "1", "x"))),  # a str gen
        (paging.INSTANCES, paging.make_token(paging.INSTANCES, ("web", -2, "x"))),
        (paging.WORKLOADS, paging.make_token(paging.WORKLOADS, ("w" * 300,))),
        (paging.WORKLOADS, "!!"),
        (paging.WORKLOADS, "é"),
    ],
)
def test_a_token_this_list_did_not_give_names_page_token(lst: str, token: str) -> None:
    with pytest.raises(SpecError) as caught:
        paging.read_token(lst, token)
    assert str(caught.value).startswith("page_token: not a token this list gave")


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, paging.DEFAULT_PAGE_SIZE), (1, 1), (paging.MAX_PAGE_SIZE, paging.MAX_PAGE_SIZE)],
)
def test_page_size_zero_is_the_default(size: int, expected: int) -> None:
    assert paging.page_request(paging.HOSTS, page_size=size, page_token="").size == expected


@pytest.mark.parametrize(
    "dt",
    [
        datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 5, 5, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 5, 5, 1, 2, 3),  # naive: local time, as FromDatetime takes it
    ],
)
def test_timestamps_by_arithmetic_match_from_datetime(dt: datetime) -> None:
    """ts and set_ts give the seconds and nanos protobuf's FromDatetime gives."""
    expected = Timestamp()
    expected.FromDatetime(dt.astimezone(UTC))
    assert ts(dt) == expected
    field = Timestamp()
    set_ts(field, dt)
    assert field == expected
    untouched = Timestamp()
    set_ts(untouched, None)
    assert untouched == Timestamp()
