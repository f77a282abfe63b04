"""The agent's identity: its host credential, got once by joining, and the channel it uses.

On its first connection an agent without a credential calls `AgentService.Join` with the join
token (`--join-token-file`, or env KEEL_JOIN_TOKEN) and its host name; the credential it gets
is for that host alone and is kept mode 0600 in `<state-dir>/credential`, then sent with every
Sync. If the control plane no longer knows it (UNAUTHENTICATED: an admin ran `keelctl host
reset-credential` or revoked it, even while its stream was open, or the database was rebuilt),
the agent forgets it and joins again at the next attempt; a join token refused is not sent
again (only a restart with another can help), and with neither the agent connects no more.
The credential and the join token never reach a log line.

Channels use TLS when `--tls-ca` is given (`keel.tls`), with a client certificate for mutual
TLS (`--tls-cert/--tls-key`). Neighbour: `agent.sync` (opens the channel, calls Join and sends
the credential with Sync); this module holds the files and flags only, no gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from pathlib import Path

from agent.errors import ConfigError
from keel.secretfile import SecretFileError, read_secret, write_secret
from keel.tls import ClientTLS, TLSError

JOIN_TOKEN_ENV = "KEEL_JOIN_TOKEN"
CREDENTIAL_FILE = "credential"
# The secret of the credential a Join asks for, kept before the call: a Join whose answer was
# lost is retried with it and gets the same credential (the control plane refuses any other).
JOIN_SECRET_FILE = "credential.joining"


class NoCredential(Exception):
    """The agent has no credential and no join token to get one with."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--join-token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"the control plane's join token, used once to get this host's credential "
        f"(or env {JOIN_TOKEN_ENV}); the credential is kept in <state-dir>/{CREDENTIAL_FILE}",
    )
    for flag, what in (
        ("--tls-ca", "connect with TLS, trusting this CA (PEM) for the control plane"),
        ("--tls-cert", "client certificate (PEM) for mutual TLS"),
        ("--tls-key", "its private key (PEM)"),
    ):
        p.add_argument(flag, type=Path, default=None, metavar="PATH", help=what)


def join_token_from(args: argparse.Namespace) -> str | None:
    if args.join_token_file is not None:
        try:
            return read_secret(args.join_token_file, what="--join-token-file")
        except SecretFileError as exc:
            raise ConfigError(str(exc)) from None
    return os.environ.get(JOIN_TOKEN_ENV) or None


def tls_from(args: argparse.Namespace) -> ClientTLS:
    try:
        return ClientTLS(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key).check()
    except TLSError as exc:
        raise ConfigError(str(exc)) from None


class Credentials:
    """This host's credential: read from the state dir, or got by joining, and forgotten when
    the control plane refuses it."""

    def __init__(self, *, host: str, state_dir: Path, join_token: str | None) -> None:
        self._host = host
        self._path = state_dir / CREDENTIAL_FILE
        self._joining = state_dir / JOIN_SECRET_FILE
        self._join_token = join_token
        self._credential: str | None = None

    async def load(self) -> str | None:
        """The credential kept in the state dir, if any (read in a thread: file I/O)."""
        if self._credential is None and self._path.exists():
            self._credential = await asyncio.to_thread(
                read_secret, self._path, what="host credential"
            )
        return self._credential

    @property
    def can_join(self) -> bool:
        """Whether a join token was given, to get a credential with."""
        return self._join_token is not None

    def join_token(self) -> str:
        """The join token, to get a credential with; NoCredential when there is none."""
        if self._join_token is None:
            raise NoCredential(
                f"no credential in {self._path} and no join token to get one: start the agent "
                f"with --join-token-file (the control plane's join.token) or {JOIN_TOKEN_ENV}"
            )
        return self._join_token

    async def join_secret(self) -> str:
        """The secret to join with: the one kept from an earlier attempt, or a new one kept
        (0600) before it is sent, so a Join retried after its answer was lost gets the same
        credential."""

        def kept() -> str:
            if self._joining.exists():
                return read_secret(self._joining, what="join secret")
            secret = secrets.token_urlsafe(32)
            write_secret(self._joining, secret)
            return secret

        return await asyncio.to_thread(kept)

    async def store(self, credential: str) -> None:
        """Keeps the credential Join gave, mode 0600, before it is used."""
        await asyncio.to_thread(write_secret, self._path, credential)
        self._credential = credential
        self._joining.unlink(missing_ok=True)

    def join_refused(self) -> None:
        """The control plane refused the join token (UNAUTHENTICATED): it is not sent again."""
        self._join_token = None

    def refused(self) -> None:
        """The control plane does not know this credential (any more): join again next time,
        with a new secret."""
        self._credential = None
        self._path.unlink(missing_ok=True)
        self._joining.unlink(missing_ok=True)
