"""The control plane's exception root, and the one table that gives each a gRPC status code.

The class docstring is what a person reads when the message says no more. `STATUS` maps every
Keel error to the name of its gRPC code; the server interceptor (`controlplane.interceptors`)
applies it to every RPC, unary and streaming alike, so handlers raise and never pick a code.
Anything else a handler raises is a failure of ours: the interceptor logs it with an error id
and answers UNAVAILABLE with that id, never UNKNOWN, a class name, a stack or SQL. The table
holds code *names*, not `grpc.StatusCode`s, so this module (which the planners may import for
`NotLeader`) stays free of grpc.
"""

from __future__ import annotations

from keel.fields import SpecError


class KeelError(Exception):
    """The control plane could not do what was asked."""


class NotFound(KeelError):
    """The named object does not exist."""


class InvalidArgument(KeelError):
    """The request is malformed; the message names the field and the rule."""


class FailedPrecondition(KeelError):
    """The request cannot be carried out in the current state; the message says what must change."""


class Unavailable(KeelError):
    """The database cannot be reached or did not answer in time; nothing was changed by this
    call that a retry would not repeat safely. Try again shortly."""


class Conflict(KeelError):
    """The request ran into a concurrent change of the same object and changed nothing; try it
    again (it is safe to repeat)."""


class PermissionDenied(KeelError):
    """The caller's credential does not allow this call."""


class Replaced(KeelError):
    """A newer stream for the same host took over this one."""


class StreamFailed(KeelError):
    """The stream from the agent failed; the agent reconnects."""


class SchemaTooNew(KeelError):
    """The database schema is newer than this control plane knows; upgrade the control plane."""


class NotLeader(KeelError):
    """This replica lost leadership; its controllers must stop writing."""


# Most specific first: the first class an error is an instance of gives its code.
STATUS: tuple[tuple[type[Exception], str], ...] = (
    (SpecError, "INVALID_ARGUMENT"),
    (InvalidArgument, "INVALID_ARGUMENT"),
    (NotFound, "NOT_FOUND"),
    (FailedPrecondition, "FAILED_PRECONDITION"),
    (SchemaTooNew, "FAILED_PRECONDITION"),
    (PermissionDenied, "PERMISSION_DENIED"),
    (Conflict, "ABORTED"),
    (Replaced, "ABORTED"),
    (Unavailable, "UNAVAILABLE"),
    (StreamFailed, "UNAVAILABLE"),
    (NotLeader, "UNAVAILABLE"),
)


def status_of(error: BaseException) -> tuple[str, str] | None:
    """(gRPC code name, message) for one of Keel's errors; None for anything else."""
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code, str(error) or (type(error).__doc__ or "").split("\n")[0]
    return None
