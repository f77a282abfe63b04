"""keelctl's credentials: the token it sends, the channel it opens, what it says when refused,
and the admin verbs `token create|list|revoke` and `host reset-credential`.

The token comes from `--token-file` or else env KEEL_TOKEN and goes with every call as
`authorization: Bearer ...` (`TokenInterceptor`); it is never printed, except once by `token
create`, which is its purpose. TLS (`--tls-ca`, and `--tls-cert/--tls-key` for mutual TLS)
uses `keel.tls`. Neighbours: `keel.ctl.main` (runs these), `keel.ctl.args` (the flags).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import grpc

from keel.ctl import output
from keel.ctl.args import CtlError
from keel.ctl.calldetails import with_metadata
from keel.grpctls import channel_credentials
from keel.secretfile import SecretFileError, read_secret
from keel.tls import ClientTLS, TLSError
from keel.v1 import fleet_pb2

TOKEN_ENV = "KEEL_TOKEN"

UNAUTHENTICATED_HINT = (
    "keelctl sends the token in --token-file, else in $KEEL_TOKEN; the control plane wrote its "
    "first admin token to <state-dir>/admin.token (make run: .keel/controlplane/admin.token), "
    "and an admin issues more with `keelctl token create --role ROLE --name NAME`"
)


def token_of(args: argparse.Namespace) -> str | None:
    path = getattr(args, "token_file", None)
    if path is not None:
        try:
            return read_secret(Path(path), what="--token-file")
        except SecretFileError as exc:
            raise CtlError(str(exc)) from None
    return os.environ.get(TOKEN_ENV) or None


def open_channel(address: str, args: argparse.Namespace, options: Any) -> grpc.Channel:
    try:
        given = {f: getattr(args, f"tls_{f}", None) for f in ("ca", "cert", "key")}
        tls = ClientTLS(**{f: Path(v) if v else None for f, v in given.items()}).check()
        if tls.enabled:
            return grpc.secure_channel(address, channel_credentials(tls), options=options)
    except TLSError as exc:
        raise CtlError(str(exc)) from None
    return grpc.insecure_channel(address, options=options)


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Sends `authorization: Bearer TOKEN` with every call (streams too: tests and tools that
    open an agent's stream use it)."""

    def __init__(self, token: str) -> None:
        self._authorization = f"Bearer {token}"

    def _details(self, details: Any) -> Any:
        return with_metadata(details, "authorization", self._authorization)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def hint(code: grpc.StatusCode | None) -> str:
    """What to do about a refusal, appended to keelctl's error line."""
    # PERMISSION_DENIED needs none: the control plane names the role and how to get a token.
    return UNAUTHENTICATED_HINT if code == grpc.StatusCode.UNAUTHENTICATED else ""


# --- admin verbs ---------------------------------------------------------------------------


def _tokens_table(tokens: Any, *, now: Any) -> str:
    rows = [
        [
            t.name,
            t.role,
            t.host or "-",
            output.age(t.created_at.ToDatetime().replace(tzinfo=now.tzinfo), now=now),
            t.created_by or "-",
            "revoked" if t.HasField("revoked_at") else "live",
        ]
        for t in tokens
    ]
    return output.table(["NAME", "ROLE", "HOST", "AGE", "CREATED BY", "STATE"], rows)


def cmd_token(ctx: Any) -> str:
    verb = ctx.args.token_command
    if verb == "create":
        resp = ctx.stub.CreateToken(
            fleet_pb2.CreateTokenRequest(name=ctx.args.name, role=ctx.args.role),
            timeout=ctx.timeout,
        )
        if ctx.json:
            return output.to_json(resp)
        return (
            f"{resp.token}\n"
            f"# token/{resp.info.name} created with role {resp.info.role}; it is shown only "
            "now: keep it in a file (mode 0600) and pass --token-file, or set KEEL_TOKEN"
        )
    if verb == "list":
        listed = ctx.stub.ListTokens(fleet_pb2.ListTokensRequest(), timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(listed)
        return _tokens_table(listed.tokens, now=ctx.now)
    revoked = ctx.stub.RevokeToken(
        fleet_pb2.RevokeTokenRequest(name=ctx.args.name), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(revoked)
    return f"token/{revoked.name} revoked"


def cmd_host(ctx: Any) -> str:
    host = ctx.args.host
    resp = ctx.stub.ResetHostCredential(
        fleet_pb2.ResetHostCredentialRequest(host=host), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    if not resp.had_credential:
        return f"host/{host} had no credential; an agent with the join token may join it"
    return (
        f"host/{host} credential revoked; the next agent to join as {host} with the join "
        "token gets a new one (its stream, if still open, keeps running until it reconnects)"
    )
