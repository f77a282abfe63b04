"""A client call's details with one more metadata pair: what keelctl's channel interceptors
(the token, the request id, the trace context) add to every call.

grpc offers no constructor for `grpc.ClientCallDetails`, so this is the one namedtuple that
stands for it.
"""

from __future__ import annotations

import collections
from typing import Any

import grpc


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    """grpc.ClientCallDetails with the metadata replaced."""


def with_metadata(details: Any, key: str, value: str) -> Any:
    """`details` with (key, value) appended to its metadata."""
    return _CallDetails(
        details.method,
        details.timeout,
        [*(details.metadata or ()), (key, value)],
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )
