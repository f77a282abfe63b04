"""FreezeRequest.until as the control plane reads it: unset is "until unfrozen"; a time that
cannot be stored is INVALID_ARGUMENT naming `until` (whether it is ahead is the store's test,
by database time: tests/integration/test_freeze.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.errors import InvalidArgument
from controlplane.freeze_api import until_of
from keel.v1 import fleet_pb2


def test_an_unset_until_is_none_and_a_set_one_is_that_time() -> None:
    assert until_of(fleet_pb2.FreezeRequest()) is None
    request = fleet_pb2.FreezeRequest()
    request.until.seconds = 1_900_000_000
    assert until_of(request) == datetime.fromtimestamp(1_900_000_000, UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(2**62, 0), (-(2**62), 0), (253_402_300_800, 0), (0, 10**9 + 5)]
)
def test_a_time_that_cannot_be_stored_is_refused_naming_until(seconds: int, nanos: int) -> None:
    request = fleet_pb2.FreezeRequest()
    request.until.seconds, request.until.nanos = seconds, nanos
    with pytest.raises(InvalidArgument, match=r"^until: not a time that can be stored"):
        until_of(request)


def test_until_in_is_a_duration_for_the_store_to_add_to_its_clock() -> None:
    request = fleet_pb2.FreezeRequest()
    request.until_in.FromTimedelta(timedelta(hours=2))
    assert until_of(request) == timedelta(hours=2)


@pytest.mark.parametrize(
    ("seconds", "nanos", "message"),
    [
        (0, 0, r"^until_in: must be a duration from 1ms to 365 days, got 0s 0ns"),
        (-5, 0, r"^until_in: must be a duration from 1ms"),
        (366 * 86400, 0, r"^until_in: must be a duration from 1ms"),
        (2**62, 0, r"^until_in: must be a duration from 1ms"),
    ],
)
def test_an_until_in_out_of_range_is_refused_naming_it(
    seconds: int, nanos: int, message: str
) -> None:
    request = fleet_pb2.FreezeRequest()
    request.until_in.seconds, request.until_in.nanos = seconds, nanos
    with pytest.raises(InvalidArgument, match=message):
        until_of(request)


def test_until_and_until_in_together_are_refused() -> None:
    request = fleet_pb2.FreezeRequest()
    request.until.seconds = 1_900_000_000
    request.until_in.seconds = 60
    with pytest.raises(InvalidArgument, match=r"^until_in: give until \(a time\) or until_in"):
        until_of(request)
