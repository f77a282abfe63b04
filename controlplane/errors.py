"""The control plane's exception root; the class docstring is what a person reads.

The gRPC layer (`controlplane.fleet`) turns these into status codes in one place.
"""

from __future__ import annotations


class KeelError(Exception):
    """The control plane could not do what was asked."""


class NotFound(KeelError):
    """The named object does not exist."""


class InvalidArgument(KeelError):
    """The request is malformed; the message names the field and the rule."""


class FailedPrecondition(KeelError):
    """The request cannot be carried out in the current state; the message says what must change."""


class SchemaTooNew(KeelError):
    """The database schema is newer than this control plane knows; upgrade the control plane."""


class NotLeader(KeelError):
    """This replica lost leadership; its controllers must stop writing."""
