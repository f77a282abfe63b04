"""keelctl's request id: one per invocation, sent with its calls as `keel-request-id`.

The control plane records a mutating call's id in the same transaction as its write
(`controlplane/idempotency.py`), so when keelctl tries the call again (on the next replica, see
`keel.ctl.main`) with the same id, a first attempt that committed is answered from its record
instead of being applied twice. `--request-id` names it (a script that runs keelctl again
after a failure passes the same one); otherwise each invocation takes a fresh UUID. An
invocation makes at most one mutating call, so one id per invocation names one request.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from keel.ctl.calldetails import with_metadata

REQUEST_ID_KEY = "keel-request-id"


def new_request_id() -> str:
    return str(uuid.uuid4())


class RequestIdInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends `keel-request-id` with every unary call (reads ignore it)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(with_metadata(details, REQUEST_ID_KEY, self.request_id), request)
