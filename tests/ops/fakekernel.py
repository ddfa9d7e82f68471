"""A fake /proc + /sys tree whose page_idle semantics are emulated like the kernel's.

The tree is real files under a temp dir (``proc/PID/{maps,stat,pagemap}``,
``proc/kpageflags``, ``proc/self/status``, ``sys/kernel/mm/page_idle/bitmap``), written from
an in-memory model of pages and page tables. What a plain file cannot do is done by
:class:`FakeKernelIO`, the substitute of :class:`exporter.procfs.PosixIO`:

- the bitmap: a write sets Idle on the head pages of LRU folios for the set bits only
  (after clearing their accessed bits, like ``page_idle_clear_pte_refs``); a read reports
  Idle for LRU head pages whose Idle flag survives an accessed-bit check; tail pages and
  non-LRU pages always read 0; unaligned access is EINVAL; at most 4 KiB per call;
- a pagemap fd pins the address space it was opened on: after exit or exec it reads 0 bytes;
- without CAP_SYS_ADMIN pagemap reads report PFN 0 for present pages.
"""

from __future__ import annotations

import errno
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from exporter.engines.page_idle.kpageflags import KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_LRU, KPF_THP
from exporter.procfs.pagemap import PAGE_SHIFT, PM_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAPPED
from exporter.procfs.io import PosixIO

PAGE = 4096


@dataclass
class FakePage:
    lru: bool = True
    idle: bool = False
    young: bool = False  # some PTE mapping it has the accessed bit set
    head: int | None = None  # head pfn when this is a tail page
    compound_head: bool = False
    thp: bool = False


@dataclass
class FakeProc:
    pid: int
    start_time: int
    maps: list[tuple[int, int, str]]
    ptes: dict[int, int] = field(default_factory=dict)  # vpn -> pfn
    swapped: set[int] = field(default_factory=set)
    generation: int = 0  # bumped by exec
    alive: bool = True


class FakeKernel:
    def __init__(self, root: Path, *, max_pfn: int = 1 << 15, cap_sys_admin: bool = True, page_idle: bool = True) -> None:
        self.root = root
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.max_pfn = max_pfn
        self.cap_sys_admin = cap_sys_admin
        self.pages: dict[int, FakePage] = {}
        self.procs: dict[int, FakeProc] = {}
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "sys/kernel").mkdir(parents=True)
        (self.proc / "sys/kernel/numa_balancing").write_text("0\n")
        caps = 0x1FFFFFFFFFF if cap_sys_admin else 0x1FFFFFFFFFF & ~(1 << 21)
        (self.proc / "self/status").write_text(f"Name:\tpython\nCapInh:\t0\nCapEff:\t{caps:016x}\n")
        with open(self.proc / "kpageflags", "wb") as f:
            f.truncate(max_pfn * 8)
        # /proc/kpagecount, and who maps each page: a page mapped once is "exclusive" in pagemap
        with open(self.proc / "kpagecount", "wb") as f:
            f.truncate(max_pfn * 8)
        self.mappers: dict[int, set[tuple[int, int]]] = {}
        if page_idle:
            bm = self.sys / "kernel/mm/page_idle"
            bm.mkdir(parents=True)
            (bm / "bitmap").write_bytes(b"")
            (bm / "bitmap").chmod(0o600)

    @property
    def proc_root(self) -> str:
        return str(self.proc)

    @property
    def sys_root(self) -> str:
        return str(self.sys)

    # -- processes ---------------------------------------------------------------------

    def add_process(self, pid: int, maps: list[tuple[int, int] | tuple[int, int, str]], start_time: int = 4242,
                    comm: str = "fake) (proc x") -> FakeProc:
        full = [(m[0], m[1], m[2] if len(m) > 2 else "rw-p") for m in maps]
        p = self.procs[pid] = FakeProc(pid, start_time, full)
        d = self.proc / str(pid)
        d.mkdir()
        lines = "".join(f"{s:x}-{e:x} {perm} 00000000 00:00 0 \n" for s, e, perm in full)
        (d / "maps").write_text(lines)
        fields = ["S", "1", str(pid), str(pid)] + ["0"] * 15 + [str(start_time)] + ["0"] * 30
        (d / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
        (d / "pagemap").write_bytes(b"")
        return p

    def _write_pte(self, p: FakeProc, vpn: int) -> None:
        if vpn in p.ptes:
            pfn = p.ptes[vpn]
            entry = PM_PRESENT | pfn | (PM_EXCLUSIVE if len(self.mappers.get(pfn, ())) == 1 else 0)
        elif vpn in p.swapped:
            entry = PM_SWAPPED | 0x1234 << 5
        else:
            entry = 0
        with open(self.proc / str(p.pid) / "pagemap", "r+b") as f:
            f.seek(vpn * 8)
            f.write(struct.pack("=Q", entry))

    def _write_flags(self, pfn: int) -> None:
        pg = self.pages.get(pfn)
        flags = 0
        if pg is not None:
            flags |= (pg.lru << KPF_LRU) | (pg.compound_head << KPF_COMPOUND_HEAD)
            flags |= ((pg.head is not None) << KPF_COMPOUND_TAIL) | (pg.thp << KPF_THP)
        with open(self.proc / "kpageflags", "r+b") as f:
            f.seek(pfn * 8)
            f.write(struct.pack("=Q", flags))

    def map(self, pid: int, addr: int, pfn: int, *, lru: bool = True) -> None:
        p = self.procs[pid]
        vpn = addr >> PAGE_SHIFT
        if not self.mappers.get(pfn, set()) - {(pid, vpn)}:  # a page nobody else maps: fresh flags
            self.pages[pfn] = FakePage(lru=lru)
            self._write_flags(pfn)
        old = p.ptes.get(vpn)
        if old is not None and old != pfn:
            self.mappers[old].discard((pid, vpn))
            self._recount(old)
        p.ptes[vpn] = pfn
        p.swapped.discard(vpn)
        self.mappers.setdefault(pfn, set()).add((pid, vpn))
        self._recount(pfn)

    def _recount(self, pfn: int) -> None:
        """kpagecount of ``pfn``, and the exclusive bit of every entry mapping it."""
        with open(self.proc / "kpagecount", "r+b") as f:
            f.seek(pfn * 8)
            f.write(struct.pack("=Q", len(self.mappers.get(pfn, ()))))
        for pid, vpn in self.mappers.get(pfn, ()):
            self._write_pte(self.procs[pid], vpn)

    def map_range(self, pid: int, start: int, end: int, first_pfn: int) -> None:
        for i, a in enumerate(range(start, end, PAGE)):
            self.map(pid, a, first_pfn + i)

    def map_thp(self, pid: int, addr: int, head: int) -> None:
        assert addr % (512 * PAGE) == 0 and head % 512 == 0
        p = self.procs[pid]
        for i in range(512):
            self.pages[head + i] = FakePage(lru=True, head=None if i == 0 else head, compound_head=i == 0, thp=True)
            self._write_flags(head + i)
            p.ptes[(addr >> PAGE_SHIFT) + i] = head + i
            self.mappers.setdefault(head + i, set()).add((pid, (addr >> PAGE_SHIFT) + i))
            self._recount(head + i)

    def unmap(self, pid: int, addr: int, *, swap: bool = False) -> None:
        p = self.procs[pid]
        vpn = addr >> PAGE_SHIFT
        pfn = p.ptes.pop(vpn, None)
        if pfn is not None:
            self.mappers[pfn].discard((pid, vpn))
            self._recount(pfn)
        if swap:
            p.swapped.add(vpn)
        self._write_pte(p, vpn)

    def migrate(self, pid: int, addr: int, new_pfn: int) -> None:
        """Move the page to a new frame (NUMA balancing, compaction): a fresh page, no flags."""
        p = self.procs[pid]
        old = p.ptes[addr >> PAGE_SHIFT]
        self.pages.pop(old, None)
        self._write_flags(old)
        self.map(pid, addr, new_pfn)

    def pfn_of(self, pid: int, addr: int) -> int:
        return self.procs[pid].ptes[addr >> PAGE_SHIFT]

    def folio(self, pfn: int) -> FakePage:
        pg = self.pages[pfn]
        return self.pages[pg.head] if pg.head is not None else pg

    def access(self, pid: int, addr: int) -> None:
        """A load or store through the page table: the MMU sets the PTE accessed bit."""
        self.folio(self.pfn_of(pid, addr)).young = True

    def exit(self, pid: int, *, reap: bool = True) -> None:
        p = self.procs[pid]
        p.alive = False
        if reap:
            d = self.proc / str(pid)
            for f in d.iterdir():
                f.unlink()
            d.rmdir()

    def exec(self, pid: int) -> None:
        self.procs[pid].generation += 1

    def set_kdamond_state(self, idx: int, state: str) -> None:
        d = self.sys / f"kernel/mm/damon/admin/kdamonds/{idx}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "state").write_text(state + "\n")


class FakeKernelIO(PosixIO):
    """PosixIO whose bitmap and pagemap fds behave like the kernel's (see module doc)."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.k = kernel
        self.bitmap_path = str(kernel.sys / "kernel/mm/page_idle/bitmap")
        self.kpf_path = str(kernel.proc / "kpageflags")
        self.fds: dict[int, tuple[str, int, int]] = {}  # fd -> (kind, pid, generation)
        self.calls: Counter[str] = Counter()
        self.read_bytes: Counter[str] = Counter()  # bytes asked for, per kind of file
        self.deny: set[str] = set()
        #: called after each bitmap write (to model an access racing with the read-back)
        self.after_bitmap_write: Callable[[], None] | None = None

    def open(self, path: str, flags: int) -> int:
        if path in self.deny:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        fd = super().open(path, flags)
        if path == self.bitmap_path:
            self.fds[fd] = ("bitmap", 0, 0)
        elif path == self.kpf_path:
            self.fds[fd] = ("kpageflags", 0, 0)
        elif path.endswith("/pagemap"):
            pid = int(path.rsplit("/", 2)[-2])
            self.fds[fd] = ("pagemap", pid, self.k.procs[pid].generation)
        return fd

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)
        super().close(fd)

    def read_file(self, path: str) -> bytes:
        if path in self.deny:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return super().read_file(path)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        kind, pid, gen = self.fds.get(fd, ("file", 0, 0))
        self.calls[f"pread:{kind}"] += 1
        self.read_bytes[kind] += size
        if kind == "bitmap":
            return self._bitmap_read(size, offset)
        if kind == "pagemap":
            p = self.k.procs[pid]
            if not p.alive or p.generation != gen:
                return b""  # the mm this fd pins is gone
            data = super().pread(fd, size, offset)
            data += bytes(size - len(data))  # the kernel reports every page in range
            if not self.k.cap_sys_admin:
                vals = struct.unpack(f"={len(data) // 8}Q", data)
                data = struct.pack(f"={len(vals)}Q", *(v & ~PM_PFN_MASK for v in vals))
            return data
        return super().pread(fd, size, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        kind, _, _ = self.fds.get(fd, ("file", 0, 0))
        self.calls[f"pwrite:{kind}"] += 1
        if kind == "bitmap":
            n = self._bitmap_write(data, offset)
            if self.after_bitmap_write:
                self.after_bitmap_write()
            return n
        return super().pwrite(fd, data, offset)

    # -- mm/page_idle.c ----------------------------------------------------------------

    def _get_folio(self, pfn: int) -> FakePage | None:
        pg = self.k.pages.get(pfn)
        if pg is None or pg.head is not None or not pg.lru:
            return None
        return pg

    def _bitmap_read(self, size: int, offset: int) -> bytes:
        if offset % 8 or size % 8:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        size = min(size, 4096)
        pfn = offset * 8
        if pfn >= self.k.max_pfn:
            return b""
        end = min(pfn + size * 8, self.k.max_pfn)
        words = []
        for base in range(pfn, end, 64):
            w = 0
            for bit in range(min(64, end - base)):
                f = self._get_folio(base + bit)
                if f is not None and f.idle:
                    if f.young:  # page_idle_clear_pte_refs found an accessed PTE
                        f.young = False
                        f.idle = False
                    if f.idle:
                        w |= 1 << bit
            words.append(w)
        return struct.pack(f"={len(words)}Q", *words)

    def _bitmap_write(self, data: bytes, offset: int) -> int:
        if offset % 8 or len(data) % 8:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        data = data[:4096]
        pfn = offset * 8
        if pfn >= self.k.max_pfn:
            raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))
        for i, w in enumerate(struct.unpack(f"={len(data) // 8}Q", data)):
            for bit in range(64):
                if w >> bit & 1 and pfn + i * 64 + bit < self.k.max_pfn:
                    f = self._get_folio(pfn + i * 64 + bit)
                    if f is not None:
                        f.young = False  # page_idle_clear_pte_refs, then set idle
                        f.idle = True
        return len(data)
