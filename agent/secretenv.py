"""The values of a spec's `secret_env`, resolved on the host when an instance starts.

`agent.startstop.launch` calls `secret_values` (in a thread: it reads files) and adds the
result to the environment it hands the driver; nothing else sees the values. A plain value came
in the assignment (the control plane opened it for this agent only); a `{file: PATH}` value is
read here at every start, so it never leaves the host, and a changed file takes effect at the
next start of the instance (a changed file does not roll the workload: Keel never sees it).
Errors name the variable and the file, never a value. `redactor` gives the values an
instance's output may hold, for `keel.redact` to take out of what the agent reports.
"""

from __future__ import annotations

from agent.errors import StartFailed
from keel.model import SecretValue, WorkloadSpec
from keel.redact import Redactor

# A secret is a password, a token or a key, not a data set; bounded like an env value.
MAX_SECRET_FILE_BYTES = 64 * 1024


def secret_values(spec: WorkloadSpec) -> dict[str, str]:
    """NAME -> value for every secret_env entry; raises StartFailed naming what is missing."""
    return {name: _value(name, secret) for name, secret in spec.secret_env.items()}


def _value(name: str, secret: SecretValue) -> str:
    if secret.value is not None:
        return secret.value
    if secret.file is not None:
        return _read(name, secret.file)
    raise StartFailed(
        f"secret_env.{name} arrived without its value (the control plane sent it "
        "sealed); see runbooks/secret-key.md"
    )


def redactor(spec: WorkloadSpec | None, started: Redactor) -> tuple[Redactor, list[str]]:
    """What to redact from an instance's output: the values its process `started` with and
    those `spec` resolves to now (a file changed since, or a process an earlier agent
    started), and the names of the variables whose value is known neither way (blocking:
    run in a thread)."""
    if spec is None or not spec.secret_env:
        return started, []
    now: dict[str, str] = {}
    unknown = []
    for name, secret in spec.secret_env.items():
        try:
            now[name] = _value(name, secret)
        except StartFailed:
            if name not in started.names:
                unknown.append(name)
    return started.merged(Redactor(now)), unknown


def withheld(unknown: list[str]) -> str:
    """Said instead of output that could hold a value the agent cannot redact."""
    names = ", ".join(f"secret_env.{n}" for n in unknown)
    return f"(withheld: {names} cannot be read now to redact it from the output)"


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
