"""The clear_refs backend: per-mapping access checks for kernels without page_idle.

Every sample, writing ``1`` to ``/proc/PID/clear_refs`` clears the accessed (young) bit of
every PTE of the process and the Referenced flag of its pages; one sample interval later
``/proc/PID/smaps`` says, per mapping, how many resident bytes were referenced since
(``Referenced:`` counts a page whose PTE is young *or* whose page is Young or Referenced).
This works on any kernel with ``CONFIG_PROC_PAGE_MONITOR`` (Debian's, this host's), and
without root for one's own processes.

What it costs and what it cannot do, honestly:

- **Resolution is one mapping (VMA)**. The core is told ``adaptive = False``: regions are
  the mappings, never split or merged, and a sample answers "did this mapping see any
  access in the interval". A 1 GiB heap with one hot page is 100% hot. PROT_NONE mappings
  (guard pages, reserved address space) are left out: nothing can access them, and without
  them the core would glue neighbouring mappings into one region.
- **Cost is O(resident pages), not O(regions)**: the clear walks the whole page table of
  the process once per sample, and reading smaps walks it again (and formats ~1 KiB of text
  per mapping). For a process with gigabytes resident that is milliseconds per sample; use
  a longer sample interval for big processes.
- **It disturbs reclaim**: the referenced information the LRU uses to keep pages in memory
  is erased every sample, so reclaim may evict pages that are in use. Kernel idle page
  tracking exists to avoid exactly this; prefer page_idle where the kernel has it.
- Anything else writing clear_refs for the same process (another monitor, CRIU) erases our
  bits; that cannot be detected, so :meth:`interference` reports nothing. Kernel DAMON and
  page_idle users do not hide accesses from us: they move the PTE young bit into the page's
  Young flag, which smaps still counts.

``resident_bytes`` comes from the ``Rss:`` of the same smaps read: exact for whole mappings,
proportional to the overlap for a range covering part of one.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .base import CheckResult, Operations, ProcessGone, ProcessRef
from .procfs import (
    Pagemap,
    PosixIO,
    SmapsEntry,
    ops_error,
    open_checked_pagemap,
    parse_maps,
    parse_smaps,
    read_maps,
)

DENIED_HINT = "clear_refs needs ptrace access to the process (same uid, or CAP_SYS_PTRACE)"


@dataclass
class _Proc:
    pagemap: Pagemap  # held open only as the exit/exec probe
    clear_fd: int = -1
    cleared: bool = False  # clear_refs written since the last check
    smaps: list[SmapsEntry] | None = None  # read after the last clear
    starts: list[int] = field(default_factory=list)


class ClearRefsOps(Operations):
    name = "clear_refs"
    adaptive = False

    def __init__(self, *, proc_root: str = "/proc", io: PosixIO | None = None) -> None:
        self.proc_root = proc_root
        self.io = io or PosixIO()
        self._procs: dict[ProcessRef, _Proc] = {}

    @classmethod
    def available(cls, *, proc_root: str = "/proc", io: PosixIO | None = None) -> tuple[bool, str]:
        io = io or PosixIO()
        path = f"{proc_root}/self/clear_refs"
        if not io.exists(path):
            return False, f"{path} does not exist (kernel built without CONFIG_PROC_PAGE_MONITOR)"
        return True, f"{path} exists"

    def _proc(self, proc: ProcessRef) -> _Proc:
        p = self._procs.get(proc)
        if p is None:
            p = _Proc(open_checked_pagemap(self.io, self.proc_root, proc, DENIED_HINT))
            self._procs[proc] = p
        return p

    def _gone_unless_alive(self, p: _Proc, pid: int) -> None:
        if not p.pagemap.alive():
            raise ProcessGone(f"process {pid} exited or exec'ed")

    def mappings(self, proc: ProcessRef) -> Iterable[tuple[int, int]]:
        p = self._proc(proc)
        data = read_maps(self.io, self.proc_root, proc.pid, DENIED_HINT)
        self._gone_unless_alive(p, proc.pid)
        return parse_maps(data, skip_prot_none=True)

    def prepare_access_checks(self, proc: ProcessRef, addrs: Sequence[int]) -> None:
        p = self._proc(proc)
        path = f"{self.proc_root}/{proc.pid}/clear_refs"
        try:
            if p.clear_fd < 0:
                p.clear_fd = self.io.open(path, os.O_WRONLY)
            self.io.write(p.clear_fd, b"1")
        except OSError as e:
            raise ops_error(e, proc.pid, path, DENIED_HINT) from None
        # a process that exited or exec'ed accepts the write silently: probe after it
        self._gone_unless_alive(p, proc.pid)
        p.cleared = True
        p.smaps = None

    def _read_smaps(self, p: _Proc, pid: int) -> list[SmapsEntry]:
        path = f"{self.proc_root}/{pid}/smaps"
        try:
            data = self.io.read_file(path)
        except OSError as e:
            raise ops_error(e, pid, path, DENIED_HINT) from None
        self._gone_unless_alive(p, pid)  # an empty or foreign smaps would read as "all idle"
        p.smaps = parse_smaps(data)
        p.starts = [m.start for m in p.smaps]
        return p.smaps

    def check_accesses(self, proc: ProcessRef, addrs: Sequence[int]) -> list[CheckResult]:
        p = self._proc(proc)
        smaps = self._read_smaps(p, proc.pid)
        if not p.cleared:
            return [None] * len(addrs)
        p.cleared = False
        out: list[CheckResult] = []
        starts = p.starts
        for a in addrs:
            i = bisect.bisect_right(starts, a) - 1
            if i < 0 or a >= smaps[i].end or smaps[i].rss == 0:
                out.append(None)  # unmapped since, or nothing resident: cannot tell
            else:
                out.append(smaps[i].referenced > 0)
        return out

    def resident_bytes(self, proc: ProcessRef, ranges: Sequence[tuple[int, int]]) -> list[int]:
        p = self._proc(proc)
        smaps = p.smaps if p.smaps is not None else self._read_smaps(p, proc.pid)
        ends = [m.end for m in smaps]
        out = []
        for start, end in ranges:
            total = 0
            i = bisect.bisect_right(ends, start)
            while i < len(smaps) and smaps[i].start < end:
                m = smaps[i]
                lo, hi = max(start, m.start), min(end, m.end)
                if hi > lo and m.rss:
                    total += m.rss if (lo, hi) == (m.start, m.end) else m.rss * (hi - lo) // (m.end - m.start)
                i += 1
            out.append(total)
        return out

    def forget(self, proc: ProcessRef) -> None:
        p = self._procs.pop(proc, None)
        if p is None:
            return
        p.pagemap.close()
        if p.clear_fd >= 0:
            try:
                self.io.close(p.clear_fd)
            except OSError:
                pass

    def close(self) -> None:
        for ref in list(self._procs):
            self.forget(ref)
