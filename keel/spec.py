"""Parse and validate a workload document, as an operator writes it, into `keel.model.Workload`.

The control plane calls `parse_workload` on every `ApplyWorkload` (keelctl only checks YAML
syntax), so every client gets the same errors: a `SpecError` naming exactly one field (dotted
path, e.g. `spec.health.tcp`) and the rule it breaks. `workload_to_doc` is the inverse, used by
`keelctl describe` and by tests (`parse_workload(workload_to_doc(w)) == w`). The duration,
CPU and memory parsers are shared with the binaries' flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

from keel.model import HealthCheck, Kind, Resources, Workload, WorkloadSpec


class SpecError(ValueError):
    """A workload document breaks a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


# Limits: every input is bounded (DESIGN.md, Security). Generous enough for any real fleet.
MAX_REPLICAS = 100_000
MAX_LIST = 1024  # command arguments, env entries, selector entries
MAX_PORTS = 64
MAX_DURATION_MS = 365 * 24 * 3_600_000

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
# `${...}` in a command; the agent expands these from the instance's environment.
_VAR_REF_RE = re.compile(r"\$\{([^}]*)\}")
KEEL_VARS = ("KEEL_HOST", "KEEL_WORKLOAD", "KEEL_INSTANCE")

_TOP_FIELDS = (
    "name",
    "kind",
    "replicas",
    "max_unavailable",
    "max_surge",
    "selector",
    "deadline",
    "spec",
)
_SPEC_FIELDS = ("command", "env", "ports", "resources", "health", "stop_grace", "min_ready")

# ---------------------------------------------------------------------------------------------
# Scalars: durations, CPU, memory


_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# "ms" before "m" so that "500ms" is not read as 500 minutes followed by garbage.
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|h|m|s)"
_DURATION_RE = re.compile(rf"^(?:{_DURATION_PART})+$")
_DURATION_PART_RE = re.compile(_DURATION_PART)
_BARE_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?$")
_DURATION_HINT = "use e.g. 500ms, 10s, 5m, 1h or 1m30s"


def _type_name(value: object) -> str:
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
    return type(value).__name__


def parse_duration(text: object, field: str = "duration") -> int:
    """Milliseconds in a duration string with a unit: `500ms`, `10s`, `5m`, `1h`, `1m30s`.

    A bare number is refused: `10` could mean seconds or milliseconds, and guessing wrong
    is a 1000x error in a grace period or a deadline.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise SpecError(
            field, f"must be a duration string ({_DURATION_HINT}), got {_type_name(text)}"
        )
    s = str(text).strip()
    if isinstance(text, int | float) or _BARE_NUMBER_RE.match(s):
        if s.startswith("-"):
            raise SpecError(field, f"must not be negative, got '{s}'")
        raise SpecError(field, f"duration needs a unit (ms, s, m, h), got '{s}'")
    if s.startswith("-"):
        raise SpecError(field, f"must not be negative, got '{s}'")
    if not _DURATION_RE.match(s):
        raise SpecError(field, f"not a duration ({_DURATION_HINT}), got '{s}'")
    total = Decimal(0)
    for number, unit in _DURATION_PART_RE.findall(s):
        total += Decimal(number) * _DURATION_UNITS_MS[unit]
    if total != total.to_integral_value():
        raise SpecError(field, f"must be a whole number of milliseconds, got '{s}'")
    if total > MAX_DURATION_MS:
        raise SpecError(field, f"must be at most {format_duration(MAX_DURATION_MS)}, got '{s}'")
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


_CPU_RE = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
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
        raise SpecError(field, f"must be a {what} ({hint}), got {_type_name(value)}")
    s = str(value).strip()
    if s.startswith("-"):
        raise SpecError(field, f"must not be negative, got '{s}'")
    return s


def parse_cpu(value: object, field: str = "cpu") -> int:
    """Millicores in a CPU quantity: `100m`, `0.5`, `1`, `2` (cores); fractions round up."""
    hint = "use e.g. 100m, 0.5 or 2"
    s = _quantity_text(value, field, "CPU quantity", hint)
    m = _CPU_RE.match(s)
    if not m:
        raise SpecError(field, f"not a CPU quantity ({hint}), got '{s}'")
    number = Decimal(m.group(1))
    return _ceil(number if m.group(2) else number * 1000)


def parse_memory(value: object, field: str = "memory") -> int:
    """MiB in a memory quantity: `64Mi`, `1Gi`, `128M`, a bare number = MiB; rounds up."""
    hint = "use e.g. 64Mi, 1Gi or 128M"
    s = _quantity_text(value, field, "memory quantity", hint)
    m = _MEMORY_RE.match(s)
    if not m:
        raise SpecError(field, f"not a memory quantity ({hint}), got '{s}'")
    number = Decimal(m.group(1))
    unit = m.group(2)
    if unit is None:
        return _ceil(number)
    return _ceil(number * _MEMORY_UNITS[unit] / _MIB)


# ---------------------------------------------------------------------------------------------
# Shapes


def _mapping(value: object, field: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(field, f"must be a mapping, got {_type_name(value)}")
    return value


def _check_fields(doc: Mapping[Any, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in doc:
        if key not in allowed:
            raise SpecError(_join(prefix, str(key)), "unknown field")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _int(value: object, field: str, *, minimum: int, maximum: int) -> int:
    # bool is an int subclass in Python; `replicas: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"must be an integer, got {_type_name(value)}")
    if value < minimum:
        raise SpecError(field, f"must be >= {minimum}, got {value}")
    if value > maximum:
        raise SpecError(field, f"must be <= {maximum}, got {value}")
    return value


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, got {_type_name(value)}")
    return value


def _str_list(value: object, field: str, *, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise SpecError(field, f"must be a list of strings, got {_type_name(value)}")
    if len(value) > limit:
        raise SpecError(field, f"must have at most {limit} items, got {len(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"{field}[{i}]", f"must be a string (quote it), got {_type_name(item)}")
        out.append(item)
    return tuple(out)


def _str_map(value: object, field: str, *, key_re: re.Pattern[str] | None) -> dict[str, str]:
    m = _mapping(value, field)
    if len(m) > MAX_LIST:
        raise SpecError(field, f"must have at most {MAX_LIST} entries, got {len(m)}")
    out: dict[str, str] = {}
    for key, item in m.items():
        if not isinstance(key, str) or not key:
            raise SpecError(f"{field}.{key}", "key must be a non-empty string")
        if key_re is not None and not key_re.match(key):
            raise SpecError(f"{field}.{key}", f"not a valid name (must match {key_re.pattern})")
        if not isinstance(item, str):
            raise SpecError(
                f"{field}.{key}", f"must be a string (quote it), got {_type_name(item)}"
            )
        out[key] = item
    return out


def _optional(doc: Mapping[Any, Any], key: str) -> object:
    """The value of key, or None when absent: `env:` with nothing after it means the default."""
    return doc.get(key)


# ---------------------------------------------------------------------------------------------
# The workload


def parse_workload(doc: object) -> Workload:
    """The workload a document describes; raises SpecError naming the first bad field."""
    top = _mapping(doc, "<document>")
    _check_fields(top, _TOP_FIELDS, "")

    name = top.get("name")
    if name is None:
        raise SpecError("name", "required")
    name = _str(name, "name")
    if not NAME_RE.match(name):
        raise SpecError(
            "name",
            f"must be lowercase letters, digits and '-', start and end with a letter or digit, "
            f"at most 63 characters, got '{name}'",
        )

    kind_raw = _optional(top, "kind")
    kind = Kind.SERVICE
    if kind_raw is not None:
        kind_text = _str(kind_raw, "kind")
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise SpecError("kind", f"must be service or daemon, got '{kind_text}'") from None

    replicas = _int_or(top, "replicas", 1, maximum=MAX_REPLICAS)
    max_unavailable = _int_or(top, "max_unavailable", 1, maximum=MAX_REPLICAS)
    max_surge = _int_or(top, "max_surge", 1, maximum=MAX_REPLICAS)

    selector_raw = _optional(top, "selector")
    selector = {} if selector_raw is None else _str_map(selector_raw, "selector", key_re=None)

    deadline_ms = 120_000
    if _optional(top, "deadline") is not None:
        deadline_ms = parse_duration(top["deadline"], "deadline")
        if deadline_ms <= 0:
            raise SpecError("deadline", f"must be > 0, got '{top['deadline']}'")

    spec_raw = top.get("spec")
    if spec_raw is None:
        raise SpecError("spec", "required")
    spec = _parse_spec(_mapping(spec_raw, "spec"))

    if kind is Kind.SERVICE:
        # A budget above the replica count means "all of them"; clamping keeps the stored
        # value meaningful for drains and rollouts (DESIGN.md: "clamped to replicas").
        max_unavailable = min(max_unavailable, replicas)
    # With neither an instance allowed down nor an extra one allowed up, a rollout or a drain
    # could never move anything. (A service scaled to zero has nothing to move.)
    if max_unavailable == 0 and max_surge == 0 and not (kind is Kind.SERVICE and replicas == 0):
        raise SpecError(
            "max_surge",
            "max_unavailable and max_surge cannot both be 0 (a rollout could never progress)",
        )

    return Workload(
        name=name,
        spec=spec,
        kind=kind,
        replicas=replicas,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        selector=selector,
        deadline_ms=deadline_ms,
    )


def _int_or(doc: Mapping[Any, Any], key: str, default: int, *, maximum: int) -> int:
    value = _optional(doc, key)
    if value is None:
        return default
    return _int(value, key, minimum=0, maximum=maximum)


def _parse_spec(doc: Mapping[Any, Any]) -> WorkloadSpec:
    _check_fields(doc, _SPEC_FIELDS, "spec")

    command_raw = doc.get("command")
    if command_raw is None:
        raise SpecError("spec.command", "required")
    command = _str_list(command_raw, "spec.command", limit=MAX_LIST)
    if not command:
        raise SpecError("spec.command", "must not be empty")
    if not command[0]:
        raise SpecError("spec.command[0]", "must not be empty (the program to run)")

    env_raw = _optional(doc, "env")
    env = {} if env_raw is None else _str_map(env_raw, "spec.env", key_re=ENV_NAME_RE)
    for key in env:
        if key.startswith("KEEL_"):
            raise SpecError(f"spec.env.{key}", "names starting with KEEL_ are reserved for Keel")

    ports_raw = _optional(doc, "ports")
    ports = () if ports_raw is None else _str_list(ports_raw, "spec.ports", limit=MAX_PORTS)
    for i, port in enumerate(ports):
        if not PORT_NAME_RE.match(port):
            raise SpecError(
                f"spec.ports[{i}]",
                f"port name must be a lowercase letter then up to 14 lowercase letters, "
                f"digits or '_', got '{port}'",
            )
        if port in ports[:i]:
            raise SpecError(f"spec.ports[{i}]", f"duplicate port name '{port}'")

    resources = Resources()
    resources_raw = _optional(doc, "resources")
    if resources_raw is not None:
        r = _mapping(resources_raw, "spec.resources")
        _check_fields(r, ("cpu", "memory"), "spec.resources")
        cpu = 0 if r.get("cpu") is None else parse_cpu(r["cpu"], "spec.resources.cpu")
        memory = (
            0 if r.get("memory") is None else parse_memory(r["memory"], "spec.resources.memory")
        )
        resources = Resources(cpu_millis=cpu, memory_mib=memory)

    health_raw = _optional(doc, "health")
    health = None if health_raw is None else _parse_health(health_raw, ports)

    stop_grace_ms = 10_000
    if _optional(doc, "stop_grace") is not None:
        stop_grace_ms = parse_duration(doc["stop_grace"], "spec.stop_grace")
    min_ready_ms = 10_000
    if _optional(doc, "min_ready") is not None:
        min_ready_ms = parse_duration(doc["min_ready"], "spec.min_ready")

    _check_references(command, env, ports)

    return WorkloadSpec(
        command=command,
        env=env,
        ports=ports,
        resources=resources,
        health=health,
        stop_grace_ms=stop_grace_ms,
        min_ready_ms=min_ready_ms,
    )


def _parse_health(value: object, ports: tuple[str, ...]) -> HealthCheck:
    h = _mapping(value, "spec.health")
    _check_fields(h, ("tcp", "http", "exec"), "spec.health")
    given = [key for key in ("tcp", "http", "exec") if h.get(key) is not None]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise SpecError("spec.health", f"needs exactly one of tcp, http, exec (got {got})")
    kind = given[0]
    if kind == "tcp":
        port = _str(h["tcp"], "spec.health.tcp")
        _check_port_declared(port, ports, "spec.health.tcp")
        return HealthCheck(tcp=port)
    if kind == "http":
        http = _mapping(h["http"], "spec.health.http")
        _check_fields(http, ("port", "path"), "spec.health.http")
        if http.get("port") is None:
            raise SpecError("spec.health.http.port", "required")
        port = _str(http["port"], "spec.health.http.port")
        _check_port_declared(port, ports, "spec.health.http.port")
        path = "/"
        if http.get("path") is not None:
            path = _str(http["path"], "spec.health.http.path")
            if not path.startswith("/"):
                raise SpecError("spec.health.http.path", f"must start with '/', got '{path}'")
        return HealthCheck(http_port=port, http_path=path)
    command = _str_list(h["exec"], "spec.health.exec", limit=MAX_LIST)
    if not command or not command[0]:
        raise SpecError("spec.health.exec", "must not be empty (the program to run)")
    return HealthCheck(exec=command)


def _check_port_declared(port: str, ports: tuple[str, ...], field: str) -> None:
    if port not in ports:
        declared = ", ".join(ports) if ports else "none"
        raise SpecError(
            field, f"names port '{port}', which spec.ports does not declare (declared: {declared})"
        )


def available_variables(env: Mapping[str, str], ports: tuple[str, ...]) -> list[str]:
    """Every name a `${VAR}` in a command may use: the spec's env and Keel's own variables."""
    return [*env, *KEEL_VARS, *(f"KEEL_PORT_{p.upper()}" for p in ports)]


def _check_references(
    command: tuple[str, ...], env: Mapping[str, str], ports: tuple[str, ...]
) -> None:
    available = available_variables(env, ports)
    for i, arg in enumerate(command):
        for ref in _VAR_REF_RE.findall(arg):
            if ref not in available:
                raise SpecError(
                    f"spec.command[{i}]",
                    f"${{{ref}}} names no variable the instance has "
                    f"(available: {', '.join(available)})",
                )


# ---------------------------------------------------------------------------------------------
# Back to a document


def format_cpu(millis: int) -> str:
    return f"{millis}m"


def format_memory(mib: int) -> str:
    if mib and mib % 1024 == 0:
        return f"{mib // 1024}Gi"
    return f"{mib}Mi"


def workload_to_doc(w: Workload) -> dict[str, Any]:
    """The operator-facing document for w, complete with defaults; parse_workload reads it back."""
    spec: dict[str, Any] = {
        "command": list(w.spec.command),
        "env": dict(w.spec.env),
        "ports": list(w.spec.ports),
        "resources": {
            "cpu": format_cpu(w.spec.resources.cpu_millis),
            "memory": format_memory(w.spec.resources.memory_mib),
        },
    }
    h = w.spec.health
    if h is not None:
        if h.tcp is not None:
            spec["health"] = {"tcp": h.tcp}
        elif h.http_port is not None:
            spec["health"] = {"http": {"port": h.http_port, "path": h.http_path}}
        elif h.exec is not None:
            spec["health"] = {"exec": list(h.exec)}
    spec["stop_grace"] = format_duration(w.spec.stop_grace_ms)
    spec["min_ready"] = format_duration(w.spec.min_ready_ms)
    return {
        "name": w.name,
        "kind": w.kind.value,
        "replicas": w.replicas,
        "max_unavailable": w.max_unavailable,
        "max_surge": w.max_surge,
        "selector": dict(w.selector),
        "deadline": format_duration(w.deadline_ms),
        "spec": spec,
    }


# Exported for the agent's `${VAR}` expansion and for messages.
__all__ = [
    "KEEL_VARS",
    "SpecError",
    "available_variables",
    "format_cpu",
    "format_duration",
    "format_memory",
    "parse_cpu",
    "parse_duration",
    "parse_memory",
    "parse_workload",
    "workload_to_doc",
]
