"""The gRPC port's security at start-up: its TLS credentials and the rule that a non-loopback
address needs TLS (or `--insecure`); and `keel-controlplane reset-token` (a lost admin or join
token, replaced by whoever can reach the database). Neighbours: `main` (calls both),
`controlplane.tokens` (the tokens), `keel.tls` (credentials from PEM files).
"""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.db import resolve_database_url
from controlplane.errors import KeelError
from controlplane.settings import Settings
from controlplane.sql import Database, create_pool
from controlplane.tokens import TokenStore
from keel.grpctls import server_credentials
from keel.tls import TLSError, is_loopback, listen_host


async def run_reset_token(args: argparse.Namespace) -> int:
    url = await resolve_database_url(args.database_url, args.state_dir)
    pool = Database(await create_pool(url, timeout_s=10.0))
    try:
        path = await TokenStore(pool, cache_s=0).reset(args.name, args.state_dir)
    finally:
        await pool.close()
    print(f"{args.name} token replaced; the new one is in {path} (mode 0600)")
    return 0


def port_credentials(settings: Settings) -> Any:
    """The gRPC port's TLS credentials, or None for plain text where that is allowed."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise KeelError("--tls-cert and --tls-key go together")
    host = listen_host(settings.listen)
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise KeelError("--tls-client-ca needs --tls-cert and --tls-key")
        if not is_loopback(host) and not settings.insecure:
            raise KeelError(
                f"refusing to listen on {settings.listen} without TLS: tokens would cross the "
                "network in clear text. Give --tls-cert and --tls-key, listen on a loopback "
                "address, or pass --insecure if the network is otherwise protected"
            )
        return None
    try:
        return server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except TLSError as exc:
        raise KeelError(str(exc)) from None
