"""TLS for the gRPC port, the same way for every Keel program: credentials from PEM files, and
whether an address is loopback (where the control plane may listen without TLS).

The control plane serves with `server_credentials` (`--tls-cert/--tls-key`, and with
`--tls-client-ca` it requires agents and keelctl to present a certificate that CA signed: mutual
TLS); agents and keelctl connect with `channel_credentials` (`--tls-ca`, and for mutual TLS
`--tls-cert/--tls-key`). The grpc credentials themselves are built in `keel.grpctls`, so this
module (which settings import) stays free of grpc.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


class TLSError(Exception):
    """A TLS file could not be read, or the TLS flags do not fit together."""


def read_pem(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise TLSError(f"{flag}: {path} is not a PEM file")
    return data


def listen_host(address: str) -> str:
    """The host part of HOST:PORT ([::1]:7443 -> ::1)."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1; an empty or wildcard host is not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClientTLS:
    """What an agent or keelctl connects with; all None: plain text."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def check(self) -> ClientTLS:
        if (self.cert is None) != (self.key is None):
            raise TLSError("--tls-cert and --tls-key go together (a client certificate)")
        if self.cert is not None and self.ca is None:
            raise TLSError("--tls-cert needs --tls-ca (the CA that signed the control plane's)")
        for path, flag in (
            (self.ca, "--tls-ca"),
            (self.cert, "--tls-cert"),
            (self.key, "--tls-key"),
        ):
            if path is not None:
                read_pem(path, flag)  # a missing or wrong file is named at start, not per call
        return self

    @property
    def enabled(self) -> bool:
        return self.ca is not None
