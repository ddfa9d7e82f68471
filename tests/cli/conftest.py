"""Fixtures of the ``snapshot`` command tests: a real child process with a known layout."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.workloads import build_workload

REPO = Path(__file__).resolve().parents[2]
#: the child's comm: the binary's name, unique enough not to meet another process
CHILD_COMM = "dmxsnap-mapper"

MIB = 1 << 20
N_MAPS, MAP_MIB, HOT_MAPS = 8, 8, 2


@dataclass
class Child:
    pid: int
    proc: subprocess.Popen
    buffer_bytes: int
    hot_bytes: int


@pytest.fixture(scope="session")
def mapper_bin(tmp_path_factory) -> str:
    """``tests/workloads/mappings.c``, named so that its comm is distinctive."""
    return build_workload("mappings.c", tmp_path_factory.mktemp("cli-children"), CHILD_COMM)


def start_child(mapper_bin: str, n: int = N_MAPS, size_mib: int = MAP_MIB, hot: int = HOT_MAPS) -> Child:
    proc = subprocess.Popen([mapper_bin, str(n), str(size_mib), str(hot)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("ready "), f"child did not start: {line!r}"
    return Child(proc.pid, proc, n * size_mib * MIB, hot * size_mib * MIB)


@pytest.fixture
def child(mapper_bin: str) -> Iterator[Child]:
    c = start_child(mapper_bin)
    try:
        yield c
    finally:
        c.proc.kill()
        c.proc.wait()


