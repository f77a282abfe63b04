"""The one table from Keel's errors to gRPC codes, and the store's translation of asyncpg's."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from controlplane.errors import (
    STATUS,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
    NotLeader,
    SchemaTooNew,
    Unavailable,
    status_of,
)
from controlplane.sql import translated
from keel.fields import SpecError


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SpecError("spec.command", "required"), "INVALID_ARGUMENT"),
        (InvalidArgument("limit: must be >= 0"), "INVALID_ARGUMENT"),
        (NotFound('workload "web" not found'), "NOT_FOUND"),
        (FailedPrecondition("delete it first"), "FAILED_PRECONDITION"),
        (SchemaTooNew("upgrade"), "FAILED_PRECONDITION"),
        (Unavailable("try again"), "UNAVAILABLE"),
        (NotLeader("moved"), "UNAVAILABLE"),
    ],
)
def test_each_keel_error_has_its_code_and_keeps_its_message(error: Exception, code: str) -> None:
    """The table gives the code; the message is the error's own, as a person reads it."""
    assert status_of(error) == (code, str(error))


def test_every_code_in_the_table_is_a_grpc_code_and_never_unknown_or_internal() -> None:
    """The table names real codes, and none that tells the caller nothing."""
    for _, code in STATUS:
        assert grpc.StatusCode[code] not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def test_every_keel_error_class_is_in_the_table() -> None:
    """A new error class in controlplane.errors must be given a code."""
    from controlplane import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, KeelError)]
    covered = {kind for kind, _ in STATUS}
    missing = [c.__name__ for c in classes if c is not KeelError and c not in covered]
    assert missing == []


def test_anything_else_is_not_in_the_table() -> None:
    """A bug is not mapped here: the interceptor answers it with an error id instead."""
    assert status_of(RuntimeError("boom")) is None
    assert status_of(KeyError("x")) is None


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.InterfaceError("pool is closing"),
    ],
)
def test_the_database_away_is_unavailable_without_the_driver_s_words(error: Exception) -> None:
    """Postgres down, restarting, overloaded or slow: Unavailable, no class name in the text."""
    with pytest.raises(Unavailable) as caught, translated():
        raise error
    assert type(error).__name__ not in str(caught.value)
    assert caught.value.__cause__ is error


def test_a_value_the_database_refuses_is_invalid_argument() -> None:
    """A DataError (out of range, NUL) is the caller's input: InvalidArgument."""
    with pytest.raises(InvalidArgument) as caught, translated():
        raise asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range")
    assert "NumericValueOutOfRange" not in str(caught.value)
    assert "bigint out of range" in str(caught.value)


def test_keel_errors_and_bugs_pass_through_the_translation_untouched() -> None:
    """Only the driver's failures are translated."""
    with pytest.raises(NotFound), translated():
        raise NotFound("gone")
    with pytest.raises(ZeroDivisionError), translated():
        raise ZeroDivisionError()


def test_a_value_asyncpg_cannot_encode_is_invalid_argument_without_driver_text() -> None:
    """asyncpg's client-side DataError (an InterfaceError) is bad input, not an outage, and its
    text, which names a query parameter, stays in the log."""
    with pytest.raises(InvalidArgument) as caught, translated():
        raise asyncpg.exceptions._base.DataError(
            "invalid input for query argument $4: 99999999999999999999 (value out of int64 range)"
        )
    assert "query argument" not in str(caught.value)
    assert str(caught.value).startswith("request: ")
