"""Credentials at the edges: keelctl's token and its hint when refused, the agent's credential
file (0600, forgotten when refused), and TLS flags that do not fit together."""

from __future__ import annotations

import argparse
import asyncio
import stat
from pathlib import Path

import grpc
import pytest

from agent.credentials import Credentials, NoCredential
from keel.ctl import auth
from keel.ctl.args import CtlError, build_parser
from keel.ctl.main import rpc_error_line
from keel.tls import ClientTLS, TLSError, is_loopback, listen_host


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_keelctl_says_how_to_get_a_token_when_unauthenticated() -> None:
    line = rpc_error_line(
        Refused(grpc.StatusCode.UNAUTHENTICATED, "this call needs a token"),
        address="127.0.0.1:7443",
        timeout=10,
    )
    assert line.startswith("error: this call needs a token (UNAUTHENTICATED)")
    assert "--token-file" in line and "KEEL_TOKEN" in line and "admin.token" in line


def test_the_token_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TOKEN", "from-env")
    (tmp_path / "t").write_text("from-file\n")
    parser = build_parser()
    assert auth.token_of(parser.parse_args(["--token-file", str(tmp_path / "t"), "stuck"])) == (
        "from-file"
    )
    assert auth.token_of(parser.parse_args(["stuck"])) == "from-env"
    with pytest.raises(CtlError, match="--token-file: cannot read"):
        auth.token_of(argparse.Namespace(token_file=str(tmp_path / "missing")))


def test_the_agent_keeps_its_credential_0600_and_forgets_it_when_refused(tmp_path: Path) -> None:
    creds = Credentials(host="h1", state_dir=tmp_path, join_token=None)
    assert asyncio.run(creds.load()) is None
    with pytest.raises(NoCredential, match="--join-token-file"):
        creds.join_token()
    asyncio.run(creds.store("0123456789abcdef.secret"))
    path = tmp_path / "credential"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = Credentials(host="h1", state_dir=tmp_path, join_token="j")
    assert asyncio.run(fresh.load()) == "0123456789abcdef.secret"
    fresh.refused()
    assert not path.exists() and fresh.join_token() == "j"


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        (ClientTLS(cert=Path("c.pem")), "--tls-cert and --tls-key go together"),
        (ClientTLS(cert=Path("c.pem"), key=Path("k.pem")), "--tls-cert needs --tls-ca"),
        (ClientTLS(ca=Path("/nonexistent/ca.pem")), "--tls-ca: cannot read"),
    ],
)
def test_tls_flags_that_do_not_fit_are_named(tls: ClientTLS, message: str) -> None:
    with pytest.raises(TLSError, match=message):
        tls.check()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:7443", True),
        ("127.0.0.2:0", True),
        ("[::1]:7443", True),
        ("localhost:7443", True),
        ("0.0.0.0:7443", False),
        ("[::]:7443", False),
        (":7443", False),
        ("10.0.0.5:7443", False),
        ("keel.example.com:7443", False),
    ],
)
def test_only_loopback_addresses_may_serve_without_tls(address: str, loopback: bool) -> None:
    assert is_loopback(listen_host(address)) is loopback


def test_the_agent_joins_with_a_secret_it_kept_first_until_it_has_its_credential(
    tmp_path: Path,
) -> None:
    """The join secret is written (0600) before the Join is sent and the same one is sent
    again after a lost answer, even by a restarted agent; once the credential is kept, or
    refused, the next join uses a new one."""
    creds = Credentials(host="h1", state_dir=tmp_path, join_token="j")
    first = asyncio.run(creds.join_secret())
    assert len(first) >= 32
    kept = tmp_path / "credential.joining"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    restarted = Credentials(host="h1", state_dir=tmp_path, join_token="j")
    assert asyncio.run(restarted.join_secret()) == first
    asyncio.run(restarted.store(f"0123456789abcdef.{first}"))
    assert not kept.exists()
    restarted.refused()
    assert asyncio.run(restarted.join_secret()) != first
