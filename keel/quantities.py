"""Durations, CPU and memory quantities as operators write them, parsed and formatted.

`keel.spec` reads a workload document's durations and resources with these; the binaries'
flags (`keel-controlplane`, `keel-agent`, `keelctl --timeout`) parse their durations here too,
so `10s` means the same everywhere. Every parser bounds its result (`MAX_*`) so that what it
returns fits the columns and messages that carry it (`keel.fields` says which).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

from keel.fields import SpecError, shown, type_name

MAX_DURATION_MS = 365 * 24 * 3_600_000
# A million cores and a pebibyte: beyond any host, and far below int64 even summed over the
# most replicas a workload may have on one host.
MAX_CPU_MILLIS = 1_000_000_000
MAX_MEMORY_MIB = 1024**3

_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# "ms" before "m" so that "500ms" is not read as 500 minutes followed by garbage.
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|h|m|s)"
_DURATION_RE = re.compile(rf"^(?:{_DURATION_PART})+\Z")
_DURATION_PART_RE = re.compile(_DURATION_PART)
_BARE_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?\Z")
_DURATION_HINT = "use e.g. 500ms, 10s, 5m, 1h or 1m30s"


def parse_duration(text: object, field: str = "duration") -> int:
    """Milliseconds in a duration string with a unit: `500ms`, `10s`, `5m`, `1h`, `1m30s`.

    A bare number is refused: `10` could mean seconds or milliseconds, and guessing wrong
    is a 1000x error in a grace period or a deadline.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise SpecError(
            field, f"must be a duration string ({_DURATION_HINT}), got {type_name(text)}"
        )
    s = str(text).strip()
    if isinstance(text, int | float) or _BARE_NUMBER_RE.match(s):
        if s.startswith("-"):
            raise SpecError(field, f"must not be negative, got {shown(s)}")
        raise SpecError(field, f"duration needs a unit (ms, s, m, h), got {shown(s)}")
    if s.startswith("-"):
        raise SpecError(field, f"must not be negative, got {shown(s)}")
    if not _DURATION_RE.match(s):
        raise SpecError(field, f"not a duration ({_DURATION_HINT}), got {shown(s)}")
    total = Decimal(0)
    for number, unit in _DURATION_PART_RE.findall(s):
        total += Decimal(number) * _DURATION_UNITS_MS[unit]
    if total > MAX_DURATION_MS:
        raise SpecError(
            field, f"must be at most {format_duration(MAX_DURATION_MS)}, got {shown(s)}"
        )
    if total != total.to_integral_value():
        raise SpecError(field, f"must be a whole number of milliseconds, got {shown(s)}")
    return int(total)


def format_duration(ms: int) -> str:
    """The shortest readable form that parses back to ms: 120000 -> 2m, 1500 -> 1.5s."""
    if ms < 0:
        return "-" + format_duration(-ms)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        seconds = Decimal(rest) / 1000
        # normalize() drops trailing zeros; format "f" keeps it out of exponent notation.
        parts.append(f"{seconds.normalize():f}s")
    return "".join(parts)


_CPU_RE = re.compile(r"^(\d+(?:\.\d+)?)(m?)\Z")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?\Z")
_MEMORY_UNITS = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}
_MIB = 1024**2


def _ceil(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=ROUND_CEILING))


def _quantity_text(value: object, field: str, what: str, hint: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SpecError(field, f"must be a {what} ({hint}), got {type_name(value)}")
    s = str(value).strip()
    if s.startswith("-"):
        raise SpecError(field, f"must not be negative, got {shown(s)}")
    return s


def parse_cpu(value: object, field: str = "cpu") -> int:
    """Millicores in a CPU quantity: `100m`, `0.5`, `1`, `2` (cores); fractions round up."""
    hint = "use e.g. 100m, 0.5 or 2"
    s = _quantity_text(value, field, "CPU quantity", hint)
    m = _CPU_RE.match(s)
    if not m:
        raise SpecError(field, f"not a CPU quantity ({hint}), got {shown(s)}")
    number = Decimal(m.group(1))
    millis = number if m.group(2) else number * 1000
    if millis > MAX_CPU_MILLIS:
        raise SpecError(
            field, f"must be at most {MAX_CPU_MILLIS // 1000} cores ({MAX_CPU_MILLIS}m), "
            f"got {shown(s)}"
        )  # fmt: skip
    return _ceil(millis)


def parse_memory(value: object, field: str = "memory") -> int:
    """MiB in a memory quantity: `64Mi`, `1Gi`, `128M`, a bare number = MiB; rounds up."""
    hint = "use e.g. 64Mi, 1Gi or 128M"
    s = _quantity_text(value, field, "memory quantity", hint)
    m = _MEMORY_RE.match(s)
    if not m:
        raise SpecError(field, f"not a memory quantity ({hint}), got {shown(s)}")
    number = Decimal(m.group(1))
    unit = m.group(2)
    mib = number if unit is None else number * _MEMORY_UNITS[unit] / _MIB
    if mib > MAX_MEMORY_MIB:
        raise SpecError(field, f"must be at most {format_memory(MAX_MEMORY_MIB)}, got {shown(s)}")
    return _ceil(mib)


def format_cpu(millis: int) -> str:
    return f"{millis}m"


def format_memory(mib: int) -> str:
    if mib and mib % 1024 == 0:
        return f"{mib // 1024}Gi"
    return f"{mib}Mi"
