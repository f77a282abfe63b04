"""Pages of the operator's lists (ListWorkloads, ListHosts, ListInstances): the page size
checked, page tokens made and read back.

Keyset pagination, as Google's API guide (AIP-158) describes it: a page is the next
`page_size` objects in a fixed order after the last one the previous page held, read through an
index (the stores' `page_*` queries: `workload_store`, `hosts`, `instance_store`), so a page
costs the same wherever it is in the list, and an object is never listed twice (the sort keys
never change). Each page is read on its own: an object created or removed while a client pages
may or may not be listed.

The token is the last object's sort key and the list it came from, as base64 of JSON: opaque
to clients, and checked when it comes back, since a client can send anything. A token that is
not one this list gave is INVALID_ARGUMENT naming `page_token` (`keel.fields.SpecError`, which
`controlplane.errors` maps). `controlplane.fleet` calls these.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeGuard, TypeVar

from keel.fields import MAX_NAME, SpecError, integer

T = TypeVar("T")

# What a page holds when the request leaves page_size 0, and the most it may ask for: a page is
# one stretch of the control plane's event loop, and other calls wait behind it.
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
# A token this control plane makes is well under this (three keys of at most MAX_NAME).
MAX_TOKEN_CHARS = 4 * MAX_NAME + 64

_INT64 = 2**63 - 1
_TOKEN_RULE = "not a token this list gave; pass the previous answer's next_page_token unchanged"

# One key's shape: the type of each part of the sort key, in order.
Shape = tuple[type, ...]

WORKLOADS = "workloads"
HOSTS = "hosts"
INSTANCES = "instances"
# The sort key of each list: a name; a name; (workload, generation, id).
SHAPES: dict[str, Shape] = {WORKLOADS: (str,), HOSTS: (str,), INSTANCES: (str, int, str)}


@dataclass(frozen=True)
class PageRequest:
    """A checked page request: how many, and after which key (None: from the start)."""

    size: int
    after: tuple[str | int, ...] | None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows and the token of the next one ("" on the last page)."""

    rows: list[T]
    next_token: str


def page_request(lst: str, *, page_size: int, page_token: str) -> PageRequest:
    """The request's page size (0: the default) and the key its token names, or SpecError
    naming page_size or page_token."""
    size = integer(page_size, "page_size", minimum=0, maximum=MAX_PAGE_SIZE)
    return PageRequest(size or DEFAULT_PAGE_SIZE, read_token(lst, page_token))


def read_token(lst: str, token: str) -> tuple[str | int, ...] | None:
    """The sort key a token of list `lst` names; None for the empty token (the first page)."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise SpecError("page_token", _TOKEN_RULE)
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (UnicodeEncodeError, binascii.Error, ValueError, RecursionError):
        raise SpecError("page_token", _TOKEN_RULE) from None
    shape = SHAPES[lst]
    if (
        not isinstance(doc, dict)
        or doc.keys() != {"list", "after"}
        or doc["list"] != lst
        or not isinstance(doc["after"], list)
        or len(doc["after"]) != len(shape)
    ):
        raise SpecError("page_token", _TOKEN_RULE)
    key: list[str | int] = []
    for part, kind in zip(doc["after"], shape, strict=True):
        if type(part) is not kind or not _fits(part):
            raise SpecError("page_token", _TOKEN_RULE)
        key.append(part)
    return tuple(key)


def _fits(part: object) -> TypeGuard[str | int]:
    """What a sort key can hold: a bigint (bool is not an int here), or a name Postgres can
    store (no NUL, no unpaired surrogate, which JSON's escapes can carry)."""
    if type(part) is int:
        return -1 <= part <= _INT64
    if not isinstance(part, str) or len(part) > MAX_NAME or "\x00" in part:
        return False
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_token(lst: str, key: Sequence[str | int]) -> str:
    """The token of the page after the one that ended with sort key `key`."""
    text = json.dumps({"list": lst, "after": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode("ascii")


def page_of(
    lst: str, rows: list[T], *, size: int, key: Callable[[T], Sequence[str | int]]
) -> Page[T]:
    """A page from up to size + 1 rows read in the list's order: one more than the page, to
    know whether another follows without a round trip that finds nothing. Decide on the rows
    as read, before any is decoded (a row that cannot be decoded is left out of the page, not
    taken for its end)."""
    if len(rows) <= size:
        return Page(rows, "")
    kept = rows[:size]
    return Page(kept, make_token(lst, key(kept[-1])))
