"""Compile a C workload of ``tests/workloads/`` with gcc at test time (no binaries in the repo).

One builder for the host tests, the VM tests (compiled on the host, where it costs a tenth
of what it costs in the emulated guest, and run in the guest through the shared root) and
bench/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from exporter.procfs.scan import scan

SOURCES = Path(__file__).resolve().parents[1] / "workloads"


class WorkloadBuildError(RuntimeError):
    """No compiler, or the source did not compile (the message says which, with gcc's words)."""


def build_workload(source: str, out_dir: Path | str, name: str | None = None) -> str:
    """Build ``tests/workloads/<source>`` into ``out_dir``; the binary's name (default: the
    source's stem) becomes the process' comm, so tests can pick a distinctive one."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise WorkloadBuildError(f"gcc is needed to build tests/workloads/{source} (apt-get install gcc)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    out = Path(out_dir) / (name or Path(source).stem)
    res = subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(SOURCES / source)], capture_output=True, text=True)
    if res.returncode != 0:
        raise WorkloadBuildError(f"compiling tests/workloads/{source} failed:\n{res.stderr}")
    return str(out)


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (pids), from the parent pid of every process the
    exporter's own /proc scan finds (``/proc/PID/task/TID/children`` needs
    CONFIG_PROC_CHILDREN, which kernels may lack)."""
    children: dict[int, list[int]] = {}
    for p in scan(want_exe=False, want_cmdline=False).values():
        children.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out
