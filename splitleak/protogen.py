"""Generates the Python stubs in splitleak/v1 from protos/ (``make protos``)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = ("splitleak/v1/splitleak.proto",)

__all__ = ["generate", "main"]


def generate(out_dir: Path) -> list[Path]:
    """Returns the stub files written under out_dir (mirroring the proto package)."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(p for p in out_dir.rglob("*_pb2*.py*"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for generated in generate(Path(tmp)):
            target = REPO_ROOT / generated.relative_to(tmp)
            target.write_bytes(generated.read_bytes())
            print(f"wrote {target.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
