"""What keelctl -o json prints, parsed into small frozen views the end-to-end tests assert on.

keelctl prints protobuf messages as JSON. These views accept the shapes that can take (camelCase
or snake_case keys, enum names with or without their prefix, int64 as strings, defaults omitted,
status nested or flat), so the tests pin behaviour rather than formatting. `harness.Fleet`
builds them from `keelctl` output and from ListInstances over gRPC alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _pick(data: Mapping[str, Any], name: str, default: Any = None) -> Any:
    for source in (data, data.get("status") if isinstance(data.get("status"), dict) else None):
        if source is None:
            continue
        for key in (name, _camel(name)):
            if key in source:
                return source[key]
    return default


def _enum(value: Any, *prefixes: str) -> str:
    text = str(value or "").upper()
    for prefix in prefixes:
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _int(value: Any) -> int:
    return int(value or 0)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).replace("Z", "+00:00")
    # protobuf prints up to nanoseconds; datetime takes microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def list_items(payload: Any, key: str) -> list[dict[str, Any]]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for k in (key, "items"):
            if isinstance(payload.get(k), list):
                return list(payload[k])
        if not payload:
            return []  # an empty list message prints as {}
    raise AssertionError(f"unexpected keelctl JSON for {key}: {payload!r}")


@dataclass(frozen=True)
class InstanceView:
    id: str
    workload: str
    generation: int
    host: str
    desired: str  # RUNNING | STOPPED | REMOVED
    phase: str  # PENDING | STARTING | RUNNING | STOPPING | STOPPED | FAILED
    pid: int
    restart_count: int
    last_exit: str
    ready: bool
    converged: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> InstanceView:
        return cls(
            id=str(_pick(data, "id", "") or _pick(data, "instance_id", "")),
            workload=str(_pick(data, "workload", "")),
            generation=_int(_pick(data, "generation")),
            host=str(_pick(data, "host", "")),
            desired=_enum(_pick(data, "desired"), "DESIRED_STATE_", "DESIRED_"),
            phase=_enum(_pick(data, "phase"), "PHASE_"),
            pid=_int(_pick(data, "pid")),
            restart_count=_int(_pick(data, "restart_count")),
            last_exit=str(_pick(data, "last_exit", "") or ""),
            ready=bool(_pick(data, "ready", False)),
            converged=bool(_pick(data, "converged", False)),
            raw=data,
        )

    @property
    def serving(self) -> bool:
        """Observed RUNNING and ready (healthy, past min_ready after a restart)."""
        return self.phase == "RUNNING" and self.ready


@dataclass(frozen=True)
class HostView:
    name: str
    state: str
    connected: bool
    schedulable: bool
    last_heartbeat: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> HostView:
        return cls(
            name=str(_pick(data, "name", "")),
            state=_enum(_pick(data, "state"), "HOST_STATE_"),
            connected=bool(_pick(data, "connected", False)),
            schedulable=bool(_pick(data, "schedulable", False)),
            last_heartbeat=_time(_pick(data, "last_heartbeat")),
            raw=data,
        )


@dataclass(frozen=True)
class WorkloadView:
    name: str
    generation: int
    replicas: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WorkloadView:
        return cls(
            name=str(_pick(data, "name", "")),
            generation=_int(_pick(data, "generation")),
            replicas=_int(_pick(data, "replicas")),
            raw=data,
        )
