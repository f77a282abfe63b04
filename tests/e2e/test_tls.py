"""TLS on the gRPC port: a fleet whose control plane serves TLS converges with agents and
keelctl given its CA; with a client CA (mutual TLS) a client without a certificate is refused;
a control plane asked to listen off loopback without TLS refuses to start and says why.

Certificates are made in the test with the `openssl` command (a CA, and a server and a client
certificate it signs; the server's names 127.0.0.1).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from harness import KEEL_CONTROLPLANE, Fleet

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: Path) -> dict[str, Path]:
    """ca.pem, server.pem/server.key (for 127.0.0.1), client.pem/client.key, in d."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", *ext, cwd=d)  # fmt: skip
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


WEB = {
    "name": "web",
    "replicas": 1,
    "spec": {"command": ["sleep", "1000"], "resources": {"cpu": "10m", "memory": "16Mi"}},
}


def test_a_tls_fleet_converges_and_plain_text_is_refused(tmp_path: Path) -> None:
    """Agents and keelctl with --tls-ca reach a TLS control plane; without it they cannot."""
    certs = make_certificates(tmp_path / "certs")
    args = ["--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"])]
    with Fleet(
        tmp_path / "fleet", database_url=None, agents=1, controlplane_args=args,
        tls_ca=certs["ca.pem"], start_timeout=120,
    ) as fleet:  # fmt: skip
        fleet.apply_ok(WEB)
        fleet.wait_running("web", 1)
        plain = subprocess.run(
            [str(KEEL_CONTROLPLANE.parent / "keelctl"), "--controlplane", fleet.address,
             "--token-file", str(fleet.admin_token_file), "--timeout", "3s", "get", "hosts"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert plain.returncode == 1, plain
        assert "host-1" not in plain.stdout


def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    """With --tls-client-ca, agents and keelctl presenting a certificate the CA signed get in;
    keelctl with only the CA does not."""
    certs = make_certificates(tmp_path / "certs")
    args = ["--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
            "--tls-client-ca", str(certs["ca.pem"])]  # fmt: skip
    with Fleet(
        tmp_path / "fleet", database_url=None, agents=1, controlplane_args=args,
        tls_ca=certs["ca.pem"], tls_client=(certs["client.pem"], certs["client.key"]),
        start_timeout=120,
    ) as fleet:  # fmt: skip
        assert [h.name for h in fleet.wait_hosts_ready()] == ["host-1"]
        anonymous = subprocess.run(
            [str(KEEL_CONTROLPLANE.parent / "keelctl"), "--controlplane", fleet.address,
             "--token-file", str(fleet.admin_token_file), "--tls-ca", str(certs["ca.pem"]),
             "--timeout", "3s", "get", "hosts"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert anonymous.returncode == 1, anonymous
        assert "host-1" not in anonymous.stdout


def test_a_non_loopback_address_without_tls_is_refused(tmp_path: Path) -> None:
    """--listen 0.0.0.0:0 without TLS or --insecure: exit 1, naming the flags to use."""
    result = subprocess.run(
        [str(KEEL_CONTROLPLANE), "--state-dir", str(tmp_path), "--listen", "0.0.0.0:0",
         "--metrics", "off"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "refusing to listen on 0.0.0.0:0 without TLS" in result.stderr
    assert "--tls-cert" in result.stderr and "--insecure" in result.stderr
    assert not (tmp_path / "postgres").exists()  # refused before anything started
