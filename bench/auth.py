"""Credentials for the benchmarks, passed so that no scenario has to think about them.

A control plane writes its admin and join tokens under its state dir on first start; a stage
`remember`s where, for each replica address (replicas share the database, so the first one's
tokens are good on all). Then `channel`/`aio_channel` open channels whose calls carry the admin
token, `keelctl_args` gives keelctl `--token-file`, and `join_args` gives an agent (real or
hollow) `--join-token-file`. Addresses the bench did not start (bench.slis against `make run`)
use $KEEL_TOKEN.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

_STATE_DIRS: dict[str, Path] = {}


def remember(addresses: Iterable[str], state_dir: Path) -> None:
    for address in addresses:
        _STATE_DIRS[address] = state_dir


def token_for(address: str) -> str | None:
    state = _STATE_DIRS.get(address)
    if state is None:
        return os.environ.get("KEEL_TOKEN") or None
    return (state / "admin.token").read_text().strip()


def keelctl_args(address: str) -> list[str]:
    state = _STATE_DIRS.get(address)
    return [] if state is None else ["--token-file", str(state / "admin.token")]


def join_args(address: str) -> list[str]:
    state = _STATE_DIRS.get(address)
    return [] if state is None else ["--join-token-file", str(state / "join.token")]


def metadata(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _details(details: Any, token: str) -> Any:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*(details.metadata or ()), *metadata(token)),
        details.credentials,
        details.wait_for_ready,
    )


class _AioBearer(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_details(details, self._token), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_details(details, self._token), request)


def aio_channel(address: str, options: Any = None) -> grpc.aio.Channel:
    """An asyncio channel whose calls carry the admin token of the control plane at address."""
    token = token_for(address)
    interceptors = [_AioBearer(token)] if token else None
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def channel(address: str) -> grpc.Channel:
    """A blocking channel whose calls carry the admin token of the control plane at address."""
    from keel.ctl.auth import TokenInterceptor

    raw = grpc.insecure_channel(address)
    token = token_for(address)
    return grpc.intercept_channel(raw, TokenInterceptor(token)) if token else raw
