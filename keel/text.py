"""Message text shared by Keel's errors and events: how a long list is named in a sentence.

Pure (no I/O); used wherever a message names hosts or instances, so that every one reads
"a, b, c and 7 more" and none grows with the fleet."""

from __future__ import annotations

from collections.abc import Sequence


def first_of(items: Sequence[str], limit: int) -> str:
    """The first `limit` items, comma-separated, then how many more there are."""
    shown = ", ".join(items[:limit])
    more = len(items) - limit
    return f"{shown} and {more} more" if more > 0 else shown
