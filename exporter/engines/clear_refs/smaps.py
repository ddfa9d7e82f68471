"""The kernel side of clear_refs: clearing the referenced bits of a process and reading smaps back.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

from exporter.model.errors import ImageChanged, ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.activity import Activity, thread_runtimes
from exporter.procfs.io import PosixIO, ops_error
from exporter.procfs.pagemap import Pagemap, frames_at, open_checked_pagemap, zero_page_pfn
from exporter.procfs.parsers import SmapsEntry, check_same_process, iter_smaps, mm_dir, read_maps

log = logging.getLogger(__name__)

DENIED_HINT = "clear_refs needs ptrace access to the process (same uid, or CAP_SYS_PTRACE)"


def available(proc_root: str = "/proc", io: PosixIO | None = None) -> tuple[bool, str]:
    """Whether this kernel has clear_refs (never writes anything)."""
    io = io or PosixIO()
    path = f"{proc_root}/self/clear_refs"
    if not io.exists(path):
        return False, f"{path} does not exist (kernel built without CONFIG_PROC_PAGE_MONITOR)"
    return True, f"{path} exists"


class SmapsSource(Protocol):
    """Where the engine clears and reads (the real /proc, or a simulation in tests)."""

    def clear(self, proc: ProcessRef) -> None: ...
    def read(self, proc: ProcessRef) -> list[SmapsEntry]: ...
    def probe(self, proc: ProcessRef) -> None: ...
    def forget(self, proc: ProcessRef) -> None: ...
    def close(self) -> None: ...
    def frames(self, proc: ProcessRef, addrs: list[int]) -> list[int] | None:
        """The PFN at each address (0: no page, or the zero page), or None where frames
        cannot be read (no privilege, a simulation): identity is then not known."""
        ...
    def maps_text(self, proc: ProcessRef) -> bytes | None:
        """``/proc/PID/maps`` of ``proc``, or None where there is none (a simulation): the
        file mappings over shared memory, matched by offset in the summary."""
        ...
    def activity(self, proc: ProcessRef) -> object | None:
        """A snapshot of how much ``proc``'s threads have run: two equal ones prove it did not
        run in between (see :mod:`exporter.procfs.activity`); None proves nothing."""
        ...


@dataclass
class _Files:
    pagemap: Pagemap  # held open only as the exit/exec probe: it pins the mm
    clear_fd: int = -1


class ProcSmaps:
    """The real interface: ``/proc/PID/clear_refs``, ``/proc/PID/smaps``."""

    def __init__(self, proc_root: str = "/proc", io: PosixIO | None = None) -> None:
        self.proc_root = proc_root
        self.io = io or PosixIO()
        self._files: dict[ProcessRef, _Files] = {}
        self._zero_pfn: int | None = -1  # -1: not looked up yet

    def _get(self, proc: ProcessRef) -> _Files:
        f = self._files.get(proc)
        if f is None:
            f = self._files[proc] = _Files(open_checked_pagemap(self.io, self.proc_root, proc, DENIED_HINT))
        return f

    def _same(self, f: _Files, proc: ProcessRef) -> None:
        """Prove ``proc`` still runs the image it was matched with: the pinned address space
        is alive and the pid's stat shows the same start time and image (see
        :func:`~exporter.procfs.parsers.image_of`). The pagemap fd alone is not enough: a
        process sharing its address space (``CLONE_VM``) keeps the old one alive after an
        exec."""
        check_same_process(self.io, self.proc_root, proc, DENIED_HINT)
        if not f.pagemap.alive():
            raise ProcessGone(f"process {proc.pid} exited or exec'ed")

    def probe(self, proc: ProcessRef) -> None:
        self._same(self._get(proc), proc)

    def clear(self, proc: ProcessRef) -> None:
        """Write ``1`` to ``clear_refs`` of ``proc``, only while it is the image matched.

        The kernel applies the write to whatever address space the task has at that moment,
        so the order matters: the file is opened first and kept (its fd names this process,
        so a reused pid cannot receive the write), then the image is checked, then written
        through the fd, then checked again. A task never returns to an address space it left,
        so the second check passing proves the write met the matched image; failing, it
        says the process exec'ed within microseconds of the write, which is logged."""
        f = self._get(proc)
        path = f"{mm_dir(self.io, self.proc_root, proc.pid)}/clear_refs"
        try:
            if f.clear_fd < 0:
                f.clear_fd = self.io.open(path, os.O_WRONLY)
        except OSError as e:
            raise ops_error(e, proc.pid, path, DENIED_HINT) from None
        self._same(f, proc)
        try:
            self.io.write(f.clear_fd, b"1")
        except OSError as e:
            raise ops_error(e, proc.pid, path, DENIED_HINT) from None
        try:
            self._same(f, proc)
        except ImageChanged as e:
            log.warning("pid %d exec'ed while its clear_refs was written: the new program's accessed bits may have been cleared (%s)", proc.pid, e)
            raise

    def read(self, proc: ProcessRef) -> list[SmapsEntry]:
        """The smaps entries of ``proc``; checked after the read, so figures of an image that
        replaced the matched one are never handed on (an empty or foreign smaps would read
        as "all idle")."""
        f = self._get(proc)
        path = f"{mm_dir(self.io, self.proc_root, proc.pid)}/smaps"
        try:
            entries = iter_smaps(self.io.read_chunks(path))  # entries kept, not the text
        except OSError as e:
            raise ops_error(e, proc.pid, path, DENIED_HINT) from None
        self._same(f, proc)
        return entries

    def frames(self, proc: ProcessRef, addrs: list[int]) -> list[int] | None:
        """PFNs from the pagemap fd held for ``proc`` (8 bytes per address). Without
        CAP_SYS_ADMIN the kernel reads PFNs as 0 and the zero page cannot be told: None."""
        if self._zero_pfn == -1:
            self._zero_pfn = zero_page_pfn(self.io, self.proc_root)
        return frames_at(self._get(proc).pagemap, addrs, self._zero_pfn)

    def maps_text(self, proc: ProcessRef) -> bytes | None:
        return read_maps(self.io, self.proc_root, proc.pid, DENIED_HINT)

    def activity(self, proc: ProcessRef) -> Activity | None:
        return thread_runtimes(self.io, self.proc_root, proc.pid)

    def forget(self, proc: ProcessRef) -> None:
        f = self._files.pop(proc, None)
        if f is None:
            return
        f.pagemap.close()
        if f.clear_fd >= 0:
            try:
                self.io.close(f.clear_fd)
            except OSError:
                pass

    def close(self) -> None:
        for ref in list(self._files):
            self.forget(ref)
