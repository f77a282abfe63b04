"""Token files: written mode 0600 atomically, read back stripped; shared by every Keel program.

The control plane writes its first admin and join tokens with `write_secret`, an agent its host
credential; keelctl (`--token-file`) and the agent (`--join-token-file`) read them with
`read_secret`. Errors name the file, never its content.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretFileError(Exception):
    """A token file could not be read or written; the message names the file and why."""


def write_secret(path: Path, text: str) -> None:
    """Writes text to path, mode 0600 from the first byte (mkstemp), replacing it atomically."""
    import tempfile  # here: keelctl only reads its token, and tempfile's import is 5-10 ms

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_secret(path: Path, *, what: str) -> str:
    """The token in path (surrounding whitespace removed); SecretFileError naming the file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretFileError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if not text:
        raise SecretFileError(f"{what}: {path} is empty")
    return text
