"""Fixtures for the backend tests: a compiled test child (C, built with gcc at test time)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHILDREN = Path(__file__).parent / "children"


@pytest.fixture(scope="session")
def toucher(tmp_path_factory) -> str:
    """Path of the compiled ``children/toucher.c``."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("gcc is needed to build tests/ops/children/toucher.c (apt-get install gcc)")
    out = tmp_path_factory.mktemp("children") / "toucher"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(CHILDREN / "toucher.c")], check=True)
    return str(out)
