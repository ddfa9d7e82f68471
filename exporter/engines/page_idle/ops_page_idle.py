"""The page_idle backend: per-page access checks through idle page tracking.

This is the user-space twin of the kernel's ``vaddr`` operations: for each sampled address
we find the physical page (``/proc/PID/pagemap``), set its Idle flag
(``/sys/kernel/mm/page_idle/bitmap``), and one sample interval later read the flag back: the
kernel clears it when the page was accessed through any page table (the bitmap read walks
the rmap and tests the PTE accessed bits) or through read(2). Unlike clear_refs it does not
disturb reclaim: the kernel keeps a separate Young flag so the LRU still sees the access.

Needs ``CONFIG_IDLE_PAGE_TRACKING`` (Debian's kernels lack it) and root: writing the bitmap
needs write access to a 0600 root file, and without CAP_SYS_ADMIN the kernel zeroes the PFNs
in pagemap (we detect a present page with PFN 0 and raise AccessDenied rather than read it
as "not present").

Kernel facts relied on (Documentation/admin-guide/mm/idle_page_tracking.rst, mm/page_idle.c):

- the bitmap is read and written in 8-byte words, at offset ``pfn // 64 * 8``, bit
  ``pfn % 64``; unaligned access is EINVAL; a write sets Idle only for the set bits; a read
  past ``max_pfn`` returns 0 bytes; one read or write handles at most 4 KiB.
- only the head page of a folio on an LRU list is handled: tail pages always read "not
  idle" (a THP would look 100% hot), and pages not on an LRU (the zero page, pages being
  migrated, kernel memory) silently refuse the mark. We map tails to heads with
  ``/proc/kpageflags`` (COMPOUND_HEAD/TAIL), and after marking we read the words back: a
  refused page whose kpageflags say "not on an LRU" is discarded (None); one still on an
  LRU was accessed between the write and the read-back and will be reported as a hit,
  which is right.
- the idle flag is shared by everyone using it: kernel DAMON sets and tests the same flag,
  as does any other page_idle user, so those are reported by :meth:`interference`.

Cost per sample and process: one pagemap pread per run of nearby addresses, one kpageflags
pread per address (two for a THP tail, one per 2 MiB when consecutive addresses share the
head), one bitmap pwrite and one pread per run of nearby words; at check time one pagemap
pread and one bitmap pread per run. About 4-6 syscalls per region and sample.
``resident_bytes`` reads pagemap present bits: exact up to 512 pages per range, a stratified
sample of 16 runs of 32 pages (16 preads) above that; the error bound is documented at
:func:`exporter.procfs.resident_bytes_pagemap`.

:meth:`PageIdleOps.interference` reports kernel DAMON running and NUMA balancing; another
page_idle user is *not* detected: finding who holds the bitmap open means reading every
``/proc/*/fd`` link of the machine each update interval (tens of thousands of readlinks on a
busy host), which costs more than the monitoring itself.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import random
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from exporter.engines.page_idle.kpageflags import (
    KPF_COMPOUND_HEAD,
    KPF_COMPOUND_TAIL,
    KPF_LRU,
    PMD_PAGES,
    pack_u64s,
    runs,
)
from exporter.engines.page_idle.operations import CheckResult, Operations
from exporter.model.errors import (
    AccessDenied,
    BackendUnavailable,
    OpsError,
    ProcessGone,
)
from exporter.model.process import ProcessRef
from exporter.procfs.io import CAP_SYS_ADMIN, PosixIO, effective_caps, u64s
from exporter.procfs.pagemap import (
    PAGE_SHIFT,
    PM_EXCLUSIVE,
    PM_PFN_MASK,
    PM_PRESENT,
    PageCounts,
    Pagemap,
    Residency,
    frames_at,
    open_checked_pagemap,
    nth_marks,
    present_marks,
    resident_bytes_pagemap,
    zero_page_pfn,
)
from exporter.procfs.parsers import parse_maps, read_maps

log = logging.getLogger(__name__)

BITMAP = "kernel/mm/page_idle/bitmap"
KPAGEFLAGS = "kpageflags"

DENIED_HINT = "page_idle needs root (CAP_SYS_ADMIN, and CAP_SYS_PTRACE for other users' processes)"

#: addresses whose pagemap entries are at most this many pages apart share one pread
PAGEMAP_GAP = 64
#: PFNs at most this many apart share one kpageflags pread (512 entries = 4 KiB)
KPF_GAP = 511
#: bitmap words at most this many words apart share one pread/pwrite (zero words are no-ops)
WORD_GAP = 8
#: kernfs hands a bin attribute at most one page per read/write call
MAX_IO = 4096
#: pagemap entries a window reads at most per region to find its present pages (512 KiB)
PRESENT_SCAN_PAGES = 65536
#: ... in runs of this many where the region is larger
PRESENT_RUN = 512


def no_pfn_message(pid: int) -> str:
    return (
        f"page_idle needs CAP_SYS_ADMIN to read PFNs from /proc/{pid}/pagemap "
        "(the kernel reports them as 0 without it); run the exporter as root or use the "
        "clear_refs backend"
    )


@dataclass
class _Prepared:
    addrs: tuple[int, ...]
    entries: list[int]  # raw pagemap entries at prepare time
    heads: list[int | None]  # head PFN whose idle bit we check; None = discard the sample


@dataclass(eq=False)
class _Window:
    """Pages marked idle together and read once, a window later (see :meth:`open_window`).
    Compact arrays: a target keeps a dozen windows of a thousand pages open."""

    proc: ProcessRef
    addrs: array
    entries: array  # raw pagemap entries at the mark
    heads: array  # head PFN whose flag is read; -1: not present, or refused the mark
    seq: int  # the window's number: a watched head's hit kept since then is this window's


@dataclass
class _Proc:
    pagemap: Pagemap
    prepared: _Prepared | None = None
    windows: list[_Window] = field(default_factory=list)


class PageIdleOps(Operations):
    name = "page_idle"
    access_per_page = True  # reading the idle bitmap walks every mapping of the page

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        sys_root: str = "/sys",
        io: PosixIO | None = None,
        rng: random.Random | None = None,
        map_tail_to_head: bool = True,
    ) -> None:
        """``map_tail_to_head=False`` checks a large folio's tail pages themselves, as a
        backend unaware of compound pages would; it exists only so the VM tests can show
        that such a backend reads a THP as 100% hot."""
        self.proc_root = proc_root
        self.map_tail_to_head = map_tail_to_head
        self.sys_root = sys_root
        self.io = io or PosixIO()
        self.rng = rng or random.Random()
        self._procs: dict[ProcessRef, _Proc] = {}
        self.bitmap_path = f"{sys_root}/{BITMAP}"
        self.kpageflags_path = f"{proc_root}/{KPAGEFLAGS}"
        self._bitmap_fd = self._open_global(self.bitmap_path, os.O_RDWR)
        try:
            self._kpf_fd = self._open_global(self.kpageflags_path, os.O_RDONLY)
        except OpsError:
            self.io.close(self._bitmap_fd)
            raise
        # last kpageflags block read for a tail lookup: (first pfn, flags)
        self._kpf_block: tuple[int, list[int]] | None = None
        self._zero_pfn = zero_page_pfn(self.io, proc_root)
        # mapping counts of shared pages (root reads it; PFNs need the same privilege)
        self._counts = PageCounts.open(self.io, proc_root)
        # open windows watching each head PFN (a mark of a watched head reads it first), and
        # the number of the last window opened when a read before a mark found it accessed
        self._watched: dict[int, int] = {}
        self._kept: dict[int, int] = {}
        self._seq = 0

    # -- availability ----------------------------------------------------------------------

    @classmethod
    def available(cls, *, proc_root: str = "/proc", sys_root: str = "/sys", io: PosixIO | None = None) -> tuple[bool, str]:
        """Whether this machine and our privileges allow page_idle, and if not, why."""
        io = io or PosixIO()
        bitmap = f"{sys_root}/{BITMAP}"
        if not io.exists(bitmap):
            return False, f"{bitmap} does not exist (kernel built without CONFIG_IDLE_PAGE_TRACKING)"
        try:
            io.close(io.open(bitmap, os.O_RDWR))
        except OSError as e:
            return False, f"cannot open {bitmap} read-write: {os.strerror(e.errno or 0)} (needs root)"
        kpf = f"{proc_root}/{KPAGEFLAGS}"
        try:
            io.close(io.open(kpf, os.O_RDONLY))
        except OSError as e:
            return False, f"cannot open {kpf}: {os.strerror(e.errno or 0)} (needs root)"
        caps = effective_caps(io, proc_root)
        if caps is not None and not caps >> CAP_SYS_ADMIN & 1:
            return False, (
                "page_idle needs CAP_SYS_ADMIN to read PFNs from /proc/PID/pagemap "
                "(the kernel reports them as 0 without it)"
            )
        return True, f"{bitmap} is writable and pagemap gives PFNs"

    def _open_global(self, path: str, flags: int) -> int:
        try:
            return self.io.open(path, flags)
        except FileNotFoundError:
            if path == self.bitmap_path:
                raise BackendUnavailable(
                    f"{path} does not exist (kernel built without CONFIG_IDLE_PAGE_TRACKING)"
                ) from None
            raise BackendUnavailable(f"{path} does not exist (kernel built without CONFIG_PROC_PAGE_MONITOR)") from None
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise AccessDenied(f"cannot open {path}: {os.strerror(e.errno)}; {DENIED_HINT}") from None
            raise OpsError(f"cannot open {path}: {e.strerror or e}") from None

    # -- per process -----------------------------------------------------------------------

    def _proc(self, proc: ProcessRef) -> _Proc:
        p = self._procs.get(proc)
        if p is None:
            p = _Proc(open_checked_pagemap(self.io, self.proc_root, proc, DENIED_HINT))
            self._procs[proc] = p
        return p

    def mappings(self, proc: ProcessRef) -> Iterable[tuple[int, int]]:
        p = self._proc(proc)
        data = read_maps(self.io, self.proc_root, proc.pid, DENIED_HINT)
        if not p.pagemap.alive():
            raise ProcessGone(f"process {proc.pid} exited or exec'ed")
        return parse_maps(data)

    def _entries(self, pm: Pagemap, addrs: Sequence[int]) -> list[int]:
        pages = [a >> PAGE_SHIFT for a in addrs]
        out = [0] * len(pages)
        for first, count, idx in runs(pages, PAGEMAP_GAP):
            ents = pm.entries(first, count)
            for i in idx:
                out[i] = ents[pages[i] - first]
        for e in out:
            if e & PM_PRESENT and not e & PM_PFN_MASK:
                raise AccessDenied(no_pfn_message(pm.pid))
        return out

    # -- kpageflags ------------------------------------------------------------------------

    def _kpf(self, first: int, count: int) -> list[int]:
        try:
            buf = self.io.pread(self._kpf_fd, count * 8, first * 8)
        except OSError as e:
            raise OpsError(f"cannot read {self.kpageflags_path}: {e.strerror or e}") from None
        vals = list(u64s(buf))
        return vals + [0] * (count - len(vals))

    def _heads(self, pfns: list[int]) -> list[int | None]:
        """Head PFN of each page's folio (the page itself when not a tail); None when the
        head is not within the page's 2 MiB-aligned PFN block (gigantic hugetlb folios,
        which page_idle cannot track anyway).

        Folios are naturally aligned, so a tail's head is the nearest COMPOUND_HEAD at or
        below it in its 512-page block: one kpageflags pread per block, shared by every
        sampled tail in it (consecutive samples in one THP cost one read, not one each).
        """
        if not self.map_tail_to_head:
            return list(pfns)
        self._kpf_block = None  # flags read in an earlier sample may be stale (splits, collapses)
        flags = self._flags_of(pfns)
        tails: dict[int, int] = {}  # block base -> highest sampled tail pfn in it
        for pfn, f in zip(pfns, flags):
            if f >> KPF_COMPOUND_TAIL & 1:
                base = pfn & ~(PMD_PAGES - 1)
                tails[base] = max(tails.get(base, pfn), pfn)
        heads: list[int | None] = []
        for pfn, f in zip(pfns, flags):
            if not f >> KPF_COMPOUND_TAIL & 1:
                heads.append(pfn)
                continue
            base = pfn & ~(PMD_PAGES - 1)
            blk = self._kpf_block
            if blk is None or blk[0] != base or base + len(blk[1]) <= pfn:
                blk = self._kpf_block = (base, self._kpf(base, tails[base] - base + 1))
            head = None
            vals = blk[1]
            for q in range(pfn - base, -1, -1):
                if vals[q] >> KPF_COMPOUND_HEAD & 1:
                    head = base + q
                    break
            heads.append(head)
        return heads

    # -- bitmap ----------------------------------------------------------------------------

    def _word_runs(self, words: Iterable[int]) -> list[tuple[int, int]]:
        ws = sorted(set(words))
        out: list[tuple[int, int]] = []
        for w in ws:
            if out and w - (out[-1][0] + out[-1][1] - 1) <= WORD_GAP and (w - out[-1][0] + 1) * 8 <= MAX_IO:
                out[-1] = (out[-1][0], w - out[-1][0] + 1)
            else:
                out.append((w, 1))
        return out

    def _read_words(self, words: Iterable[int]) -> dict[int, int]:
        got: dict[int, int] = {}
        for first, count in self._word_runs(words):
            try:
                buf = self.io.pread(self._bitmap_fd, count * 8, first * 8)
            except OSError as e:
                raise OpsError(f"cannot read {self.bitmap_path}: {e.strerror or e}") from None
            vals = u64s(buf)
            for k in range(count):
                got[first + k] = vals[k] if k < len(vals) else 0
        return got

    def _mark_idle(self, heads: Iterable[int]) -> None:
        """Set the Idle flag of ``heads``. A head an open window watches is read first:
        the mark erases whether it was accessed since the window opened, so the window
        keeps what the read found."""
        heads = list(heads)
        watched = [h for h in heads if h in self._watched]
        if watched:
            words = self._read_words(h >> 6 for h in watched)
            for h in watched:
                if not words[h >> 6] >> (h & 63) & 1:
                    self._kept[h] = self._seq  # every window opened so far sees it
        masks: dict[int, int] = {}
        for h in heads:
            masks[h >> 6] = masks.get(h >> 6, 0) | 1 << (h & 63)
        for first, count in self._word_runs(masks):
            data = pack_u64s([masks.get(first + k, 0) for k in range(count)])
            try:
                self.io.pwrite(self._bitmap_fd, data, first * 8)
            except OSError as e:
                raise OpsError(f"cannot write {self.bitmap_path}: {e.strerror or e}") from None

    # -- the two sampling calls ------------------------------------------------------------

    def prepare_access_checks(self, proc: ProcessRef, addrs: Sequence[int]) -> None:
        p = self._proc(proc)
        p.prepared = None
        entries, heads = self._marked_heads(p, addrs)
        p.prepared = _Prepared(tuple(addrs), entries, heads)

    def _marked_heads(self, p: _Proc, addrs: Sequence[int]) -> tuple[list[int], list[int | None]]:
        """Mark the pages at ``addrs`` idle: their pagemap entries, and the head PFN whose
        flag each one's check reads (None: not present, or refused the mark off an LRU)."""
        entries = self._entries(p.pagemap, addrs)
        present = [i for i, e in enumerate(entries) if e & PM_PRESENT]
        heads: list[int | None] = [None] * len(addrs)
        for i, h in zip(present, self._heads([entries[i] & PM_PFN_MASK for i in present])):
            heads[i] = h
        marked = [h for h in heads if h is not None]
        if marked:
            self._mark_idle(marked)
            words = self._read_words(h >> 6 for h in marked)
            refused = sorted({h for h in marked if not words[h >> 6] >> (h & 63) & 1})
            if refused:
                not_lru = {h for h, f in zip(refused, self._flags_of(refused)) if not f >> KPF_LRU & 1}
                heads = [None if h in not_lru else h for h in heads]
        return entries, heads

    def _flags_of(self, pfns: list[int]) -> list[int]:
        out = [0] * len(pfns)
        for first, count, idx in runs(pfns, KPF_GAP):
            vals = self._kpf(first, count)
            for i in idx:
                out[i] = vals[pfns[i] - first]
        return out

    def check_accesses(self, proc: ProcessRef, addrs: Sequence[int]) -> list[CheckResult]:
        p = self._proc(proc)
        prep = p.prepared
        p.prepared = None
        now = self._entries(p.pagemap, addrs)
        if prep is None or prep.addrs != tuple(addrs):
            return [None] * len(addrs)
        out: list[CheckResult] = [None] * len(addrs)
        to_read: list[tuple[int, int]] = []
        for i, (e0, e1, h) in enumerate(zip(prep.entries, now, prep.heads)):
            if not e1 & PM_PRESENT:
                continue  # not resident now: cannot tell
            if not e0 & PM_PRESENT:
                out[i] = True  # faulted in since prepare: accessed
            elif (e0 ^ e1) & PM_PFN_MASK:
                continue  # migrated or swapped out and in: the flag we set is gone
            elif h is not None:
                to_read.append((i, h))
        if to_read:
            words = self._read_words(h >> 6 for _, h in to_read)
            for i, h in to_read:
                out[i] = not words[h >> 6] >> (h & 63) & 1
        return out

    # -- page windows ----------------------------------------------------------------------

    page_windows = True
    draws_present = True

    def open_window(self, proc: ProcessRef, addrs: Sequence[int]) -> object:
        """Marks the pages as a sample does; the window then watches their heads, so a later
        mark of one (this monitor's samples, another window) reads it first. Accesses
        between the mark and the read-back are hits, as for samples."""
        p = self._proc(proc)
        entries, heads = self._marked_heads(p, addrs)
        self._seq += 1
        w = _Window(proc, array("Q", addrs), array("Q", entries), array("q", (-1 if h is None else h for h in heads)),
                    self._seq)
        for h in set(w.heads):
            if h >= 0:
                self._watched[h] = self._watched.get(h, 0) + 1
        p.windows.append(w)
        return w

    def present_pages(self, proc: ProcessRef, start: int, end: int, n: int,
                      rng: random.Random) -> tuple[list[int], float] | None:
        """Reads the range's pagemap (its present bits, at C speed) and draws ``n`` of the
        present pages alike. A range above :data:`PRESENT_SCAN_PAGES` is read in
        :data:`PRESENT_SCAN_PAGES` / :data:`PRESENT_RUN` runs at random places (the present
        pages of those runs stand for the range: a page's chance then depends a little on
        how full its run is)."""
        p = self._proc(proc)
        first, pages = start >> PAGE_SHIFT, (end - start) >> PAGE_SHIFT
        if pages <= PRESENT_SCAN_PAGES:
            runs_at = [(first, pages)]
        else:
            nruns = pages // PRESENT_RUN
            runs_at = [(first + i * PRESENT_RUN, PRESENT_RUN)
                       for i in sorted(rng.sample(range(nruns), PRESENT_SCAN_PAGES // PRESENT_RUN))]
        found: list[tuple[int, bytes, int]] = []  # (first page, 1 byte per page: 1 present, how many)
        total = 0
        for at, count in runs_at:
            tops = present_marks(p.pagemap.raw(at, count))
            c = tops.count(1)
            if c:
                found.append((at, tops, c))
                total += c
        scale = pages / sum(count for _, count in runs_at)
        if total == 0:
            return [], 0.0
        picked = sorted(rng.sample(range(total), min(n, total)))
        out: list[int] = []
        base = 0
        it = iter(picked)
        rank = next(it, None)
        for at, tops, c in found:
            if rank is None:
                break
            mine = []
            while rank is not None and rank < base + c:
                mine.append(rank - base)
                rank = next(it, None)
            out += [(at + i) << PAGE_SHIFT for i in nth_marks(tops, mine)]
            base += c
        return out, total * scale

    def read_window(self, handle: object) -> list[tuple[CheckResult, float]]:
        w = handle
        assert isinstance(w, _Window)
        p = self._proc(w.proc)
        now = self._entries(p.pagemap, w.addrs)
        out: list[tuple[CheckResult, float]] = [(None, 0.0)] * len(w.addrs)
        to_read: list[tuple[int, int]] = []
        for i, (e0, e1, h) in enumerate(zip(w.entries, now, w.heads)):
            if not e1 & PM_PRESENT:
                continue
            if not e0 & PM_PRESENT:
                out[i] = (True, self._share(e1))  # faulted in since the mark: accessed
            elif (e0 ^ e1) & PM_PFN_MASK or h < 0:
                continue  # another page now, or the mark was refused: cannot tell
            else:
                to_read.append((i, h))
        if to_read:
            words = self._read_words(h >> 6 for _, h in to_read)
            for i, h in to_read:
                kept = self._kept.get(h, -1) >= w.seq
                out[i] = (kept or not words[h >> 6] >> (h & 63) & 1, self._share(now[i]))
        return out

    def _share(self, entry: int) -> float:
        """A present page's share (PSS's ``1 / mappers``): 1 where pagemap says it is
        mapped once, 0 for the zero page (nobody's memory)."""
        pfn = entry & PM_PFN_MASK
        if pfn == self._zero_pfn:
            return 0.0
        if entry & PM_EXCLUSIVE or self._counts is None:
            return 1.0
        return 1.0 / max(1, self._counts.count(pfn))

    def close_window(self, handle: object) -> None:
        w = handle
        assert isinstance(w, _Window)
        for h in set(w.heads):
            n = self._watched.get(h, 0) - 1
            if n > 0:
                self._watched[h] = n
            elif h >= 0:
                self._watched.pop(h, None)
                self._kept.pop(h, None)
        p = self._procs.get(w.proc)
        if p is not None and w in p.windows:
            p.windows.remove(w)

    def resident_bytes(self, proc: ProcessRef, ranges: Sequence[tuple[int, int]]) -> list[Residency]:
        p = self._proc(proc)
        return resident_bytes_pagemap(p.pagemap, list(ranges), self.rng, self._zero_pfn, counts=self._counts)

    def frames(self, proc: ProcessRef, addrs: Sequence[int]) -> list[int] | None:
        return frames_at(self._proc(proc).pagemap, addrs, self._zero_pfn)

    def maps_text(self, proc: ProcessRef) -> bytes | None:
        return read_maps(self.io, self.proc_root, proc.pid, DENIED_HINT)

    def forget(self, proc: ProcessRef) -> None:
        p = self._procs.get(proc)
        if p is not None:
            for w in list(p.windows):
                self.close_window(w)
            del self._procs[proc]
            p.pagemap.close()

    def close(self) -> None:
        for ref in list(self._procs):
            self.forget(ref)
        for fd in (self._bitmap_fd, self._kpf_fd):
            if fd >= 0:
                try:
                    self.io.close(fd)
                except OSError:
                    pass
        self._bitmap_fd = self._kpf_fd = -1
        if self._counts is not None:
            self._counts.close()
            self._counts = None

    # -- interference ----------------------------------------------------------------------

    def interference(self) -> list[str]:
        return kernel_interference(self.io, self.proc_root, self.sys_root)


def kernel_interference(io: PosixIO, proc_root: str, sys_root: str) -> list[str]:
    """Read-only checks for kernel features that share or disturb the page idle flags."""
    out: list[str] = []
    on = []
    for state in sorted(glob.glob(f"{sys_root}/kernel/mm/damon/admin/kdamonds/*/state")):
        try:
            if io.read_file(state).strip() == b"on":
                on.append(os.path.basename(os.path.dirname(state)))
        except OSError:
            continue
    if on:
        out.append(
            f"kernel DAMON is running (kdamond {', '.join(on)}): it sets and tests the same page "
            "idle flags, so access checks of pages it also monitors are unreliable"
        )
    path = f"{proc_root}/sys/kernel/numa_balancing"
    try:
        value = io.read_file(path).strip()
    except OSError:
        value = b"0"
    if value not in (b"", b"0"):
        out.append(
            f"NUMA balancing is enabled ({path} = {value.decode(errors='replace')}): page "
            "migrations change PFNs, which discards those samples"
        )
    return out
