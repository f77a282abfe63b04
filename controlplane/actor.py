"""Who made an operator call, as events and operations record it.

Until operators authenticate, the actor is the client program and where it called from
(`keelctl@ipv4:127.0.0.1:50022`): keelctl names itself at the head of its user agent. With
operator tokens it becomes the token's name; `actor_of` is the one place that changes.
Neighbours: `fleet` and `operations_api` (the operator calls) record it with every change.
"""

from __future__ import annotations

import re

import grpc

# The client program named at the head of a user agent (`keelctl grpc-python/1.85.1 ...`).
_PROGRAM = re.compile(r"^([a-z][a-z0-9-]{0,31})[/ ]")


def actor_of(context: grpc.aio.ServicerContext) -> str:
    peer: str = context.peer() or "unknown peer"
    agent = dict(context.invocation_metadata() or ()).get("user-agent", "")
    program = _PROGRAM.match(agent) if isinstance(agent, str) else None
    return f"{program.group(1)}@{peer}" if program else peer
