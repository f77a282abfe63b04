"""Keel control plane: asyncio gRPC server, Postgres store and controllers."""

import os

# The control plane forks pg_ctl (embedded Postgres) while gRPC threads run; gRPC's fork
# handlers can crash such a child between fork and exec (seen in the agent). Nothing uses
# gRPC in a child, so fork support is off before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
