"""``/proc/PID/pagemap``: the per-process handle, entry bits, and residency from present bits.

``/proc/PID/pagemap`` has one native-endian u64 per virtual page at offset
``vaddr // PAGE_SIZE * 8``: bits 0-54 PFN (zeroed since 4.2 unless the opener has
CAP_SYS_ADMIN), 55 soft-dirty, 56 exclusively mapped, 57 uffd-wp, 58 guard region,
61 file page or shared anon, 62 swapped, 63 present (Documentation/admin-guide/mm/pagemap.rst).
The fd pins the ``mm`` it was opened on: after the process exits *or exec's*, a read returns
0 bytes. That is our cheap, race-free "is this still the address space we watch" probe.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import struct
import sys
from array import array
from dataclasses import dataclass

from exporter.model.attrs import PAGE_SIZE
from exporter.model.errors import OpsError, ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.io import PosixIO, ops_error, u64s
from exporter.procfs.parsers import check_same_process

PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

# pagemap entry bits
PM_PFN_MASK = (1 << 55) - 1
PM_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_SWAPPED = 1 << 62
PM_PRESENT = 1 << 63


@dataclass(frozen=True)
class PagemapEntry:
    """One decoded pagemap entry (for tests and debugging; hot paths use the raw int)."""

    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw & PM_PRESENT)

    @property
    def swapped(self) -> bool:
        return bool(self.raw & PM_SWAPPED)

    @property
    def exclusive(self) -> bool:
        return bool(self.raw & PM_EXCLUSIVE)

    @property
    def file_or_shared(self) -> bool:
        return bool(self.raw & PM_FILE)

    @property
    def pfn(self) -> int:
        """The PFN of a present page (0 when the reader lacks CAP_SYS_ADMIN)."""
        return self.raw & PM_PFN_MASK if self.present else 0


# -- the per-process pagemap handle ----------------------------------------------------------


class Pagemap:
    """An fd on /proc/PID/pagemap, kept open for the life of the monitoring.

    Keeping it open is cheaper than reopening, and it is what detects exec: the fd pins the
    old ``mm``, whose reads return 0 bytes once the process exec'ed or exited.
    """

    def __init__(self, io: PosixIO, proc_root: str, pid: int, denied_hint: str) -> None:
        self.io = io
        self.pid = pid
        self.path = f"{proc_root}/{pid}/pagemap"
        self.denied_hint = denied_hint
        try:
            self.fd = io.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise ops_error(e, pid, self.path, denied_hint) from None

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.io.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def _pread(self, size: int, offset: int) -> bytes:
        try:
            return self.io.pread(self.fd, size, offset)
        except OSError as e:
            raise ops_error(e, self.pid, self.path, self.denied_hint) from None

    def alive(self) -> bool:
        """Whether the address space this fd was opened on still exists (8-byte probe)."""
        return len(self._pread(8, 0)) == 8

    def raw(self, first_page: int, count: int) -> bytes:
        """``count`` raw entries (8 bytes each) from virtual page ``first_page``. A short read
        means the process exited or exec'ed (ProcessGone), unless the range runs past the end
        of the user address space, where the kernel stops early: those entries read as 0."""
        buf = self._pread(count * 8, first_page * 8)
        if len(buf) < count * 8:
            if not buf and not self.alive():
                raise ProcessGone(f"process {self.pid} exited or exec'ed")
            buf = buf + bytes(count * 8 - len(buf))
        return buf

    def entries(self, first_page: int, count: int) -> array:
        """``count`` entries from virtual page ``first_page`` as u64 values (see :meth:`raw`)."""
        return u64s(self.raw(first_page, count))


def open_checked_pagemap(io: PosixIO, proc_root: str, proc: ProcessRef, denied_hint: str) -> Pagemap:
    """Open ``proc``'s pagemap, making sure it is the process the ref names: the start time
    is checked after the open, so a pid reused before the open cannot slip through; after
    the open the fd itself pins the address space."""
    check_same_process(io, proc_root, proc, denied_hint)
    pm = Pagemap(io, proc_root, proc.pid, denied_hint)
    try:
        check_same_process(io, proc_root, proc, denied_hint)
    except OpsError:
        pm.close()
        raise
    return pm


#: ranges up to this many pages are counted exactly (one pread of at most 4 KiB)
EXACT_PAGES = 512
#: larger ranges: this many strata, one run of RUN_PAGES entries read in each
STRATA = 16
RUN_PAGES = 32


#: byte -> 1 if its top bit is set: the top byte of a pagemap entry holds PM_PRESENT (bit 63)
_TOP_BIT = bytes(1 if b & 0x80 else 0 for b in range(256))
_TOP_BYTE = 7 if sys.byteorder == "little" else 0


def count_resident(buf: bytes, zero_pfn: int | None = None) -> int:
    """Present entries of a raw pagemap buffer, the shared zero page excepted, at C speed
    (a Python loop over 16k entries costs milliseconds): the present bits are counted on
    the entries' top bytes; only a buffer that may map the zero page (its PFN's low bytes
    occur in it) is checked entry by entry."""
    present = buf[_TOP_BYTE::8].translate(_TOP_BIT).count(1)
    if zero_pfn and present:
        low = zero_pfn.to_bytes(8, sys.byteorder)
        if buf.find(low[:4] if sys.byteorder == "little" else low[4:]) >= 0:
            return sum(1 for e in u64s(buf) if e & PM_PRESENT and (e & PM_PFN_MASK) != zero_pfn)
    return present


def zero_page_pfn(io: PosixIO, proc_root: str) -> int | None:
    """PFN of the shared zero page, found by reading our own memory.

    Private anonymous memory that has only been read maps the zero page, which pagemap
    reports as present although the kernel counts it in nobody's RSS. None when it cannot be
    learned (no PFNs without CAP_SYS_ADMIN, a fake /proc in tests).
    """
    m = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m[0]  # a read fault: maps the zero page
        view = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(view)
        del view  # release the export, or the mmap cannot be closed
        fd = io.open(f"{proc_root}/self/pagemap", os.O_RDONLY)
        try:
            data = io.pread(fd, 8, (addr >> PAGE_SHIFT) * 8)
        finally:
            io.close(fd)
    except (OSError, ValueError):
        return None
    finally:
        m.close()
    if len(data) != 8:
        return None
    (entry,) = struct.unpack("<Q", data)
    pfn = entry & PM_PFN_MASK
    return pfn if entry & PM_PRESENT and pfn else None


def resident_bytes_pagemap(
    pm: Pagemap, ranges: list[tuple[int, int]], rng: random.Random, zero_pfn: int | None = None,
    exact_pages: int = 0,
) -> list[int]:
    """Resident bytes per range from pagemap present bits, at a bounded cost per range.

    A range of at most :data:`EXACT_PAGES` pages (or ``exact_pages``, where the caller
    prefers one larger read to sixteen syscalls) is counted exactly with one pread. A larger
    one is cut into :data:`STRATA` equal strata and one run of :data:`RUN_PAGES` consecutive
    entries at a random place in each is read (16 preads of 256 bytes), and the present
    fraction is scaled to the range size. Cost: at most 16 preads per range, whatever its size.
    Error: stratified sampling is exact for a fully resident or fully absent range; when
    residency is made of k contiguous runs, only the strata holding a run boundary can be
    misjudged, so the error is below 2k/16 of the range size in the worst case and much
    smaller on average (each boundary stratum errs by a uniformly random fraction); scattered
    single pages give a binomial error with a standard deviation near
    sqrt(p(1-p)/512) of the range size.

    Pages mapping ``zero_pfn`` (the shared zero page) are not resident memory of the
    process: like the kernel's RSS, they are not counted.
    """

    exact_pages = max(exact_pages, EXACT_PAGES)
    out: list[int] = []
    for start, end in ranges:
        first = start >> PAGE_SHIFT
        n = (end - start) >> PAGE_SHIFT
        if n <= 0:
            out.append(0)
            continue
        if n <= exact_pages:
            out.append(count_resident(pm.raw(first, n), zero_pfn) * PAGE_SIZE)
            continue
        total = 0.0
        for k in range(STRATA):
            s_lo = first + n * k // STRATA
            s_hi = first + n * (k + 1) // STRATA
            width = s_hi - s_lo
            run = min(RUN_PAGES, width)
            at = s_lo + rng.randrange(width - run + 1)
            total += count_resident(pm.raw(at, run), zero_pfn) / run * width
        out.append(int(round(total)) * PAGE_SIZE)
    return out
