"""keelctl's incident commands: `stuck`, `events` and `logs`.

What is stuck, why, the runbook and the next command; the history of an object; a workload's
stdout/stderr relayed from its agent. Argument parsing lives in `keel.ctl.args`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from keel.convert import from_ts
from keel.ctl import output
from keel.v1 import fleet_pb2


def cmd_stuck(ctx: Any) -> str:
    resp = ctx.stub.ListStuck(fleet_pb2.ListStuckRequest(), timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(resp)
    if not resp.objects:
        print("Nothing is stuck.", file=sys.stderr)
        return ""
    rows = []
    for o in resp.objects:
        s = o.stuck
        since = from_ts(s.since)
        rows.append(
            (
                o.object,
                s.reason,
                output.age(since, now=ctx.now),
                output.first_line(s.message, 100),
                s.runbook or "-",
                s.next_command or "-",
            )
        )
    return output.table(("OBJECT", "REASON", "SINCE", "MESSAGE", "RUNBOOK", "NEXT"), rows)


def cmd_events(ctx: Any) -> str:
    request = fleet_pb2.ListEventsRequest(object=ctx.args.for_object or "", limit=ctx.args.limit)
    resp = ctx.stub.ListEvents(request, timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(resp)
    if not resp.events:
        print("No events found.", file=sys.stderr)
        return ""
    return events_table(resp.events, now=ctx.now)


def events_table(events: Iterable[fleet_pb2.Event], *, now: datetime) -> str:
    """WHEN, OBJECT, EVENT, ACTOR (who made the change: a token's name, or Keel's own
    controller such as keel/rollout; `-` for what nobody asked for), MESSAGE."""
    rows = [
        (
            output.when(from_ts(e.at), now=now),
            e.object,
            e.kind,
            e.actor or output.NONE,
            output.first_line(e.message, 140),
        )
        for e in events
    ]
    return output.table(("WHEN", "OBJECT", "EVENT", "ACTOR", "MESSAGE"), rows)


def cmd_logs(ctx: Any) -> str:
    """Writes the chunks as they arrive: stdout to stdout, stderr to stderr."""
    request = fleet_pb2.GetLogsRequest(
        instance_id=ctx.args.instance, tail_lines=ctx.args.tail, follow=ctx.args.follow
    )
    # A following stream has no deadline: it ends when the operator presses Ctrl-C.
    timeout = None if ctx.args.follow else ctx.timeout
    try:
        for chunk in ctx.stub.GetLogs(request, timeout=timeout):
            if not chunk.data:
                continue
            out = sys.stderr if chunk.stream == "stderr" else sys.stdout
            out.buffer.write(chunk.data)
            out.flush()
    except KeyboardInterrupt:
        pass
    return ""
