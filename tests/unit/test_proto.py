"""The gRPC code in src/tidings/v1/ is what proto/ generates today (``make proto`` writes it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "src" / "tidings" / "v1"


def test_the_committed_grpc_code_is_generated_from_the_proto_as_it_is(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "proto")],
        env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "tidings" / "v1").iterdir()}
    committed = {p.name: p.read_bytes() for p in GENERATED.iterdir() if p.name in fresh}
    assert sorted(fresh) == [
        "messaging_pb2.py",
        "messaging_pb2.pyi",
        "messaging_pb2_grpc.py",
        "messaging_pb2_grpc.pyi",
    ]
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    assert stale == [], f"run `make proto`: {stale} differ from what proto/ generates"
