"""The identity calls: FleetService's token calls (admin) and AgentService.Join (join token).

`TokensApi` is a base of `fleet.FleetApi` and `JoinApi` of `sync.AgentSync`; both hand the work
to `controlplane.tokens.TokenStore`, which records each change as an event whose actor is the
caller's token name (`controlplane.actor`). Which role may call each is in `controlplane.auth`.
A token's value leaves the control plane in exactly two answers: CreateToken's and Join's.
"""

from __future__ import annotations

import grpc

from controlplane.actor import actor_of
from controlplane.errors import FailedPrecondition
from controlplane.tokens import TokenInfo, TokenStore
from keel import fields
from keel.convert import ts
from keel.v1 import agent_pb2, fleet_pb2


def _store(tokens: TokenStore | None) -> TokenStore:
    if tokens is None:
        raise FailedPrecondition("this server was started without identities")
    return tokens


def token_pb(info: TokenInfo) -> fleet_pb2.Token:
    return fleet_pb2.Token(
        name=info.name,
        role=info.role,
        host=info.host,
        created_at=ts(info.created_at),
        created_by=info.created_by,
        revoked_at=ts(info.revoked_at),
    )


class TokensApi:
    """FleetService's CreateToken, ListTokens, RevokeToken and ResetHostCredential."""

    _tokens: TokenStore | None

    async def CreateToken(
        self, request: fleet_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.CreateTokenResponse:
        token, info = await _store(self._tokens).create(
            name=request.name, role=request.role, actor=actor_of(context)
        )
        return fleet_pb2.CreateTokenResponse(info=token_pb(info), token=token)

    async def ListTokens(
        self, request: fleet_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ListTokensResponse:
        infos = await _store(self._tokens).list()
        return fleet_pb2.ListTokensResponse(tokens=[token_pb(i) for i in infos])

    async def RevokeToken(
        self, request: fleet_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.Token:
        info = await _store(self._tokens).revoke(request.name, actor=actor_of(context))
        return token_pb(info)

    async def ResetHostCredential(
        self, request: fleet_pb2.ResetHostCredentialRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.ResetHostCredentialResponse:
        host = fields.host_name(request.host, "host")
        had = await _store(self._tokens).reset_host(host, actor=actor_of(context))
        return fleet_pb2.ResetHostCredentialResponse(had_credential=had)


class JoinApi:
    """AgentService.Join: the join token buys one host's credential, once."""

    _tokens: TokenStore | None

    async def Join(
        self, request: agent_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.JoinResponse:
        host = fields.host_name(request.host, "host")
        credential = await _store(self._tokens).join(
            host, actor=actor_of(context), secret=request.secret
        )
        return agent_pb2.JoinResponse(credential=credential)
