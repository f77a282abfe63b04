"""Keel host agent: sync client, reconciler and runtime drivers.

Where to look: what to do next (`planner`), when a process is restarted (`restart`), what is
reported and why it is stuck (`status`, `stuck`), the executor loop (`reconciler`), the
stream to the control plane (`sync`, converting through `convert`).
"""

import os

# The agent forks workload processes while gRPC threads run. gRPC's fork handlers then crash
# some children with SIGSEGV between fork and exec (seen as "signal 11" right after start).
# The agent never uses gRPC in a child, so it turns fork support off before grpc is imported;
# workloads get an environment of their own, so this does not reach them.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
