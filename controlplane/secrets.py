"""Sealing `secret_env` values: the control plane stores ciphertext, never a secret.

`fleet.FleetApi.ApplyWorkload` seals a parsed spec (`SecretBox.seal`) before the store writes
it, so Postgres, its dumps and its backups hold only ciphertext, and every operator answer
presents a sealed value as redacted (`keel.convert.secret_to_pb`). `sync.AgentSync` opens the
values (`SecretBox.open`) only to build an agent's assignment, the one message that carries
them, and to take them out of an agent's report (`report_secrets`). The key lives in a file
under the state dir (`<state-dir>/secret.key`, created 0600 on first start;
`--secret-key-file` names another), never in the database.

AES-SIV (RFC 5297, deterministic authenticated encryption, from `cryptography`): one value
sealed twice for the same workload and variable gives the same text. So the store keeps telling
a changed spec from an unchanged one by comparing what it stores (with a random nonce every
apply would look like a new spec and roll the workload), and a changed value does roll it.
The associated data binds each text to its workload and variable: a text copied into another
row does not open. What a dump shows is only whether a value changed between revisions.

The key file holds one key per line (base64); the first seals, every one opens, so a key can be
rotated (`controlplane.reseal` rewrites the stored texts; runbooks/secret-key.md). Each sealed
text names the key that sealed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from controlplane.errors import FailedPrecondition, KeelError
from keel.model import SecretValue, WorkloadSpec

log = structlog.get_logger("keel.secrets")

KEY_FILE = "secret.key"
RUNBOOK = "runbooks/secret-key.md"
_KEY_BITS = 512  # AES-256-SIV: two 256-bit keys
_PREFIX = "keel1"
_HEADER = (
    "# Keel's secret_env key: one base64 key per line; the first seals, all open.\n"
    "# Back it up apart from the database: without it, no stored secret can be read.\n"
)


class SecretKeyError(KeelError):
    """The secret key file cannot be read, created or trusted."""


class SecretsUnopenable(FailedPrecondition):
    """A workload's secret_env cannot be opened with this control plane's secret key."""


def key_id(key: bytes) -> str:
    """A short name for a key (not the key): which key sealed a text."""
    return hashlib.sha256(key).hexdigest()[:8]


class SecretBox:
    """Seals and opens secret_env values with the keys of one key file."""

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        path: Path,
        on_open_failure: Callable[[], None] = lambda: None,
    ) -> None:
        if not keys:
            raise SecretKeyError(f"{path} holds no key")
        self.path = path
        self._sealer = AESSIV(keys[0])
        self._sealing_id = key_id(keys[0])
        self._openers = {key_id(k): AESSIV(k) for k in keys}
        self._on_open_failure = on_open_failure

    @property
    def sealing_key_id(self) -> str:
        return self._sealing_id

    def seal(self, workload: str, spec: WorkloadSpec) -> WorkloadSpec:
        """spec with every plain secret value sealed (files and sealed values as they are)."""
        if not spec.plain_secrets():
            return spec
        sealed = {}
        for name, secret in spec.secret_env.items():
            if secret.value is not None:
                text = self._sealer.encrypt(secret.value.encode(), _context(workload, name))
                encoded = base64.urlsafe_b64encode(text).decode()
                secret = SecretValue(sealed=f"{_PREFIX}:{self._sealing_id}:{encoded}")
            sealed[name] = secret
        return replace(spec, secret_env=sealed)

    def open(self, workload: str, spec: WorkloadSpec) -> WorkloadSpec:
        """spec with every sealed value opened, for the agent's assignment; raises
        SecretsUnopenable (naming the workload, the variable and the key, never a value)."""
        if not any(s.sealed is not None for s in spec.secret_env.values()):
            return spec
        opened = {}
        for name, secret in spec.secret_env.items():
            if secret.sealed is not None:
                secret = SecretValue(value=self._open_one(workload, name, secret.sealed))
            opened[name] = secret
        return replace(spec, secret_env=opened)

    def _open_one(self, workload: str, name: str, sealed: str) -> str:
        prefix, _, rest = sealed.partition(":")
        kid, _, encoded = rest.partition(":")
        opener = self._openers.get(kid) if prefix == _PREFIX else None
        why = f"it was sealed with key {kid or '(none)'}, which {self.path} does not hold"
        if opener is not None:
            try:
                text = base64.urlsafe_b64decode(encoded.encode())
                return opener.decrypt(text, _context(workload, name)).decode()
            except (InvalidTag, binascii.Error, ValueError):
                why = f"it does not open with key {kid} (altered, or copied from another row)"
        self._on_open_failure()
        log.error(
            "secret_env cannot be opened",
            workload=workload,
            variable=name,
            key_id=kid,
            key_file=str(self.path),
            runbook=RUNBOOK,
        )
        raise SecretsUnopenable(
            f"workload {workload}: secret_env.{name} cannot be opened: {why}; see {RUNBOOK}"
        )


def _context(workload: str, name: str) -> list[bytes]:
    return [b"keel secret_env", workload.encode(), name.encode()]


def load_or_create(path: Path, *, on_open_failure: Callable[[], None]) -> SecretBox:
    """The box for the key file at path, created (0600, one new key) when there is none.
    Blocking file I/O: call it from a thread."""
    if not path.exists():
        _create(path)
        log.info("secret key created", key_file=str(path), runbook=RUNBOOK)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as e:
        raise SecretKeyError(f"cannot read the secret key file {path}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(
            f"the secret key file {path} may be read by other users "
            f"(mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line.encode(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) * 8 != _KEY_BITS:
            raise SecretKeyError(
                f"{path} line {number}: not a key (each line is {_KEY_BITS // 8} bytes, "
                f"base64); see {RUNBOOK}"
            )
        keys.append(key)
    return SecretBox(keys, path=path, on_open_failure=on_open_failure)


def new_key_line() -> str:
    """One new key as the key file holds it (for rotation: runbooks/secret-key.md)."""
    return base64.b64encode(AESSIV.generate_key(_KEY_BITS)).decode()


def _create(path: Path) -> None:
    # Written whole under a temporary name, then linked into place: link() fails when the
    # name exists, so two replicas sharing a state dir never both create, and neither ever
    # reads a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_HEADER + new_key_line() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as e:
        raise SecretKeyError(f"cannot create the secret key file {path}: {e.strerror}") from e
    finally:
        tmp.unlink(missing_ok=True)
