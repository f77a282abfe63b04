"""FreezeRequest.until as the control plane reads it: unset is "until unfrozen"; a time that
cannot be stored is INVALID_ARGUMENT naming `until` (whether it is ahead is the store's test,
by database time: tests/integration/test_freeze.py)."""

from __future__ import annotations

from datetime import UTC, datetime

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
