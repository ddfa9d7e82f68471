"""Build fake /proc and cgroup trees under a temp dir (layouts this host does not have)."""

from __future__ import annotations

import os
from pathlib import Path


def add_process(
    proc: Path,
    pid: int,
    *,
    comm: str,
    ppid: int = 1,
    start: int = 1000,
    exe: str | None = None,
    cmdline: list[str] | None = None,
    cgroup: str = "0::/\n",
    flags: int = 0x400100,
    state: str = "S",
    rss_pages: int = 0,
) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    fields = [state, str(ppid), "0", "0", "0", "-1", str(flags)] + ["0"] * 12 + [str(start), "0", str(rss_pages)] + ["0"] * 28
    (d / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (d / "comm").write_text(comm + "\n")
    if exe is not None:
        os.symlink(exe, d / "exe")
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in (cmdline or [])))
    (d / "cgroup").write_text(cgroup)


def add_cgroup(root: Path, rel: str, pids: list[int] = (), *, v2_root: bool = False) -> Path:
    d = root / rel if rel else root
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
    if v2_root:
        (d / "cgroup.controllers").write_text("cpu memory\n")
    return d
