"""Identities: tokens, their roles, and the store that issues, checks and revokes them.

A token is `<id>.<secret>`: `id` (16 hex digits) finds its row in the `token` table, `secret`
(`secrets.token_urlsafe(32)`, 256 random bits) is checked against the row's hash. SHA-256 is
the right hash here, not a slow password hash: the secret is random and high-entropy, so there
is nothing to guess from the hash, and checking must stay cheap on every call. The hashes are
compared with `hmac.compare_digest` (constant time). The secret itself is never stored, logged
or put in an error.

Roles: `viewer` < `operator` < `admin` for people and tools (each includes the ones before),
`join` (may only join a host: `AgentService.Join`), `host` (one host's credential: may only
sync that host) and `webhook` (may call no RPC: only the Alertmanager webhook,
`controlplane.alert_hook`). Which call needs which role is the one table in `controlplane.auth`.

Neighbours: `controlplane.auth` (the interceptor that checks every call with `verify`),
`controlplane.tokens_api` (the admin calls and Join), `controlplane.main` (`bootstrap` on start),
`controlplane.revocation` (ends the open calls of a token revoked or replaced here).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import structlog

from controlplane.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from controlplane.sql import TOKEN_CHANNEL, Conn, Database, record_event
from keel import fields
from keel.secretfile import write_secret

log = structlog.get_logger("keel.tokens")

VIEWER, OPERATOR, ADMIN, JOIN, HOST = "viewer", "operator", "admin", "join", "host"
WEBHOOK = "webhook"
# People and tools, lowest first: each role may do what the ones before it may.
OPERATOR_ROLES = (VIEWER, OPERATOR, ADMIN)
# What `keelctl token create --role` may issue (host credentials come from Join only).
ISSUABLE = (*OPERATOR_ROLES, JOIN, WEBHOOK)
# The tokens written under the state dir on first start: (name, role, file).
BOOTSTRAP = (
    ("admin", ADMIN, "admin.token"),
    ("join", JOIN, "join.token"),
    # Alertmanager's (http_config.authorization.credentials_file) for /hooks/alertmanager.
    ("webhook", WEBHOOK, "hooks.token"),
)

_TOKEN = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{16,128})\Z")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.@]{0,62}[a-z0-9])?\Z")
# An arbitrary constant shared by every replica: "keel token bootstrap".
_BOOTSTRAP_LOCK = 0x4B45454C_544F4B


@dataclass(frozen=True)
class Caller:
    """Who a verified token belongs to."""

    name: str
    role: str
    host: str | None = None
    # The token's id (the part before the dot, not secret): what `controlplane.revocation`
    # checks an open call's token by. Not compared: a caller is who, not which token.
    token_id: str = field(default="", compare=False)


@dataclass(frozen=True)
class Denied:
    """Why a token was refused: `reason` is the metric label, `message` what the caller reads."""

    reason: str
    message: str


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: str
    host: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_token(secret: str | None = None) -> tuple[str, str, bytes]:
    """(token as handed out, its id, the hash stored). With `secret` (an agent's own, for its
    host's credential), the id is derived from it, so the same secret gives the same token."""
    if secret is None:
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    else:
        token_id = hashlib.sha256(b"keel-join\0" + secret.encode()).hexdigest()[:16]
    return f"{token_id}.{secret}", token_id, digest(secret)


# An agent's own credential secret: enough entropy, and nothing a token's text cannot carry.
_JOIN_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")


def check_join_secret(secret: str) -> str:
    if not _JOIN_SECRET.fullmatch(secret):
        raise InvalidArgument(
            "secret: must be 32 to 128 of A-Z, a-z, 0-9, '-' and '_' (the agent's own random "
            "credential secret), or empty"
        )
    return secret


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"name: must be 1-64 lowercase letters, digits, '-', '_', '.' or '@', "
            f"starting and ending with a letter or digit, got {name[:64]!r}"
        )
    return name


def host_name(host: str) -> str:
    return f"host/{host}"


def check_revocable(name: str) -> str:
    """An operator token's name, or `host/HOST` (a host's credential)."""
    if name.startswith("host/"):
        fields.host_name(name.removeprefix("host/"), "name")
        return name
    return check_name(name)


_COLUMNS = "id, name, role, host, hash, created_at, created_by, revoked_at"
_SELECT = f"SELECT {_COLUMNS} FROM token"


def _info(r: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        name=r["name"],
        role=r["role"],
        host=r["host"] or "",
        created_at=r["created_at"],
        created_by=r["created_by"],
        revoked_at=r["revoked_at"],
    )


class TokenStore:
    """Issues, checks and revokes tokens in Postgres, with a short-lived cache of checked ones.

    A checked token is kept for `cache_s` (a setting), so every call does not read the table;
    a revocation made on another replica reaches this one when its NOTIFY does (`forget`), and
    within `cache_s` if that is lost (on this replica, at once). With Postgres away, a token
    checked before stays usable (its re-check waits at most `refresh_timeout_s`): only a new
    one cannot be checked (UNAVAILABLE).
    """

    def __init__(
        self,
        db: Database,
        *,
        cache_s: float,
        refresh_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._cache_s = cache_s
        self._refresh_timeout_s = refresh_timeout_s
        self._clock = clock
        self._checked: dict[str, tuple[float, Caller, bytes, bool]] = {}

    async def verify(self, token: str) -> Caller | Denied:
        match = _TOKEN.fullmatch(token)
        if match is None:
            return Denied("malformed", "the token is not a Keel token (expected ID.SECRET)")
        token_id, secret = match.groups()
        now = self._clock()
        cached = self._checked.get(token_id)
        if cached is None or now - cached[0] >= self._cache_s:
            try:
                # A token checked before waits at most refresh_timeout_s for the database: with
                # Postgres frozen, a call must not spend its deadline on its credential.
                async with asyncio.timeout(None if cached is None else self._refresh_timeout_s):
                    row = await self._db.fetchrow(f"{_SELECT} WHERE id = $1", token_id)
            except (Unavailable, TimeoutError):
                if cached is None:
                    raise Unavailable(
                        "the database is unreachable or did not answer in time; try again shortly"
                    ) from None
                # The database is away: what was checked before still holds.
            else:
                if row is None:
                    self._checked.pop(token_id, None)
                    return Denied("unknown", "the token is not valid (unknown or revoked)")
                caller = Caller(row["name"], row["role"], row["host"], token_id=row["id"])
                cached = (now, caller, bytes(row["hash"]), row["revoked_at"] is not None)
                self._checked[token_id] = cached
        _, caller, stored, revoked = cached
        if not hmac.compare_digest(digest(secret), stored):
            return Denied("unknown", "the token is not valid (unknown or revoked)")
        if revoked:
            return Denied("revoked", "the token is not valid (unknown or revoked)")
        return caller

    def forget(self, name: str) -> None:
        """Drops what was checked of the tokens called name (revoked or replaced, maybe on
        another replica: `controlplane.listener`): their next call reads the table."""
        for token_id, entry in list(self._checked.items()):
            if entry[1].name == name:
                del self._checked[token_id]

    async def _insert(
        self,
        conn: Conn,
        *,
        name: str,
        role: str,
        host: str | None,
        actor: str,
        secret: str | None = None,
    ) -> tuple[str, TokenInfo]:
        token, token_id, hashed = new_token(secret)
        inserted = await conn.fetchrow(
            f"""INSERT INTO token (id, name, role, host, hash, created_by)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING
                RETURNING {_COLUMNS}""",
            token_id, name, role, host, hashed, actor,
        )  # fmt: skip
        if inserted is None:
            if role == HOST and secret is not None:
                # The same agent again (its first Join's answer was lost): the same credential.
                live = await conn.fetchrow(
                    f"{_SELECT} WHERE name = $1 AND revoked_at IS NULL", name
                )
                if live is not None and hmac.compare_digest(bytes(live["hash"]), hashed):
                    return token, _info(live)
            if role == HOST:
                raise PermissionDenied(
                    f"host {host!r} already has a credential: a second agent cannot take a host "
                    f"over; if this agent replaces it, an admin runs "
                    f"`keelctl host reset-credential {host}` first"
                )
            raise FailedPrecondition(
                f"a token named {name!r} exists; revoke it first (keelctl token revoke {name}) "
                "or choose another name"
            )
        return token, _info(inserted)

    async def create(self, *, name: str, role: str, actor: str) -> tuple[str, TokenInfo]:
        """A new operator (or join) token; the token is returned once and never again."""
        check_name(name)
        if role not in ISSUABLE:
            raise InvalidArgument(f"role: must be one of {', '.join(ISSUABLE)}, got {role!r}")
        async with self._db.acquire() as conn, conn.transaction():
            token, info = await self._insert(conn, name=name, role=role, host=None, actor=actor)
            await record_event(
                conn, f"token/{name}", "TokenCreated", f"{role} token created", actor=actor
            )
        log.info("token created", token_name=name, role=role, actor=actor)
        return token, info

    async def join(self, host: str, *, actor: str, secret: str = "") -> str:
        """The credential of `host` for the agent that joins it; refused while one is live,
        unless it is the one the same `secret` (the agent's own) made: a retried Join."""
        own = check_join_secret(secret) if secret else None
        async with self._db.acquire() as conn, conn.transaction():
            existed = own is not None and await conn.fetchval(
                "SELECT true FROM token WHERE name = $1 AND revoked_at IS NULL", host_name(host)
            )
            token, _ = await self._insert(
                conn, name=host_name(host), role=HOST, host=host, actor=actor, secret=own
            )
            if existed:
                log.info("host joined again with its own secret", host=host, actor=actor)
                return token
            await record_event(
                conn, f"host/{host}", "HostJoined", "the agent joined and got a credential",
                actor=actor,
            )  # fmt: skip
        log.info("host joined", host=host, actor=actor)
        return token

    async def list(self) -> list[TokenInfo]:
        rows = await self._db.fetch(f"{_SELECT} ORDER BY name, created_at")
        return [_info(r) for r in rows]

    async def revoke(self, name: str, *, actor: str) -> TokenInfo:
        """Revokes the live token called name; revoking one already revoked changes nothing."""
        check_revocable(name)
        async with self._db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE token SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL
                    RETURNING {_COLUMNS}""",
                name,
            )
            if row is None:
                last = await conn.fetchrow(
                    f"{_SELECT} WHERE name = $1 ORDER BY created_at DESC LIMIT 1", name
                )
                if last is None:
                    raise NotFound(f"no token named {name!r} (keelctl token list shows them)")
                return _info(last)
            kind, what = (
                ("HostCredentialReset", f"host/{row['host']}")
                if row["role"] == HOST
                else ("TokenRevoked", f"token/{name}")
            )
            await record_event(conn, what, kind, f"{row['role']} token revoked", actor=actor)
            # Every replica forgets it and ends the calls it opened (controlplane.revocation).
            await conn.execute("SELECT pg_notify($1, $2)", TOKEN_CHANNEL, name)
        self.forget(name)
        log.info("token revoked", token_name=name, actor=actor)
        return _info(row)

    async def reset_host(self, host: str, *, actor: str) -> bool:
        """Revokes host's credential so its (re)installed agent may join; False if it had none."""
        try:
            info = await self.revoke(host_name(host), actor=actor)
        except NotFound:
            return False
        return info.revoked_at is not None

    async def bootstrap(self, state_dir: Path) -> None:
        """First start: the admin, join and webhook tokens, each written 0600 under the state dir.

        Only once per database: a bootstrap name that was ever issued is not issued again (an
        admin who revoked `admin` meant it). A lost token: `keel-controlplane reset-token`.
        """
        for name, role, filename in BOOTSTRAP:
            path = state_dir / filename
            async with self._db.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)
                if await conn.fetchval("SELECT 1 FROM token WHERE name = $1 LIMIT 1", name):
                    if not path.exists():
                        log.info("token exists; its file is not under this state dir",
                                 token_name=name, path=str(path))  # fmt: skip
                    continue
                token, _ = await self._insert(
                    conn, name=name, role=role, host=None, actor="bootstrap"
                )
                # Written before the commit: a token nobody can read is never issued. In a
                # thread: a file write and its fsync.
                await asyncio.to_thread(write_secret, path, token)
            log.info("token created on first start", token_name=name, role=role, path=str(path))

    async def reset(self, name: str, state_dir: Path) -> Path:
        """Replaces the bootstrap token `name` (admin, join or webhook) and writes it under
        state_dir."""
        by_name = {n: (role, f) for n, role, f in BOOTSTRAP}
        if name not in by_name:
            raise InvalidArgument(f"name: only {', '.join(by_name)} can be reset here")
        role, filename = by_name[name]
        path = state_dir / filename
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE token SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
            )
            token, _ = await self._insert(
                conn, name=name, role=role, host=None, actor="reset-token"
            )
            await record_event(
                conn, f"token/{name}", "TokenReset", f"{role} token replaced on the control "
                "plane's host", actor="keel-controlplane reset-token",
            )  # fmt: skip
            # The running replicas end what the old one opened (controlplane.revocation).
            await conn.execute("SELECT pg_notify($1, $2)", TOKEN_CHANNEL, name)
            await asyncio.to_thread(write_secret, path, token)
        return path
