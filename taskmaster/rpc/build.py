"""Regenerate the gRPC modules in this folder from proto/*.proto."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
OUT_DIR = Path(__file__).resolve().parent


def generate(out_dir: Path = OUT_DIR, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc over proto_dir into out_dir; return the files written."""
    from grpc_tools import protoc  # only needed by developers

    protos = sorted(str(p.name) for p in proto_dir.glob("*.proto"))
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    written = []
    for path in sorted(out_dir.glob("*_pb2*.py*")):
        # protoc writes absolute imports; make them relative to this package.
        text = path.read_text()
        fixed = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
        if fixed != text:
            path.write_text(fixed)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in generate():
        print(p)
    sys.exit(0)
