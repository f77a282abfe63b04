"""Tokens on a real Postgres: issued once and stored hashed, checked, revoked, a host joined
once, the first-start tokens written 0600 exactly once, and every refusal named."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from controlplane.store import Store
from controlplane.tokens import Caller, Denied, TokenStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tokens_of(store: Store, *, cache_s: float = 5.0, clock: Clock | None = None) -> TokenStore:
    return TokenStore(store.pool, cache_s=cache_s, clock=clock or Clock())


async def test_a_token_is_stored_hashed_and_checks_to_its_name_and_role(store: Store) -> None:
    """Only the SHA-256 of the secret is stored; the token checks to its name and role."""
    tokens = tokens_of(store)
    token, info = await tokens.create(name="alice", role="viewer", actor="admin")
    assert (info.name, info.role, info.created_by, info.revoked_at) == (
        "alice",
        "viewer",
        "admin",
        None,
    )
    token_id, secret = token.split(".")
    row = await store.pool.fetchrow("SELECT * FROM token WHERE id = $1", token_id)
    assert row is not None
    assert bytes(row["hash"]) == hashlib.sha256(secret.encode()).digest()
    assert secret not in str(dict(row))
    assert await tokens.verify(token) == Caller("alice", "viewer", None)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: "", "malformed"),
        (lambda t: "alice", "malformed"),
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "unknown"),
        (lambda t: "0123456789abcdef." + t.split(".")[1], "unknown"),
    ],
)
async def test_a_wrong_token_is_denied_with_its_reason(store: Store, mangle, reason) -> None:  # type: ignore[no-untyped-def]
    """Malformed, a wrong secret, an id nobody has: denied, and the message has no token."""
    tokens = tokens_of(store)
    token, _ = await tokens.create(name="bob", role="operator", actor="admin")
    verdict = await tokens.verify(mangle(token))
    assert isinstance(verdict, Denied) and verdict.reason == reason
    assert token.split(".")[1] not in verdict.message


async def test_revoking_takes_effect_at_once_here_and_within_the_cache_time_elsewhere(
    store: Store,
) -> None:
    """The replica that revokes forgets at once; another trusts its check for cache_s only."""
    clock = Clock()
    here, elsewhere = tokens_of(store, clock=clock), tokens_of(store, clock=clock)
    token, _ = await here.create(name="carol", role="admin", actor="admin")
    assert isinstance(await here.verify(token), Caller)
    assert isinstance(await elsewhere.verify(token), Caller)
    revoked = await here.revoke("carol", actor="admin")
    assert revoked.revoked_at is not None
    assert (await here.verify(token)) == Denied(
        "revoked", "the token is not valid (unknown or revoked)"
    )
    assert isinstance(await elsewhere.verify(token), Caller)  # within its cache time
    clock.now += 5.0
    verdict = await elsewhere.verify(token)
    assert isinstance(verdict, Denied) and verdict.reason == "revoked"
    again = await here.revoke("carol", actor="admin")  # safe to repeat
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound, match="no token named 'nobody'"):
        await here.revoke("nobody", actor="admin")


async def test_names_roles_and_duplicates_are_refused_naming_the_rule(store: Store) -> None:
    tokens = tokens_of(store)
    await tokens.create(name="dave", role="viewer", actor="admin")
    with pytest.raises(FailedPrecondition, match="a token named 'dave' exists"):
        await tokens.create(name="dave", role="admin", actor="admin")
    with pytest.raises(InvalidArgument, match=r"^role: must be one of"):
        await tokens.create(name="erin", role="host", actor="admin")
    for bad in ("", "Erin", "erin/x", "e" * 65, "erin\x00"):
        with pytest.raises(InvalidArgument, match=r"^name: "):
            await tokens.create(name=bad, role="viewer", actor="admin")
    assert [t.name for t in await tokens.list()] == ["dave"]


async def test_a_host_joins_once_until_its_credential_is_reset(store: Store) -> None:
    """The second join of a host is refused; after a reset the next join gets a new one, and
    the old credential no longer checks."""
    tokens = tokens_of(store)
    first = await tokens.join("h1", actor="join")
    assert await tokens.verify(first) == Caller("host/h1", "host", "h1")
    with pytest.raises(PermissionDenied, match="host 'h1' already has a credential"):
        await tokens.join("h1", actor="join")
    assert await tokens.reset_host("h1", actor="admin") is True
    assert await tokens.reset_host("h2", actor="admin") is False
    second = await tokens.join("h1", actor="join")
    assert second != first
    assert isinstance(await tokens.verify(first), Denied)
    assert await tokens.verify(second) == Caller("host/h1", "host", "h1")
    kinds = [
        r["kind"]
        for r in await store.pool.fetch(
            "SELECT kind FROM event WHERE object = 'host/h1' ORDER BY id"
        )
    ]
    assert kinds == ["HostJoined", "HostCredentialReset", "HostJoined"]


async def test_a_join_retried_with_the_agents_own_secret_gets_the_same_credential(
    store: Store,
) -> None:
    """An agent's first Join committed but its answer was lost: the same Join (its own secret,
    kept before the call) gets the same credential, once recorded; another secret is a
    takeover and refused; a secret that is too short names the field."""
    tokens = tokens_of(store)
    mine = "a" * 20 + "B-_c" * 5
    first = await tokens.join("h1", actor="join", secret=mine)
    again = await tokens.join("h1", actor="join", secret=mine)
    assert again == first
    assert await tokens.verify(again) == Caller("host/h1", "host", "h1")
    with pytest.raises(PermissionDenied, match="host 'h1' already has a credential"):
        await tokens.join("h1", actor="join", secret="z" * 40)
    with pytest.raises(PermissionDenied, match="host 'h1' already has a credential"):
        await tokens.join("h1", actor="join")
    with pytest.raises(InvalidArgument, match=r"^secret: must be 32 to 128"):
        await tokens.join("h2", actor="join", secret="short")
    joined = await store.pool.fetchval(
        "SELECT count(*) FROM event WHERE kind = 'HostJoined' AND object = 'host/h1'"
    )
    assert joined == 1


async def test_first_start_writes_admin_join_and_webhook_tokens_0600_once(
    store: Store, tmp_path: Path
) -> None:
    """Bootstrap issues each token once per database, writes it 0600, and never again: a
    second start (or replica) leaves them; revoking `admin` is not undone by a restart."""
    tokens = tokens_of(store)
    await tokens.bootstrap(tmp_path)
    files = {"admin": "admin.token", "join": "join.token", "webhook": "hooks.token"}
    written = {n: (tmp_path / f).read_text().strip() for n, f in files.items()}
    for name, token in written.items():
        assert stat.S_IMODE((tmp_path / files[name]).stat().st_mode) == 0o600
        verdict = await tokens.verify(token)
        assert isinstance(verdict, Caller) and verdict.role == name
    await tokens.revoke("admin", actor="admin")
    await tokens.bootstrap(tmp_path)
    assert (tmp_path / "admin.token").read_text().strip() == written["admin"]
    assert isinstance(await tokens.verify(written["admin"]), Denied)
    path = await tokens.reset("admin", tmp_path)
    assert isinstance(await tokens.verify(path.read_text().strip()), Caller)
