"""`spec.secret_env` and `spec.user` of a workload document: parsed and presented.

`keel.spec` calls `parse_secret_env` and `parse_user` while it parses a spec, and
`secret_env_doc` when it writes a spec back as a document (`keelctl describe`). A secret value
is never quoted in an error (the messages here name the field and the rule only), and a
document never shows one: what the control plane holds sealed (`controlplane.secrets`) comes
back as `REDACTED`, which is refused as a value so that applying a described workload cannot
set a secret to the placeholder. The agent reads `{file: PATH}` entries at start
(`agent.secretenv`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from keel.fields import (
    MAX_LIST,
    MAX_NAME,
    SpecError,
    check_fields,
    check_text,
    key_name,
    mapping,
    shown,
    type_name,
)
from keel.model import SecretValue

# What `keelctl describe` shows in place of a secret value.
REDACTED = "<redacted>"
# PATH_MAX on Linux.
MAX_PATH = 4096
# The user names `useradd` accepts by default (and systemd's relaxed rule for the rest).
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\Z")


def parse_secret_env(
    value: object, *, env: Mapping[str, str], key_re: re.Pattern[str]
) -> dict[str, SecretValue]:
    """`spec.secret_env`: NAME: VALUE (the secret itself) or NAME: {file: /absolute/path}."""
    field = "spec.secret_env"
    m = mapping(value, field)
    if len(m) > MAX_LIST:
        raise SpecError(field, f"must have at most {MAX_LIST} entries, got {len(m)}")
    out: dict[str, SecretValue] = {}
    for key, item in m.items():
        if not isinstance(key, str) or len(key) > MAX_NAME or not key_re.match(key):
            raise SpecError(
                f"{field}.{key_name(key)}",
                f"not a valid name (at most {MAX_NAME} characters matching {key_re.pattern})",
            )
        where = f"{field}.{key}"
        if key.startswith("KEEL_"):
            raise SpecError(where, "names starting with KEEL_ are reserved for Keel")
        if key in env:
            raise SpecError(where, "also set in spec.env; a variable is either plain or secret")
        out[key] = _secret(item, where)
    return out


def _secret(item: object, where: str) -> SecretValue:
    if isinstance(item, str):
        check_text(item, where)
        if item == REDACTED:
            raise SpecError(
                where,
                f"is {REDACTED}, the placeholder keelctl shows in place of a secret; give the "
                "value itself, or {file: PATH} for a file on the host",
            )
        return SecretValue(value=item)
    if not isinstance(item, Mapping):
        # The type only: the value itself may be the secret, mistyped.
        raise SpecError(where, f"must be a string or {{file: PATH}}, got {type_name(item)}")
    check_fields(item, ("file",), where)
    path = item.get("file")
    if not isinstance(path, str) or not path:
        raise SpecError(f"{where}.file", "required: the absolute path of a file on the host")
    check_text(path, f"{where}.file", limit=MAX_PATH, single_line=True)
    if not path.startswith("/"):
        raise SpecError(f"{where}.file", f"must be an absolute path, got {shown(path)}")
    return SecretValue(file=path)


def parse_user(value: object) -> str:
    """`spec.user`: the name of a user on the hosts (checked there, at start)."""
    if not isinstance(value, str):
        raise SpecError("spec.user", f"must be a string, got {type_name(value)}")
    if not USER_RE.match(value):
        raise SpecError(
            "spec.user",
            "must be a user name: a lowercase letter or '_', then up to 31 lowercase letters, "
            f"digits, '_', '.' or '-', got {shown(value)}",
        )
    return value


def secret_env_doc(secret_env: Mapping[str, SecretValue]) -> dict[str, Any]:
    """secret_env as a document shows it: sealed values as REDACTED, files by their path."""
    doc: dict[str, Any] = {}
    for key, secret in secret_env.items():
        if secret.file is not None:
            doc[key] = {"file": secret.file}
        elif secret.value is not None:
            doc[key] = secret.value
        else:
            doc[key] = REDACTED
    return doc
