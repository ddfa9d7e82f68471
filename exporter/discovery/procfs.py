"""One pass over /proc: the few facts per process that target matching needs.

Processes come and go while we read; every read tolerates the process vanishing (it is
simply left out) and a refused ``exe`` link (matching by exe then fails, comm and cmdline
still work). Kernel threads and zombies are skipped: they have no user memory to sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..ops.base import OpsError
from ..ops.procfs import PosixIO, read_stat

PF_KTHREAD = 0x00200000
_IO = PosixIO()


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    start_time: int  # /proc/PID/stat field 22, clock ticks after boot: (pid, start_time) is unique
    comm: str
    exe: str | None = None  # resolved /proc/PID/exe without ' (deleted)'; None if unknown
    cmdline: str | None = None  # arguments joined by spaces; None if not read


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:  # ENOENT/ESRCH: gone; EACCES: not ours to read
        return None


def read_exe(proc_root: str, pid: int) -> str | None:
    try:
        target = os.readlink(f"{proc_root}/{pid}/exe")
    except OSError:
        return None
    if target.endswith(" (deleted)"):  # binary replaced on disk (upgrade): still the same program
        target = target[: -len(" (deleted)")]
    return target


def read_cmdline(proc_root: str, pid: int) -> str | None:
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return " ".join(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))


def read_cgroup_file(proc_root: str, pid: int) -> str | None:
    return _read_text(f"{proc_root}/{pid}/cgroup")


def read_process(proc_root: str, pid: int, *, want_exe: bool, want_cmdline: bool) -> ProcessInfo | None:
    """The process' facts, or None if it is gone, a kernel thread or a zombie."""
    try:
        st = read_stat(_IO, proc_root, pid, "")
    except OpsError:  # gone, or a stat line we cannot parse
        return None
    if st.flags & PF_KTHREAD or st.state in ("Z", "X", "x"):
        return None
    exe = read_exe(proc_root, pid) if want_exe else None
    cmdline = read_cmdline(proc_root, pid) if want_cmdline else None
    return ProcessInfo(pid=pid, ppid=st.ppid, start_time=st.start_time, comm=st.comm, exe=exe, cmdline=cmdline)


def list_pids(proc_root: str) -> list[int]:
    try:
        names = os.listdir(proc_root)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def scan(proc_root: str = "/proc", *, want_exe: bool = True, want_cmdline: bool = True) -> dict[int, ProcessInfo]:
    """All user processes now, by pid. Only what matching needs is read (exe/cmdline are
    skipped when no target asks for them), which keeps a scan of ~1000 processes cheap."""
    out: dict[int, ProcessInfo] = {}
    for pid in list_pids(proc_root):
        info = read_process(proc_root, pid, want_exe=want_exe, want_cmdline=want_cmdline)
        if info is not None:
            out[pid] = info
    return out
