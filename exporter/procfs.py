"""The one reader of /proc: every backend, discovery and the CLI read process files here.

Everything here is about *decoding* kernel files cheaply, and about turning ``OSError`` into
the backend errors of :mod:`exporter.ops.base`. What only page_idle reads (kpageflags, the
zero page) lives beside it, in :mod:`exporter.ops.kpageflags`. The root paths are parameters so that tests
can point a backend at a fake tree under a temp dir, and every syscall goes through a small
:class:`PosixIO` object so that tests can substitute one that emulates kernel semantics a
plain file cannot (the page_idle bitmap, a pagemap fd whose process has exited).

Kernel facts used here (Documentation/admin-guide/mm/pagemap.rst, fs/proc/task_mmu.c,
fs/proc/page.c, include/uapi/linux/kernel-page-flags.h):

- ``/proc/PID/pagemap`` has one native-endian u64 per virtual page at offset
  ``vaddr // PAGE_SIZE * 8``: bits 0-54 PFN (zeroed since 4.2 unless the opener has
  CAP_SYS_ADMIN), 55 soft-dirty, 56 exclusively mapped, 57 uffd-wp, 58 guard region,
  61 file page or shared anon, 62 swapped, 63 present. The fd pins the ``mm`` it was opened
  on: after the process exits *or exec's*, a read returns 0 bytes. That is our cheap,
  race-free "is this still the address space we watch" probe.
- ``/proc/PID/stat`` field 22 is the start time in clock ticks since boot; field 2 (comm) is
  in parentheses and may itself contain spaces and parentheses, so we split after the
  *last* ``)``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import sys
import re
import random
from array import array
from dataclasses import dataclass

from exporter.core.attrs import PAGE_SIZE
from exporter.ops.base import AccessDenied, OpsError, ProcessGone, ProcessRef

PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

#: user space ends here on x86-64 (4-level paging; 5-level still starts mmap below it)
USER_ADDR_LIMIT = 0x800000000000

# pagemap entry bits
PM_PFN_MASK = (1 << 55) - 1
PM_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_SWAPPED = 1 << 62
PM_PRESENT = 1 << 63

_NATIVE_U64 = "Q"
assert array(_NATIVE_U64).itemsize == 8


def u64s(buf: bytes) -> array:
    """Native-endian u64 values of a kernel buffer (pagemap, kpageflags, bitmap words)."""
    a = array(_NATIVE_U64)
    a.frombytes(buf[: len(buf) - len(buf) % 8])
    return a


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


# -- syscalls --------------------------------------------------------------------------------


class PosixIO:
    """The handful of syscalls the backends make. Tests substitute a subclass that emulates
    kernel semantics for some paths; production uses this one as is."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read_file(self, path: str) -> bytes:
        """Whole file in one go: /proc files are generated per read() call, so we read with a
        large buffer until EOF rather than line by line."""
        fd = self.open(path, os.O_RDONLY)
        try:
            chunks = []
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)


# -- errors ----------------------------------------------------------------------------------

_GONE_ERRNOS = {errno.ENOENT, errno.ESRCH}
_DENIED_ERRNOS = {errno.EACCES, errno.EPERM}


def ops_error(e: OSError, pid: int, path: str, denied_hint: str) -> OpsError:
    """The backend error for an OSError met while reading ``path`` of process ``pid``.

    ENOENT/ESRCH: the process is gone. EACCES/EPERM: ``denied_hint`` names the privilege.
    Anything else is an I/O error with the path and the kernel's words.
    """
    if e.errno in _GONE_ERRNOS:
        return ProcessGone(f"process {pid} exited")
    if e.errno in _DENIED_ERRNOS:
        return AccessDenied(f"cannot access {path}: {os.strerror(e.errno)}; {denied_hint}")
    return OpsError(f"cannot read {path}: {e.strerror or e}")


# -- /proc/PID/stat --------------------------------------------------------------------------


@dataclass(frozen=True)
class StatInfo:
    comm: str
    state: str
    start_time: int  # field 22, clock ticks after boot: (pid, start_time) names one process
    ppid: int = 0
    flags: int = 0  # PF_* (PF_KTHREAD marks kernel threads)


def parse_stat(data: bytes) -> StatInfo:
    """Parse /proc/PID/stat. comm (field 2) may contain spaces and ')' so we cut at the last
    ')'; after the cut, field N is at index N - 3 (state 3, ppid 4, flags 9, start time 22).
    Shared by the backends and by target discovery."""
    lpar = data.find(b"(")
    rpar = data.rfind(b")")
    if lpar < 0 or rpar < lpar:
        raise ValueError(f"malformed stat line: {data[:80]!r}")
    rest = data[rpar + 1 :].split()
    if len(rest) < 20:
        raise ValueError(f"stat line has {len(rest) + 2} fields, expected at least 22")
    return StatInfo(
        comm=data[lpar + 1 : rpar].decode(errors="replace"),
        state=rest[0].decode(errors="replace"),
        start_time=int(rest[19]),
        ppid=int(rest[1]),
        flags=int(rest[6]),
    )


def read_stat(io: PosixIO, proc_root: str, pid: int, denied_hint: str) -> StatInfo:
    path = f"{proc_root}/{pid}/stat"
    try:
        data = io.read_file(path)
    except OSError as e:
        raise ops_error(e, pid, path, denied_hint) from None
    if not data:
        raise ProcessGone(f"process {pid} exited")
    try:
        return parse_stat(data)
    except ValueError as e:
        raise OpsError(f"{path}: {e}") from None


def check_same_process(io: PosixIO, proc_root: str, proc: ProcessRef, denied_hint: str) -> StatInfo:
    """Raise ProcessGone if ``proc`` exited, is a zombie, or its pid now names another
    process (start time differs; only checked when the ref carries one)."""
    st = read_stat(io, proc_root, proc.pid, denied_hint)
    if st.state in ("Z", "X", "x"):
        raise ProcessGone(f"process {proc.pid} exited")
    if proc.start_time and st.start_time != proc.start_time:
        raise ProcessGone(f"process {proc.pid} exited (pid reused)")
    return st


# -- /proc/PID/maps --------------------------------------------------------------------------

# start-end perms: the rest of the line is skipped by the regex engine's line anchor
_MAPS_RE = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) (....)", re.M)


def parse_maps(data: bytes, *, skip_prot_none: bool = False) -> list[tuple[int, int]]:
    """User mappings of a /proc/PID/maps text as sorted (start, end) pairs, in one pass.

    Drops ``[vsyscall]`` and anything at or above :data:`USER_ADDR_LIMIT` (kernel-owned).
    ``skip_prot_none`` also drops ``---p``/``---s`` mappings (guard pages, reserved address
    space): nothing can access them. The kernel emits VMAs in address order, so we only sort
    when that is not so (a fake file).
    """
    out: list[tuple[int, int]] = []
    last = -1
    ordered = True
    limit = USER_ADDR_LIMIT
    for m in _MAPS_RE.finditer(data):
        start = int(m[1], 16)
        if start >= limit:
            continue
        if skip_prot_none and m[3][:3] == b"---":
            continue
        end = int(m[2], 16)
        if start < last:
            ordered = False
        last = start
        out.append((start, end))
    if not ordered:
        out.sort()
    return out


def read_maps(io: PosixIO, proc_root: str, pid: int, denied_hint: str) -> bytes:
    path = f"{proc_root}/{pid}/maps"
    try:
        return io.read_file(path)
    except OSError as e:
        raise ops_error(e, pid, path, denied_hint) from None


# -- /proc/PID/smaps -------------------------------------------------------------------------

_SMAPS_RE = re.compile(
    rb"^([0-9a-f]+)-([0-9a-f]+) |^Rss:\s+(\d+) kB|^Referenced:\s+(\d+) kB|^Anonymous:\s+(\d+) kB", re.M
)


@dataclass(frozen=True, slots=True)
class SmapsEntry:
    start: int
    end: int
    rss: int  # bytes
    referenced: int  # bytes
    anonymous: int = 0  # bytes (private to the process: no one else's flags reach them)


def parse_smaps(data: bytes) -> list[SmapsEntry]:
    """(start, end, Rss, Referenced, Anonymous) of each user mapping, sorted, bytes; one
    regex pass touching only the header and those three lines."""
    out: list[SmapsEntry] = []
    start = end = rss = ref = anon = -1
    limit = USER_ADDR_LIMIT
    for s, e, r, f, a in _SMAPS_RE.findall(data):
        if s:
            if start >= 0 and start < limit:
                out.append(SmapsEntry(start, end, max(rss, 0) * 1024, max(ref, 0) * 1024, max(anon, 0) * 1024))
            start, end, rss, ref, anon = int(s, 16), int(e, 16), -1, -1, -1
        elif r:
            rss = int(r)
        elif f:
            ref = int(f)
        else:
            anon = int(a)
    if start >= 0 and start < limit:
        out.append(SmapsEntry(start, end, max(rss, 0) * 1024, max(ref, 0) * 1024, max(anon, 0) * 1024))
    if any(out[i].start < out[i - 1].start for i in range(1, len(out))):
        out.sort(key=lambda x: x.start)
    return out


# -- capabilities ----------------------------------------------------------------------------

CAP_SYS_ADMIN = 21
CAP_SYS_PTRACE = 19


def effective_caps(io: PosixIO, proc_root: str) -> int | None:
    """CapEff of this process (from ``{proc_root}/self/status``), None if unreadable."""
    try:
        data = io.read_file(f"{proc_root}/self/status")
    except OSError:
        return None
    m = re.search(rb"^CapEff:\s*([0-9a-fA-F]+)", data, re.M)
    return int(m[1], 16) if m else None


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


# -- the process list (discovery) -------------------------------------------------------------
#
# Processes come and go while we read; every read tolerates the process vanishing (it is
# simply left out) and a refused ``exe`` link (matching by exe then fails, comm and cmdline
# still work). Kernel threads and zombies are skipped: they have no user memory to sample.

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
