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
from typing import Sequence

from exporter.model.attrs import PAGE_SIZE
from exporter.model.errors import OpsError, ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.io import PosixIO, ops_error, u64s
from exporter.procfs.parsers import check_same_process, mm_dir

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
        self.path = f"{mm_dir(io, proc_root, pid)}/pagemap"
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


def present_marks(buf: bytes) -> bytes:
    """One byte per entry of a raw pagemap buffer: 1 where the page is present, else 0.
    Counting and finding the 1s of the result (``count``, ``find``, a regex) runs at C
    speed, which is what lets a window scan a region's pagemap in a few milliseconds."""
    return buf[_TOP_BYTE::8].translate(_TOP_BIT)


def frames_at(pm: Pagemap, addrs: Sequence[int], zero_pfn: int | None) -> list[int] | None:
    """The PFN at each address of ``pm``'s process, 0 where no page is present or only the
    shared zero page is (it is every process' page and no one's memory): one 8-byte read
    per address, for telling shared memory by frame (exporter/engines/identity.py). None
    where the zero page's frame is not known (no CAP_SYS_ADMIN: every PFN reads 0)."""
    if zero_pfn is None:
        return None
    out = []
    for a in addrs:
        entry = pm.entries(a >> PAGE_SHIFT, 1)[0]
        pfn = entry & PM_PFN_MASK if entry & PM_PRESENT else 0
        out.append(0 if pfn == zero_pfn else pfn)
    return out


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


#: shared pages whose mapping count is read per range (one 8-byte kpagecount pread each):
#: their mean 1/mapcount stands for every shared page of the range
SHARED_SAMPLE = 32

#: byte -> 1 if it is the top byte of a present entry that is not exclusively mapped
#: (bit 63 set, bit 56 clear): a page other mappings may share, or the zero page
_SHARED_BIT = bytes(1 if b & 0x81 == 0x80 else 0 for b in range(256))


@dataclass(frozen=True, slots=True)
class Residency:
    """Resident memory of one range, each page counted by its share (as PSS counts it).

    ``bytes``: a page mapped by ``n`` page tables counts ``PAGE_SIZE / n`` (an exclusively
    mapped page all of it, the shared zero page nothing). ``shared``: the part of ``bytes``
    in pages that other mappings also map (their other owners may be this target's
    processes, where the summary counts the page once, or anyone else's).
    """

    bytes: int
    shared: int = 0


class PageCounts:
    """``/proc/kpagecount``: how many page tables map each page frame (root only).

    The fd is opened once and kept; PFNs come from pagemap, which shows them only to
    CAP_SYS_ADMIN, the same privilege. ``None`` where it cannot be read: every shared page
    then counts whole (as RSS does) and the records say so through ``shared``.
    """

    def __init__(self, io: PosixIO, proc_root: str) -> None:
        self.io = io
        self.path = f"{proc_root}/kpagecount"
        self.fd = io.open(self.path, os.O_RDONLY)

    @classmethod
    def open(cls, io: PosixIO, proc_root: str) -> "PageCounts | None":
        try:
            return cls(io, proc_root)
        except OSError:
            return None

    def count(self, pfn: int) -> int:
        try:
            data = self.io.pread(self.fd, 8, pfn * 8)
        except OSError as e:
            raise OpsError(f"cannot read {self.path}: {e.strerror or e}") from None
        return struct.unpack("=Q", data)[0] if len(data) == 8 else 0

    def close(self) -> None:
        try:
            self.io.close(self.fd)
        except OSError:
            pass


#: entries counted per step when finding the k-th mark (one C-speed count per block)
_MARK_BLOCK = 64


def nth_marks(marks: bytes, ranks: list[int]) -> list[int]:
    """The positions of the 1-bytes of ``marks`` with the given ranks (0: the first),
    in the order of ``ranks``: blocks of :data:`_MARK_BLOCK` are counted at C speed, and
    only a block holding a rank is walked (not even that where every byte of it is 1)."""
    want = sorted(set(ranks))
    found: dict[int, int] = {}
    it = iter(want)
    r = next(it, None)
    base = 0
    for at in range(0, len(marks), _MARK_BLOCK):
        if r is None:
            break
        block = marks[at:at + _MARK_BLOCK]
        c = block.count(1)
        if r < base + c:
            if c == len(block):  # all marked: the rank is the offset
                while r is not None and r < base + c:
                    found[r] = at + r - base
                    r = next(it, None)
            else:
                pos, k = -1, base - 1
                while r is not None and r < base + c:
                    while k < r:
                        pos = block.find(1, pos + 1)
                        k += 1
                    found[r] = at + pos
                    r = next(it, None)
        base += c
    return [found[x] for x in ranks]


def tally(buf: bytes, rng: random.Random, zero_pfn: int | None, counts: PageCounts | None,
          sample: int = SHARED_SAMPLE) -> tuple[float, float]:
    """(pages, shared pages) of a raw pagemap buffer, each page by its share: present
    exclusive pages count 1 at C speed; the others (shared, or the zero page) are counted
    at C speed too and weighed by the mean share of at most ``sample`` of them, drawn
    alike among them (the zero page weighs 0: nobody's memory). Drawn by rank, not as the
    first one after a random place: that favours pages after long gaps, and where their
    number of mappers differs from the others' (a server's shared buffers), the mean was
    off by half in simulation."""
    top = buf[_TOP_BYTE::8]
    present = top.translate(_TOP_BIT).count(1)
    marks = top.translate(_SHARED_BIT)
    shared = marks.count(1)
    if not shared:
        return float(present), 0.0
    weight = 0.0
    picks = max(1, min(sample, shared))
    for i in nth_marks(marks, [rng.randrange(shared) for _ in range(picks)]):
        (e,) = struct.unpack_from("=Q", buf, i * 8)
        pfn = e & PM_PFN_MASK
        if zero_pfn and pfn == zero_pfn:
            continue
        if counts is None or not pfn:
            weight += 1.0
            continue
        c = counts.count(pfn)
        weight += 1.0 / c if c > 0 else 1.0
    shared_pages = shared * weight / picks
    return present - shared + shared_pages, shared_pages


def resident_bytes_pagemap(
    pm: Pagemap, ranges: list[tuple[int, int]], rng: random.Random, zero_pfn: int | None = None,
    exact_pages: int = 0, counts: PageCounts | None = None,
) -> list[Residency]:
    """Resident memory per range from pagemap, each page by its share, at a bounded cost.

    A range of at most :data:`EXACT_PAGES` pages (or ``exact_pages``, where the caller
    prefers one larger read to sixteen syscalls) is read whole with one pread. A larger
    one is cut into :data:`STRATA` equal strata and one run of :data:`RUN_PAGES` consecutive
    entries at a random place in each is read (16 preads of 256 bytes), and the counts are
    scaled to the range size. Cost: at most 16 preads per range, whatever its size, plus at
    most :data:`SHARED_SAMPLE` kpagecount preads where the range has shared pages (none for
    private memory). Error: stratified sampling is exact for a fully resident or fully
    absent range; when residency is made of k contiguous runs, only the strata holding a run
    boundary can be misjudged, so the error is below 2k/16 of the range size in the worst
    case and much smaller on average; scattered single pages give a binomial error with a
    standard deviation near sqrt(p(1-p)/512) of the range size. The shares of shared pages
    are exact where every shared page of the range has the same number of mappers (a fork's
    copy-on-write pages, a buffer every backend maps), else a sample mean.

    Pages mapping ``zero_pfn`` (the shared zero page) are not resident memory of the
    process: like the kernel's RSS, they are not counted.
    """

    exact_pages = max(exact_pages, EXACT_PAGES)
    out: list[Residency] = []
    for start, end in ranges:
        first = start >> PAGE_SHIFT
        n = (end - start) >> PAGE_SHIFT
        if n <= 0:
            out.append(Residency(0))
            continue
        if n <= exact_pages:
            pages, shared = tally(pm.raw(first, n), rng, zero_pfn, counts)
            out.append(Residency(int(round(pages)) * PAGE_SIZE, int(round(shared)) * PAGE_SIZE))
            continue
        total = shared_total = 0.0
        for k in range(STRATA):
            s_lo = first + n * k // STRATA
            s_hi = first + n * (k + 1) // STRATA
            width = s_hi - s_lo
            run = min(RUN_PAGES, width)
            at = s_lo + rng.randrange(width - run + 1)
            pages, shared = tally(pm.raw(at, run), rng, zero_pfn, counts, SHARED_SAMPLE // STRATA)
            total += pages / run * width
            shared_total += shared / run * width
        out.append(Residency(int(round(total)) * PAGE_SIZE, int(round(shared_total)) * PAGE_SIZE))
    return out
