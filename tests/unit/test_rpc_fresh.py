"""The generated gRPC code in taskmaster/rpc/ is what proto/ generates today."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from taskmaster.rpc import build

GENERATED_DIR = build.OUT_DIR


def generated(folder: Path) -> dict[str, bytes]:
    """{file name: bytes} of the generated modules in a folder."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_pb2*.py*"))}


def differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    """Names of the files that are missing on one side or differ."""
    return sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))


def test_committed_code_matches_the_proto(tmp_path: Path) -> None:
    written = build.generate(out_dir=tmp_path)
    assert written, "protoc wrote nothing"
    committed = generated(GENERATED_DIR)
    fresh = generated(tmp_path)
    assert set(fresh) == {p.name for p in written}
    stale = differences(committed, fresh)
    assert not stale, (
        f"taskmaster/rpc is stale ({', '.join(stale)}): run `python -m taskmaster.rpc.build`"
    )


def test_a_changed_proto_is_noticed(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(build.PROTO_DIR, protos)
    source = protos / "taskmaster.proto"
    text = source.read_text()
    assert "message TaskRef {" in text
    source.write_text(
        text.replace("message TaskRef {", "message TaskRef {\n  string note = 99;", 1)
    )
    out = tmp_path / "out"
    out.mkdir()
    build.generate(out_dir=out, proto_dir=protos)
    stale = differences(generated(GENERATED_DIR), generated(out))
    assert "taskmaster_pb2.py" in stale
    assert "taskmaster_pb2.pyi" in stale


def test_generated_code_imports_with_relative_imports() -> None:
    from taskmaster.rpc import taskmaster_pb2, taskmaster_pb2_grpc

    text = (GENERATED_DIR / "taskmaster_pb2_grpc.py").read_text()
    assert not re.search(r"^import taskmaster_pb2", text, flags=re.M)
    assert taskmaster_pb2_grpc.taskmaster__pb2 is taskmaster_pb2
    assert taskmaster_pb2.DESCRIPTOR.package == "taskmaster.v1"
