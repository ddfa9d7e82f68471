"""The process list for discovery and the CLI.

Processes come and go while we read; every read tolerates the process vanishing (it is
simply left out) and a refused ``exe`` link (matching by exe then fails, comm and cmdline
still work). Kernel threads and zombies are skipped: they have no user memory to sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from exporter.model.errors import OpsError
from exporter.procfs.io import PosixIO, decode_name
from exporter.procfs.parsers import alive, process_image, read_stat

# -- the process list (discovery) -------------------------------------------------------------
#
# Processes come and go while we read; every read tolerates the process vanishing (it is
# simply left out) and a refused ``exe`` link (matching by exe then fails, comm and cmdline
# still work). Kernel threads and zombies are skipped: they have no user memory to sample.

PF_KTHREAD = 0x00200000
#: how much of a command line is read: matching (``cmdline`` regexes, ``{{.Matches}}``,
#: ``{{.ExeBase}}``'s argv[0]) sees at most this prefix. A process may have a command line of
#: many MiB (``ulimit -s unlimited``); reading it whole for every process at every scan would
#: let one local user set the exporter's memory.
MAX_CMDLINE_BYTES = 64 << 10
#: /proc/PID/cgroup: one line per hierarchy; real ones are well under 4 KiB
MAX_CGROUP_FILE_BYTES = 64 << 10
_IO = PosixIO()


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    start_time: int  # /proc/PID/stat field 22, clock ticks after boot: (pid, start_time) is unique
    comm: str
    exe: str | None = None  # resolved /proc/PID/exe without ' (deleted)'; None if unknown
    cmdline: str | None = None  # arguments joined by spaces (the first MAX_CMDLINE_BYTES); None if not read
    rss_bytes: int = 0  # resident set (/proc/PID/stat field 24) when scanned: ranks groups by size
    #: the program image matched (:func:`~exporter.procfs.parsers.image_of`), from the same
    #: stat read as comm, so a ref made from this info names the image the match saw
    image: int = 0


def read_exe(proc_root: str, pid: int, io: PosixIO = _IO) -> str | None:
    try:
        target = decode_name(io.readlink(f"{proc_root}/{pid}/exe"))
    except OSError:
        return None
    if target.endswith(" (deleted)"):  # binary replaced on disk (upgrade): still the same program
        target = target[: -len(" (deleted)")]
    return target


def read_cmdline(proc_root: str, pid: int, io: PosixIO = _IO) -> str | None:
    try:
        raw = io.read_file(f"{proc_root}/{pid}/cmdline", MAX_CMDLINE_BYTES)
    except OSError:
        return None
    return " ".join(decode_name(a) for a in raw.rstrip(b"\0").split(b"\0"))


def read_cgroup_file(proc_root: str, pid: int, io: PosixIO = _IO) -> str | None:
    try:
        return decode_name(io.read_file(f"{proc_root}/{pid}/cgroup", MAX_CGROUP_FILE_BYTES))
    except OSError:  # ENOENT/ESRCH: gone; EACCES: not ours to read
        return None


def read_process(proc_root: str, pid: int, *, want_exe: bool, want_cmdline: bool, io: PosixIO = _IO) -> ProcessInfo | None:
    """The process' facts, or None if it is gone, a kernel thread or a zombie."""
    try:
        st = read_stat(io, proc_root, pid, "")
    except OpsError:  # gone, or a stat line we cannot parse
        return None
    if st.flags & PF_KTHREAD or not alive(io, proc_root, pid, st):
        return None
    exe = read_exe(proc_root, pid, io) if want_exe else None
    cmdline = read_cmdline(proc_root, pid, io) if want_cmdline else None
    return ProcessInfo(pid=pid, ppid=st.ppid, start_time=st.start_time, comm=st.comm, exe=exe, cmdline=cmdline,
                       rss_bytes=st.rss_bytes, image=process_image(io, proc_root, pid, st))


def list_pids(proc_root: str) -> list[int]:
    try:
        names = os.listdir(proc_root)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def scan(proc_root: str = "/proc", *, want_exe: bool = True, want_cmdline: bool = True, io: PosixIO = _IO) -> dict[int, ProcessInfo]:
    """All user processes now, by pid. Only what matching needs is read (exe/cmdline are
    skipped when no target asks for them), which keeps a scan of ~1000 processes cheap."""
    out: dict[int, ProcessInfo] = {}
    for pid in list_pids(proc_root):
        info = read_process(proc_root, pid, want_exe=want_exe, want_cmdline=want_cmdline, io=io)
        if info is not None:
            out[pid] = info
    return out
