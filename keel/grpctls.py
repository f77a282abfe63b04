"""gRPC TLS credentials from PEM files (`keel.tls` holds the flags' values and the checks):
the control plane's server credentials, an agent's or keelctl's channel credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from keel.tls import ClientTLS, read_pem


def channel_credentials(tls: ClientTLS) -> Any:
    assert tls.ca is not None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(tls.ca, "--tls-ca"),
        private_key=read_pem(tls.key, "--tls-key") if tls.key else None,
        certificate_chain=read_pem(tls.cert, "--tls-cert") if tls.cert else None,
    )


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> Any:
    return grpc.ssl_server_credentials(
        [(read_pem(key, "--tls-key"), read_pem(cert, "--tls-cert"))],
        root_certificates=read_pem(client_ca, "--tls-client-ca") if client_ca else None,
        require_client_auth=client_ca is not None,
    )
