"""Who made an operator call, as events and operations record it.

The actor is the name of the token the call carried (`controlplane.auth` verified it and keeps
the caller for the call). A call handled without that interceptor (the servicer called
directly, as some tests do) falls back to the client program and where it called from
(`keelctl@ipv4:127.0.0.1:50022`): keelctl names itself at the head of its user agent.
Neighbours: `fleet`, `operations_api` and `tokens_api` (the operator calls) record it with every
change.
"""

from __future__ import annotations

import re

import grpc

from controlplane.auth import caller

# The client program named at the head of a user agent (`keelctl grpc-python/1.85.1 ...`).
_PROGRAM = re.compile(r"^([a-z][a-z0-9-]{0,31})[/ ]")


def actor_of(context: grpc.aio.ServicerContext) -> str:
    who = caller()
    if who is not None:
        return who.name
    peer: str = context.peer() or "unknown peer"
    agent = dict(context.invocation_metadata() or ()).get("user-agent", "")
    program = _PROGRAM.match(agent) if isinstance(agent, str) else None
    return f"{program.group(1)}@{peer}" if program else peer
