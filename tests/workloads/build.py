"""Compile a C workload of this folder with gcc at test time (no binaries in the repo)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def build_workload(source: str, out_dir: Path, name: str | None = None) -> str:
    """Build ``tests/workloads/<source>`` into ``out_dir``; the binary's name (default: the
    source's stem) becomes the process' comm, so tests can pick a distinctive one."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail(f"gcc is needed to build tests/workloads/{source} (apt-get install gcc)")
    out = Path(out_dir) / (name or Path(source).stem)
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(HERE / source)], check=True)
    return str(out)
