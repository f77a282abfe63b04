"""keelctl's request id: one per invocation, sent with its calls as `keel-request-id`.

The control plane records a mutating call's id in the same transaction as its write
(`controlplane/idempotency.py`), so when keelctl tries the call again (on the next replica, see
`keel.ctl.main`) with the same id, a first attempt that committed is answered from its record
instead of being applied twice. `--request-id` names it (a script that runs keelctl again
after a failure passes the same one); otherwise each invocation takes a fresh random UUID
(version 4, from `os.urandom`: importing the uuid module cost every keelctl run 10-18 ms, a
twentieth of `keelctl get hosts`). An invocation makes at most one mutating call, so one id
per invocation names one request.
"""

from __future__ import annotations

import os
from typing import Any

import grpc

from keel.ctl.calldetails import with_metadata

REQUEST_ID_KEY = "keel-request-id"


def new_request_id() -> str:
    """A random UUID (RFC 4122 version 4), as `str(uuid.uuid4())` gives it."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestIdInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends `keel-request-id` with every unary call (reads ignore it)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(with_metadata(details, REQUEST_ID_KEY, self.request_id), request)
