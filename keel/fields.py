"""The rules every input field obeys, whoever sends it: the error that names a field, text fit
for Postgres and a person's terminal, bounded integers, lists and maps, host names and labels.

`keel.spec` (an operator's workload document), `keel.quantities` (durations, CPU, memory) and
the control plane's edge (`controlplane.convert`: an agent's Hello, request names) build on
these, so a rule is written once and every client gets the same message for it. Each limit is
chosen against what stores it: Postgres `text` refuses NUL and an unpaired surrogate cannot be
encoded at all; a b-tree key (a host name is a primary key) holds at most ~2.7 KB; `integer`
and protobuf `int32` hold 2^31-1, `bigint` and `int64` 2^63-1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class SpecError(ValueError):
    """A field breaks a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


# Generous for any real fleet, small enough for every column and message that holds them.
MAX_LIST = 1024  # command arguments, env entries, selector entries
MAX_LABELS = 64  # labels of a host
MAX_TEXT = 32 * 1024  # one command argument or env value
MAX_NAME = 253  # a host name, a label key or value, an instance id (a DNS name's length)
INT32_MAX = 2**31 - 1

# A host (its agent's --host): lowercase DNS-like, so it is the same name in a URL, a log line
# and `keelctl events --for host/NAME`.
HOST_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,251}[a-z0-9])?\Z")
# A label key (host labels, workload selectors): letters, digits, '-', '_', '.', '/'.
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]{0,251}[A-Za-z0-9])?\Z")
# An object id as keel writes them (instances: workload-generation-suffix).
ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,251}[a-z0-9])?\Z")
# Characters not meant for one line a person reads (a label, a version string, a reason): the
# C0 and C1 controls (tab and newline too, and NEL), DEL, the Unicode line and paragraph
# separators, and the bidirectional marks, overrides and isolates that make a terminal show
# text in another order than it is stored (U+202E "right-to-left override").
_CONTROL_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def type_name(value: object) -> str:
    """The YAML word for a value's type, for messages an operator reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return "value"


def shown(value: str, limit: int = 40) -> str:
    """value quoted for a message, cut to limit characters (a 10 MB name is not echoed)."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def check_text(value: str, field: str, *, limit: int = MAX_TEXT, single_line: bool = False) -> str:
    """value, if Postgres can store it and it is at most limit characters."""
    if len(value) > limit:
        raise SpecError(field, f"must be at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise SpecError(field, "must not contain a NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(field, "must be valid Unicode (it has an unpaired surrogate)") from None
    found = _CONTROL_RE.search(value) if single_line else None
    if found:
        raise SpecError(
            field,
            "must not contain control characters (tab, newline, C1 controls, line or paragraph "
            f"separators, bidirectional overrides): found U+{ord(found.group()):04X}",
        )
    return value


def one_line(value: str, limit: int) -> str:
    """Text from another system (an alert's summary) made to pass `check_text(value, limit=limit,
    single_line=True)` rather than refused, since its sender cannot be asked to fix it: each
    character that rule refuses becomes a space (an unpaired surrogate U+FFFD), runs of white
    space one space, and past `limit` characters it is cut, ending in '...'."""
    flat = " ".join(_CONTROL_RE.sub(" ", _SURROGATE_RE.sub("\ufffd", value)).split())
    return flat if len(flat) <= limit else flat[: max(limit - 3, 0)] + "..."


def key_name(key: object) -> str:
    """A mapping key as a field name in a message: as written when it is plain text."""
    text = str(key)
    plain = text.isprintable() and len(text) <= MAX_NAME and "\x00" not in text
    return text if plain and _encodable(text) else shown(text)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def mapping(value: object, field: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(field, f"must be a mapping, got {type_name(value)}")
    return value


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def check_fields(doc: Mapping[Any, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in doc:
        if key not in allowed:
            raise SpecError(join(prefix, key_name(key)), "unknown field")


def integer(value: object, field: str, *, minimum: int, maximum: int) -> int:
    # bool is an int subclass in Python; `replicas: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"must be an integer, got {type_name(value)}")
    if value < minimum:
        raise SpecError(field, f"must be >= {minimum}, got {_number(value)}")
    if value > maximum:
        raise SpecError(field, f"must be <= {maximum}, got {_number(value)}")
    return value


def _number(value: int) -> str:
    """value for a message; a 5000-digit one is summarised (and Python refuses to print it)."""
    return str(value) if abs(value) < 10**30 else "a number of more than 30 digits"


def string(value: object, field: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, got {type_name(value)}")
    return check_text(value, field, limit=limit)


def string_list(value: object, field: str, *, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise SpecError(field, f"must be a list of strings, got {type_name(value)}")
    if len(value) > limit:
        raise SpecError(field, f"must have at most {limit} items, got {len(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"{field}[{i}]", f"must be a string (quote it), got {type_name(item)}")
        out.append(check_text(item, f"{field}[{i}]"))
    return tuple(out)


def string_map(
    value: object,
    field: str,
    *,
    key_re: re.Pattern[str] | None,
    limit: int = MAX_LIST,
    value_limit: int = MAX_TEXT,
    key_rule: str = "",
) -> dict[str, str]:
    m = mapping(value, field)
    if len(m) > limit:
        raise SpecError(field, f"must have at most {limit} entries, got {len(m)}")
    out: dict[str, str] = {}
    for key, item in m.items():
        if not isinstance(key, str) or not key:
            raise SpecError(f"{field}.{str(key)[:MAX_NAME]}", "key must be a non-empty string")
        if len(key) > MAX_NAME:
            raise SpecError(f"{field}.{key[:40]}...", f"key must be at most {MAX_NAME} characters")
        check_text(key, f"{field}.{shown(key)}")
        if key_re is not None and not key_re.match(key):
            rule = key_rule or f"must match {key_re.pattern}"
            raise SpecError(f"{field}.{key}", f"not a valid name ({rule})")
        if not isinstance(item, str):
            raise SpecError(f"{field}.{key}", f"must be a string (quote it), got {type_name(item)}")
        out[key] = check_text(item, f"{field}.{key}", limit=value_limit)
    return out


def host_name(value: str, field: str = "host") -> str:
    """A host's name: its identity in every table, event and command."""
    if not value:
        raise SpecError(field, "required")
    if len(value) > MAX_NAME:
        raise SpecError(field, f"must be at most {MAX_NAME} characters, got {len(value)}")
    if not HOST_RE.match(value):
        raise SpecError(
            field,
            "must be lowercase letters, digits, '-', '_' and '.', starting and ending with a "
            f"letter or digit, got {shown(value)}",
        )
    return value


def object_id(value: str, field: str) -> str:
    """An instance id (or another generated id) as a request names it."""
    if not value:
        raise SpecError(field, "required")
    if len(value) > MAX_NAME or not ID_RE.match(value):
        raise SpecError(
            field,
            f"not an id (lowercase letters, digits, '-', '_' and '.', at most {MAX_NAME} "
            f"characters), got {shown(value)}",
        )
    return value


LABEL_RULE = (
    f"letters, digits, '-', '_', '.' and '/', starting and ending with a letter or digit, "
    f"at most {MAX_NAME} characters"
)


def labels(value: Mapping[str, str], field: str, *, limit: int = MAX_LABELS) -> dict[str, str]:
    """Host labels (and the selectors that match them): bounded keys and one-line values."""
    out = string_map(
        value, field, key_re=LABEL_KEY_RE, limit=limit, value_limit=MAX_NAME, key_rule=LABEL_RULE
    )
    for key, item in out.items():
        check_text(item, f"{field}.{key}", limit=MAX_NAME, single_line=True)
    return out
