"""The values of a spec's `secret_env`, resolved on the host when an instance starts.

`agent.startstop.launch` calls `secret_values` (in a thread: it reads files) and adds the
result to the environment it hands the driver; nothing else sees the values. A plain value came
in the assignment (the control plane opened it for this agent only); a `{file: PATH}` value is
read here at every start, so it never leaves the host, and a changed file takes effect at the
next start of the instance (a changed file does not roll the workload: Keel never sees it).
Errors name the variable and the file, never a value.
"""

from __future__ import annotations

from agent.errors import StartFailed
from keel.model import WorkloadSpec

# A secret is a password, a token or a key, not a data set; bounded like an env value.
MAX_SECRET_FILE_BYTES = 64 * 1024


def secret_values(spec: WorkloadSpec) -> dict[str, str]:
    """NAME -> value for every secret_env entry; raises StartFailed naming what is missing."""
    values: dict[str, str] = {}
    for name, secret in spec.secret_env.items():
        if secret.value is not None:
            values[name] = secret.value
        elif secret.file is not None:
            values[name] = _read(name, secret.file)
        else:
            raise StartFailed(
                f"secret_env.{name} arrived without its value (the control plane sent it "
                "sealed); see runbooks/secret-key.md"
            )
    return values


def _read(name: str, path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        raise StartFailed(f"secret_env.{name}: cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise StartFailed(f"secret_env.{name}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    if b"\x00" in data:
        raise StartFailed(f"secret_env.{name}: {path} holds a NUL byte (no env value can)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StartFailed(f"secret_env.{name}: {path} is not UTF-8 text") from None
    # `echo secret > file` adds a newline nobody means as part of the value.
    return text.removesuffix("\n")
