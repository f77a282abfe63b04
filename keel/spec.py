"""Parse and validate a workload document, as an operator writes it, into `keel.model.Workload`.

The control plane calls `parse_manifest` on every `ApplyWorkload` (keelctl only checks YAML
syntax), so every client gets the same errors: a `SpecError` naming exactly one field (dotted
path, e.g. `spec.health.tcp`) and the rule it breaks. Every value is checked against what
stores it before anything is written (`keel.fields` has the text and size rules,
`keel.quantities` the duration, CPU and memory parsers, shared with the binaries' flags).
`workload_to_doc` is the inverse, used by `keelctl describe` and by tests
(`parse_workload(workload_to_doc(w)) == w`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from keel.fields import (
    MAX_LIST,
    SpecError,
    check_fields,
    key_name,
    labels,
    mapping,
    shown,
    string,
    string_list,
    string_map,
    type_name,
)
from keel.fields import integer as _int
from keel.model import HealthCheck, Kind, Resources, RolloutPolicy, Workload, WorkloadSpec
from keel.quantities import (
    MAX_CPU_MILLIS,
    MAX_DURATION_MS,
    MAX_MEMORY_MIB,
    format_cpu,
    format_duration,
    format_memory,
    parse_cpu,
    parse_duration,
    parse_memory,
)
from keel.spec_secrets import parse_secret_env, parse_user, secret_env_doc

# Limits: every input is bounded (DESIGN.md, Security). Generous enough for any real fleet.
MAX_REPLICAS = 100_000
MAX_PORTS = 64
# The most a manifest may weigh; keelctl checks it before it reads the file.
MAX_MANIFEST_BYTES = 256 * 1024
# A workload document is 4 levels deep (spec.health.http.port); this leaves room, and keeps a
# document of nothing but brackets from exhausting the parser's recursion.
MAX_DEPTH = 16

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
PORT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,14}\Z")
# `${...}` in a command; the agent expands these from the instance's environment.
_VAR_REF_RE = re.compile(r"\$\{([^}]*)\}")
KEEL_VARS = ("KEEL_HOST", "KEEL_WORKLOAD", "KEEL_INSTANCE")
# What opens or closes a level of JSON, skipping strings (which may hold brackets).
_JSON_NESTING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')

_TOP_FIELDS = (
    "name",
    "kind",
    "replicas",
    "max_unavailable",
    "max_surge",
    "selector",
    "deadline",
    "rollout",
    "spec",
)
_ROLLOUT_FIELDS = ("progress_deadline", "auto_rollback", "canary", "auto_promote")
_SPEC_FIELDS = (
    "command",
    "env",
    "secret_env",
    "user",
    "ports",
    "resources",
    "health",
    "stop_grace",
    "min_ready",
    "on_disconnect",
)

# ---------------------------------------------------------------------------------------------
# The manifest as sent: JSON text


def parse_manifest(text: str, field: str = "manifest_json") -> Workload:
    """The workload a JSON manifest describes (the body of ApplyWorkload)."""
    return parse_workload(load_json(text, field))


def load_json(text: str, field: str) -> object:
    """The JSON document in text, refused (naming field) when it is too large, nested too
    deep, names a key twice (`{"name": "a", "name": "b"}` would silently mean `b`) or holds
    NaN or Infinity."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MANIFEST_BYTES:
        raise SpecError(field, f"must be at most {MAX_MANIFEST_BYTES} bytes, got {size}")
    depth = 0
    for token in _JSON_NESTING_RE.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(field, f"must be nested at most {MAX_DEPTH} levels deep")
        elif bracket in "]}":
            depth -= 1
    try:
        return json.loads(text, object_pairs_hook=_without_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SpecError(field, f"not valid JSON ({exc})") from None
    except ValueError as exc:  # Python's bound on the digits of an integer
        if isinstance(exc, SpecError):
            raise
        raise SpecError(field, "not valid JSON (a number has too many digits)") from None


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(key_name(key), "given twice in the same mapping (which one was meant?)")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise SpecError("manifest_json", f"{name} is not a number a workload can use")


# ---------------------------------------------------------------------------------------------
# The workload


def parse_workload(doc: object) -> Workload:
    """The workload a document describes; raises SpecError naming the first bad field."""
    top = mapping(doc, "<document>")
    check_fields(top, _TOP_FIELDS, "")

    name = top.get("name")
    if name is None:
        raise SpecError("name", "required")
    name = string(name, "name")
    if not NAME_RE.match(name):
        raise SpecError(
            "name",
            f"must be lowercase letters, digits and '-', start and end with a letter or digit, "
            f"at most 63 characters, got {shown(name)}",
        )

    kind_raw = _optional(top, "kind")
    kind = Kind.SERVICE
    if kind_raw is not None:
        kind_text = string(kind_raw, "kind")
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise SpecError("kind", f"must be service or daemon, got {shown(kind_text)}") from None

    replicas = _int_or(top, "replicas", 1, maximum=MAX_REPLICAS)
    max_unavailable = _int_or(top, "max_unavailable", 1, maximum=MAX_REPLICAS)
    max_surge = _int_or(top, "max_surge", 1, maximum=MAX_REPLICAS)

    selector_raw = _optional(top, "selector")
    selector = {} if selector_raw is None else labels(mapping(selector_raw, "selector"), "selector")

    deadline_ms = 120_000
    if _optional(top, "deadline") is not None:
        deadline_ms = parse_duration(top["deadline"], "deadline")
        if deadline_ms <= 0:
            raise SpecError("deadline", f"must be > 0, got {shown(str(top['deadline']))}")

    spec_raw = top.get("spec")
    if spec_raw is None:
        raise SpecError("spec", "required")
    spec = _parse_spec(mapping(spec_raw, "spec"))
    rollout_raw = _optional(top, "rollout")
    rollout = RolloutPolicy() if rollout_raw is None else _parse_rollout(rollout_raw, kind)

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
    _check_rollout(rollout, replicas=replicas, min_ready_ms=spec.min_ready_ms)

    return Workload(
        name=name,
        spec=spec,
        kind=kind,
        replicas=replicas,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        selector=selector,
        deadline_ms=deadline_ms,
        rollout=rollout,
    )


def _check_rollout(rollout: RolloutPolicy, *, replicas: int, min_ready_ms: int) -> None:
    """The rollout policy against the rest of the workload. An instance counts as progress
    only once ready for `min_ready`, so a deadline no longer than that fails every rollout,
    healthy or not (Kubernetes asks progressDeadlineSeconds > minReadySeconds too). More
    canaries than replicas is a typo that would start them all at once."""
    if rollout.progress_deadline_ms <= min_ready_ms:
        raise SpecError(
            "rollout.progress_deadline",
            f"must be longer than spec.min_ready ({format_duration(min_ready_ms)}), got "
            f"{format_duration(rollout.progress_deadline_ms)}: an instance counts as progress "
            f"only once it has been ready for min_ready",
        )
    if rollout.canary > max(replicas, 1):
        raise SpecError(
            "rollout.canary",
            f"must be at most replicas ({replicas}), got {rollout.canary}",
        )


def _parse_rollout(value: object, kind: Kind) -> RolloutPolicy:
    """`rollout: {progress_deadline: 10m, auto_rollback: true, canary: 1, auto_promote: false}`."""
    d = mapping(value, "rollout")
    check_fields(d, _ROLLOUT_FIELDS, "rollout")
    deadline_ms = RolloutPolicy.progress_deadline_ms
    if _optional(d, "progress_deadline") is not None:
        deadline_ms = parse_duration(d["progress_deadline"], "rollout.progress_deadline")
        if deadline_ms <= 0:
            raise SpecError(
                "rollout.progress_deadline",
                f"must be > 0, got {shown(str(d['progress_deadline']))}",
            )
    canary_raw = _optional(d, "canary")
    canary = (
        0
        if canary_raw is None
        else _int(canary_raw, "rollout.canary", minimum=0, maximum=MAX_REPLICAS)
    )
    if canary and kind is Kind.DAEMON:
        raise SpecError(
            "rollout.canary",
            "only a service can have canaries (a daemon runs one instance per host)",
        )
    auto_promote = _bool_or(d, "auto_promote", "rollout.auto_promote")
    if auto_promote and not canary:
        raise SpecError("rollout.auto_promote", "needs rollout.canary > 0 (nothing to promote)")
    return RolloutPolicy(
        progress_deadline_ms=deadline_ms,
        auto_rollback=_bool_or(d, "auto_rollback", "rollout.auto_rollback"),
        canary=canary,
        auto_promote=auto_promote,
    )


def _bool_or(doc: Mapping[Any, Any], key: str, field: str) -> bool:
    value = _optional(doc, key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise SpecError(field, f"must be true or false, got {type_name(value)}")
    return value


def _optional(doc: Mapping[Any, Any], key: str) -> object:
    """The value of key, or None when absent: `env:` with nothing after it means the default."""
    return doc.get(key)


def _int_or(doc: Mapping[Any, Any], key: str, default: int, *, maximum: int) -> int:
    value = _optional(doc, key)
    if value is None:
        return default
    return _int(value, key, minimum=0, maximum=maximum)


def _parse_spec(doc: Mapping[Any, Any]) -> WorkloadSpec:
    check_fields(doc, _SPEC_FIELDS, "spec")

    command_raw = doc.get("command")
    if command_raw is None:
        raise SpecError("spec.command", "required")
    command = string_list(command_raw, "spec.command", limit=MAX_LIST)
    if not command:
        raise SpecError("spec.command", "must not be empty")
    if not command[0]:
        raise SpecError("spec.command[0]", "must not be empty (the program to run)")

    env_raw = _optional(doc, "env")
    env = {} if env_raw is None else string_map(env_raw, "spec.env", key_re=ENV_NAME_RE)
    for key in env:
        if key.startswith("KEEL_"):
            raise SpecError(f"spec.env.{key}", "names starting with KEEL_ are reserved for Keel")
    secret_raw = _optional(doc, "secret_env")
    secret_env = (
        {} if secret_raw is None else parse_secret_env(secret_raw, env=env, key_re=ENV_NAME_RE)
    )
    user_raw = _optional(doc, "user")
    user = "" if user_raw is None else parse_user(user_raw)

    ports_raw = _optional(doc, "ports")
    ports = () if ports_raw is None else string_list(ports_raw, "spec.ports", limit=MAX_PORTS)
    for i, port in enumerate(ports):
        if not PORT_NAME_RE.match(port):
            raise SpecError(
                f"spec.ports[{i}]",
                f"port name must be a lowercase letter then up to 14 lowercase letters, "
                f"digits or '_', got {shown(port)}",
            )
        if port in ports[:i]:
            raise SpecError(f"spec.ports[{i}]", f"duplicate port name '{port}'")

    resources = Resources()
    resources_raw = _optional(doc, "resources")
    if resources_raw is not None:
        r = mapping(resources_raw, "spec.resources")
        check_fields(r, ("cpu", "memory"), "spec.resources")
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
    on_disconnect_raw = _optional(doc, "on_disconnect")
    stop_after_ms = 0 if on_disconnect_raw is None else _parse_on_disconnect(on_disconnect_raw)

    _check_references(command, env, ports, secrets=tuple(secret_env))

    return WorkloadSpec(
        command=command,
        env=env,
        ports=ports,
        resources=resources,
        health=health,
        stop_grace_ms=stop_grace_ms,
        min_ready_ms=min_ready_ms,
        secret_env=secret_env,
        user=user,
        stop_after_disconnect_ms=stop_after_ms,
    )


def _parse_on_disconnect(value: object) -> int:
    """`on_disconnect: {stop_after: 30s}`: how long an instance keeps running on a host that
    has lost the control plane (milliseconds)."""
    d = mapping(value, "spec.on_disconnect")
    check_fields(d, ("stop_after",), "spec.on_disconnect")
    if d.get("stop_after") is None:
        raise SpecError("spec.on_disconnect.stop_after", "required")
    stop_after_ms = parse_duration(d["stop_after"], "spec.on_disconnect.stop_after")
    if stop_after_ms <= 0:
        raise SpecError(
            "spec.on_disconnect.stop_after",
            f"must be > 0 (leave on_disconnect out to keep running), "
            f"got {shown(str(d['stop_after']))}",
        )
    return stop_after_ms


def _parse_health(value: object, ports: tuple[str, ...]) -> HealthCheck:
    h = mapping(value, "spec.health")
    check_fields(h, ("tcp", "http", "exec"), "spec.health")
    given = [key for key in ("tcp", "http", "exec") if h.get(key) is not None]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise SpecError("spec.health", f"needs exactly one of tcp, http, exec (got {got})")
    kind = given[0]
    if kind == "tcp":
        port = string(h["tcp"], "spec.health.tcp")
        _check_port_declared(port, ports, "spec.health.tcp")
        return HealthCheck(tcp=port)
    if kind == "http":
        http = mapping(h["http"], "spec.health.http")
        check_fields(http, ("port", "path"), "spec.health.http")
        if http.get("port") is None:
            raise SpecError("spec.health.http.port", "required")
        port = string(http["port"], "spec.health.http.port")
        _check_port_declared(port, ports, "spec.health.http.port")
        path = "/"
        if http.get("path") is not None:
            path = string(http["path"], "spec.health.http.path")
            if not path.startswith("/"):
                raise SpecError("spec.health.http.path", f"must start with '/', got {shown(path)}")
        return HealthCheck(http_port=port, http_path=path)
    command = string_list(h["exec"], "spec.health.exec", limit=MAX_LIST)
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
    command: tuple[str, ...],
    env: Mapping[str, str],
    ports: tuple[str, ...],
    *,
    secrets: tuple[str, ...],
) -> None:
    available = available_variables(env, ports)
    for i, arg in enumerate(command):
        for ref in _VAR_REF_RE.findall(arg):
            if ref in secrets:
                # Expanded, the secret would sit in the command line, which every user of the
                # host can read (ps, /proc/PID/cmdline), and in start errors.
                raise SpecError(
                    f"spec.command[{i}]",
                    f"${{{ref}}} is a secret_env variable; a command line is visible to every "
                    f"user of the host, so read {ref} from the environment instead",
                )
            if ref not in available:
                raise SpecError(
                    f"spec.command[{i}]",
                    f"${{{ref}}} names no variable the instance has "
                    f"(available: {', '.join(available)})",
                )


# ---------------------------------------------------------------------------------------------
# Back to a document


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
    # Shown only when set, so the documents of workloads without them read as before.
    if w.spec.secret_env:
        spec["secret_env"] = secret_env_doc(w.spec.secret_env)
    if w.spec.user:
        spec["user"] = w.spec.user
    if w.spec.stop_after_disconnect_ms:
        spec["on_disconnect"] = {"stop_after": format_duration(w.spec.stop_after_disconnect_ms)}
    doc: dict[str, Any] = {
        "name": w.name,
        "kind": w.kind.value,
        "replicas": w.replicas,
        "max_unavailable": w.max_unavailable,
        "max_surge": w.max_surge,
        "selector": dict(w.selector),
        "deadline": format_duration(w.deadline_ms),
    }
    # Shown only when set, like the spec's optional fields.
    if w.rollout != RolloutPolicy():
        r = w.rollout
        doc["rollout"] = {
            "progress_deadline": format_duration(r.progress_deadline_ms),
            "auto_rollback": r.auto_rollback,
            "canary": r.canary,
            "auto_promote": r.auto_promote,
        }
    doc["spec"] = spec
    return doc


# Exported for the agent's `${VAR}` expansion and for messages; the quantity parsers and
# SpecError are re-exported from their own modules, where callers used to find them here.
__all__ = [
    "KEEL_VARS",
    "MAX_CPU_MILLIS",
    "MAX_DURATION_MS",
    "MAX_MEMORY_MIB",
    "SpecError",
    "available_variables",
    "format_cpu",
    "format_duration",
    "format_memory",
    "parse_cpu",
    "parse_duration",
    "parse_manifest",
    "parse_memory",
    "parse_workload",
    "workload_to_doc",
]
