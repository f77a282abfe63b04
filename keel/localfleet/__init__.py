"""`make run`: a whole Keel fleet on this machine, in the foreground, until Ctrl-C.

Starts one `keel-controlplane` (its own embedded Postgres under the state dir) and three
`keel-agent`s with the process driver (host-1..host-3, each with its own state dir), waits until
the control plane answers and every host is READY, applies the example workload with `keelctl`,
and prints how to reach the fleet. Ctrl-C or SIGTERM stops it in order: the agents first (run
with --stop-workloads-on-exit, so they stop their workloads), then the control plane (which
stops its Postgres), escalating to SIGKILL at a deadline; nothing is left running. Running it
again reuses the same state dir. Everything talks to the fleet through `keelctl`, as an
operator would; the launcher itself never loads gRPC, so forking the children stays safe.

`keel.localfleet.launcher` is the start-up sequence and the command line (`python -m
keel.localfleet`); `keel.localfleet.processes` starts, stops and finds the processes.
"""

from __future__ import annotations


class LocalFleetError(Exception):
    """The local fleet could not start; the message says why and what to do."""
