"""How keelctl shows things: aligned tables for `get`, key: value blocks for `describe`, JSON.

Pure functions from protobuf messages (keel.v1) to text, with the clock passed in, so the
formatting is tested without a server. The commands call them (`keel.ctl.commands`,
`keel.ctl.observe`); `keel.spec` renders a workload's spec back into the document an operator
wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from keel.convert import from_ts, rollout_from_pb, spec_from_pb
from keel.model import Kind, Workload
from keel.spec import format_cpu, format_duration, workload_to_doc
from keel.v1 import types_pb2 as pb

NONE = "-"


def to_json(message: Message, *, indent: int | None = 2) -> str:
    """The message as JSON with proto field names, zero values included, int64 as numbers;
    `indent` None: on one line (a progress view's line per change)."""
    # Imported here, as YAML is in describe_workload: a table needs neither, and keelctl's
    # start-up is most of a short command's time.
    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(
        message,
        preserving_proto_field_name=True,
        # A script reading `.status.restart_count` should get 0, not a missing key.
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return json.dumps(data, indent=indent, sort_keys=False)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned with two spaces between them, like kubectl; no trailing spaces."""
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = []
    for r in all_rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def age(then: datetime | None, *, now: datetime) -> str:
    """A short age like kubectl's: 45s, 5m, 3h, 2d; `-` when unknown."""
    if then is None:
        return NONE
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def when(then: datetime | None, *, now: datetime) -> str:
    """An absolute time and how long ago it was: `2025-01-02T03:04:05Z (5m ago)`."""
    if then is None:
        return NONE
    stamp = then.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} ({age(then, now=now)} ago)"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def desired_name(d: int) -> str:
    name = pb.DesiredState.Name(d) if d in pb.DesiredState.values() else str(d)
    return NONE if d == pb.DESIRED_STATE_UNSPECIFIED else name.removeprefix("DESIRED_")


def phase_name(p: int) -> str:
    """The observed phase; `-` until the agent has reported one."""
    name = pb.Phase.Name(p) if p in pb.Phase.values() else str(p)
    return NONE if p == pb.PHASE_UNSPECIFIED else name.removeprefix("PHASE_")


def _or_none(text: str) -> str:
    return text if text else NONE


def _mapping_text(m: Any) -> str:
    """A protobuf map as `k=v, k=v` (sorted), `-` when empty."""
    return ", ".join(f"{k}={m[k]}" for k in sorted(m)) or NONE


# --- get ---------------------------------------------------------------------------------------


def workloads_table(workloads: Iterable[pb.Workload], *, now: datetime) -> str:
    rows = []
    for w in workloads:
        name = f"{w.name} (deleting)" if w.deleting else w.name
        rows.append(
            [
                name,
                w.kind,
                str(w.generation),
                str(w.status.desired),
                str(w.status.ready),
                str(w.status.updated),
                age(from_ts(w.created_at), now=now),
            ]
        )
    return table(["NAME", "KIND", "GEN", "DESIRED", "READY", "UPDATED", "AGE"], rows)


def _schedulable(h: pb.Host, *, now: datetime) -> str:
    """`yes`, or since when the host is cordoned (drained: its daemons stopped too), as
    `kubectl get nodes` shows SchedulingDisabled; who and why are in `describe host`."""
    if h.schedulable:
        return "yes"
    cordoned = from_ts(h.cordoned_at)
    since = f" {age(cordoned, now=now)} ago" if cordoned is not None else ""
    return f"no ({'drained' if h.drained else 'cordoned'}{since})"


def host_state(h: pb.Host) -> str:
    """READY, NOT_READY, UNKNOWN; GONE once not READY past the control plane's --gone-after."""
    return "GONE" if h.gone else (h.state or NONE)


def hosts_table(hosts: Iterable[pb.Host], *, now: datetime) -> str:
    rows = []
    for h in hosts:
        heartbeat = from_ts(h.last_heartbeat)
        rows.append(
            [
                h.name,
                host_state(h),
                _schedulable(h, now=now),
                f"{format_cpu(h.allocated.cpu_millis)}/{format_cpu(h.capacity.cpu_millis)}",
                f"{h.allocated.memory_mib}Mi/{h.capacity.memory_mib}Mi",
                str(h.instances),
                NONE if heartbeat is None else f"{age(heartbeat, now=now)} ago",
            ]
        )
    header = ["NAME", "STATE", "SCHEDULABLE", "CPU(alloc/cap)", "MEMORY", "INSTANCES", "HEARTBEAT"]
    return table(header, rows)


def instances_table(instances: Iterable[pb.Instance], *, now: datetime) -> str:
    rows = []
    for i in instances:
        s = i.status
        rows.append(
            [
                i.id,
                i.workload,
                str(i.generation),
                i.host or NONE,
                desired_name(i.desired),
                phase_name(s.phase),
                yes_no(s.ready),
                str(s.restart_count),
                str(s.pid) if s.pid else NONE,
                age(from_ts(i.created_at), now=now),
                _or_none(s.reason),
            ]
        )
    header = [
        "ID",
        "WORKLOAD",
        "GEN",
        "HOST",
        "DESIRED",
        "PHASE",
        "READY",
        "RESTARTS",
        "PID",
        "AGE",
        "REASON",
    ]
    return table(header, rows)


def cordon_lines(hosts: Iterable[pb.Host], changed: Iterable[str], *, verb: str) -> str:
    """`host/host-1 cordoned` per host changed, `host/host-2 already cordoned` per other."""
    done = set(changed)
    return "\n".join(
        f"host/{h.name} {verb}" if h.name in done else f"host/{h.name} already {verb}"
        for h in hosts
    )


# --- describe ----------------------------------------------------------------------------------


def block(pairs: Sequence[tuple[str, str]]) -> str:
    """`Key:  value` lines with the values aligned."""
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {v}".rstrip() for k, v in pairs)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def first_line(text: str, width: int) -> str:
    """The first line of a message, cut to width (tables stay one row per object)."""
    line = text.strip().splitlines()[0] if text.strip() else NONE
    return line if len(line) <= width else line[: width - 3] + "..."


def stuck_section(s: pb.Stuck, *, now: datetime) -> str:
    """What is stuck, why, since when, the runbook and the next command."""
    pairs = [
        ("Reason", s.reason),
        ("Since", when(from_ts(s.since), now=now)),
        ("Runbook", _or_none(s.runbook)),
        ("Next", _or_none(s.next_command)),
    ]
    message = s.message.strip() or NONE
    return "Stuck:\n" + _indent(block(pairs) + "\nMessage:\n" + _indent(message))


def describe_instance(i: pb.Instance, *, now: datetime) -> str:
    s = i.status
    pairs = [
        ("ID", i.id),
        ("Workload", i.workload),
        ("Generation", str(i.generation)),
        ("Host", _or_none(i.host)),
        ("Desired", desired_name(i.desired)),
        ("Desired changed", when(from_ts(i.desired_changed_at), now=now)),
        ("Converged", yes_no(i.converged)),
        ("Created", when(from_ts(i.created_at), now=now)),
        ("Phase", phase_name(s.phase)),
        ("Ready", yes_no(s.ready)),
        ("PID", str(s.pid) if s.pid else NONE),
        ("Started", when(from_ts(s.started_at), now=now)),
        ("Restart count", str(s.restart_count)),
        ("Last exit", _or_none(s.last_exit)),
        ("Reason", _or_none(s.reason)),
        ("Message", _or_none(s.message)),
        ("Ports", _mapping_text(s.ports)),
        ("Observed", when(from_ts(s.observed_at), now=now)),
    ]
    if i.replaces:
        pairs.append(("Replaces", f"{i.replaces} (moved by a drain)"))
    if s.removed:
        pairs.append(("Removed", "yes (the agent confirmed the tombstone)"))
    text = block(pairs)
    if i.HasField("stuck"):
        text += "\n" + stuck_section(i.stuck, now=now)
    return text


def describe_host(h: pb.Host, instances: Iterable[pb.Instance], *, now: datetime) -> str:
    schedulable = "yes"
    if not h.schedulable:
        schedulable = f"no (cordoned: {h.cordon_reason})" if h.cordon_reason else "no (cordoned)"
    cordon: list[tuple[str, str]] = []
    if not h.schedulable:
        cordon = [
            ("Cordoned by", _or_none(h.cordon_actor)),
            ("Cordoned", when(from_ts(h.cordoned_at), now=now)),
        ]
        if h.drained:
            cordon.append(("Drained", "yes: its daemons stay stopped until it is uncordoned"))
    pairs = [
        ("Name", h.name),
        ("State", _or_none(h.state)),
        ("State since", when(from_ts(h.state_since), now=now)),
        *_gone(h),
        ("Schedulable", schedulable),
        *cordon,
        ("Connected", yes_no(h.connected)),
        ("Last heartbeat", when(from_ts(h.last_heartbeat), now=now)),
        ("Agent version", _or_none(h.agent_version)),
        ("Labels", _mapping_text(h.labels)),
        (
            "Capacity",
            f"cpu {format_cpu(h.capacity.cpu_millis)}, memory {h.capacity.memory_mib}Mi",
        ),
        (
            "Allocated",
            f"cpu {format_cpu(h.allocated.cpu_millis)}, memory {h.allocated.memory_mib}Mi",
        ),
        ("Instances", str(h.instances)),
        ("Revision", str(h.revision)),
    ]
    title = f"Instances on {h.name}"
    return block(pairs) + "\n" + _instances_section(instances, now=now, title=title)


def _gone(h: pb.Host) -> list[tuple[str, str]]:
    if not h.gone:
        return []
    remove = f"keelctl delete host {h.name}" + (" --force" if h.instances else "")
    return [("Gone", f"yes: not READY for longer than --gone-after; remove it: {remove}")]


def _instances_section(
    instances: Iterable[pb.Instance], *, now: datetime, title: str = "Instances"
) -> str:
    listed = list(instances)
    if not listed:
        return f"{title}:\n  (none)"
    return f"{title}:\n" + _indent(instances_table(listed, now=now))


def spec_document(w: pb.Workload) -> dict[str, Any]:
    """The workload's operator-facing document (keel.spec form), as `keelctl apply` takes it."""
    try:
        kind = Kind(w.kind)
    except ValueError:
        kind = Kind.SERVICE  # only for rendering; the raw kind is shown on its own line
    model = Workload(
        name=w.name,
        spec=spec_from_pb(w.spec),
        kind=kind,
        replicas=w.replicas,
        max_unavailable=w.max_unavailable,
        max_surge=w.max_surge,
        selector=dict(w.selector),
        deadline_ms=w.deadline_ms,
        rollout=rollout_from_pb(w.rollout),
    )
    return workload_to_doc(model)


def describe_workload(
    w: pb.Workload,
    instances: Iterable[pb.Instance],
    *,
    now: datetime,
    rollout: Any = None,
) -> str:
    """`rollout`: the workload's RolloutStatus (keel.v1.fleet_pb2), or None when not read."""
    st = w.status
    pairs = [
        ("Name", w.name),
        ("Kind", _or_none(w.kind)),
        ("Generation", str(w.generation)),
        ("Deleting", yes_no(w.deleting)),
        ("Replicas", str(w.replicas)),
        ("Max unavailable", str(w.max_unavailable)),
        ("Max surge", str(w.max_surge)),
        ("Selector", _mapping_text(w.selector)),
        ("Deadline", format_duration(w.deadline_ms)),
        ("Created", when(from_ts(w.created_at), now=now)),
        ("Updated", when(from_ts(w.updated_at), now=now)),
        (
            "Status",
            f"desired {st.desired}, instances {st.instances}, running {st.running}, "
            f"ready {st.ready}, updated {st.updated}",
        ),
    ]
    pairs.append(("Rollout policy", rollout_policy_text(w.rollout)))
    paused = f"paused by {_or_none(w.paused_by)} {when(from_ts(w.paused_at), now=now)}"
    if rollout is not None:
        state = f"revision {rollout.revision} {rollout.state}"
        if rollout.HasField("failure") and rollout.failure.reason:
            state += f" ({rollout.failure.reason})"
        # Paused: the rollout holds until `keelctl rollout resume` (or, held by keel/rollout
        # after a failure, until the next revision).
        pairs.append(("Rollout", state + (f", {paused}" if w.paused else "")))
    elif w.paused:
        pairs.append(("Rollout", paused))
    stuck = "\n" + stuck_section(w.stuck, now=now) if w.HasField("stuck") else ""
    return (
        block(pairs)
        + stuck
        + "\nSpec:\n"
        + _indent(spec_yaml(spec_document(w)["spec"]))
        + "\n"
        + _instances_section(instances, now=now)
    )


def rollout_policy_text(m: pb.RolloutPolicy) -> str:
    """The manifest's `rollout:` as one line (the defaults when the answer leaves it unset)."""
    p = rollout_from_pb(m)
    return (
        f"progress_deadline {format_duration(p.progress_deadline_ms)}, auto_rollback "
        f"{yes_no(p.auto_rollback)}, canary {p.canary}, auto_promote {yes_no(p.auto_promote)}"
    )


def spec_yaml(doc: dict[str, Any]) -> str:
    """A manifest's `spec:` as YAML (describe workload, rollout history --revision)."""
    import yaml  # only these show YAML (see to_json)

    text: str = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1000)
    return text.rstrip("\n")
