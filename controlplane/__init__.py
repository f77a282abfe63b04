"""Keel control plane: asyncio gRPC server, Postgres store and controllers."""
