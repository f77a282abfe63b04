"""Regenerates keel/v1 from proto/keel/v1 (`make proto`); the staleness test calls `generate`.

The generator versions are pinned in pyproject.toml (grpcio-tools, protobuf), so the output
is reproducible and a test can demand that the committed modules equal a fresh run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = Path("keel") / "v1"


def generate(out_root: Path) -> list[Path]:
    """Writes the generated modules under out_root/keel/v1 and returns their paths."""
    import grpc_tools
    from grpc_tools import protoc  # dev dependency, imported only here

    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "keel" / "v1").glob("*.proto")
    )
    include = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / OUT_PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    init = out_root / OUT_PACKAGE / "__init__.py"
    init.write_text('"""Generated from proto/keel/v1 by `make proto`; do not edit."""\n')
    return sorted((out_root / OUT_PACKAGE).glob("*.py*"))


def main() -> None:
    written = generate(ROOT)
    print(f"regenerated {len(written)} files under {OUT_PACKAGE}")


def stale_files() -> list[str]:
    """Names of generated files that differ from a fresh generation (empty = current)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for path in fresh:
            committed = ROOT / OUT_PACKAGE / path.name
            if not committed.exists() or committed.read_bytes() != path.read_bytes():
                stale.append(path.name)
        extra = {p.name for p in (ROOT / OUT_PACKAGE).glob("*.py*")} - {p.name for p in fresh}
        return sorted(stale + list(extra))


if __name__ == "__main__":
    main()
