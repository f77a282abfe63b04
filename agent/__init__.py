"""Keel host agent: sync client, reconciler and runtime drivers."""

import os

# The agent forks workload processes while gRPC threads run. gRPC's fork handlers then crash
# some children with SIGSEGV between fork and exec (seen as "signal 11" right after start).
# The agent never uses gRPC in a child, so it turns fork support off before grpc is imported;
# workloads get an environment of their own, so this does not reach them.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
