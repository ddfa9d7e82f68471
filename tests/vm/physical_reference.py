"""The physical reference: the exact working set of a set of processes over a window.

A judge for the engines, not a product feature: it marks *every* present page of the
processes idle, where an engine samples a few, so it must never run while an engine does
(both would set and clear the same Idle flags). The VM checks run it in phases between the
engines' runs.

How one window is taken (:func:`take`):

1. every present page of every process, from ``/proc/PID/pagemap``, as a physical frame
   (PFN); a frame several of the processes map is counted once. A tail page of a large folio
   stands for its head (page_idle tracks only heads: the accessed bit of a PMD mapping is the
   folio's), found with ``/proc/kpageflags``;
2. every frame's head is marked idle in ``/sys/kernel/mm/page_idle/bitmap`` and read back at
   once: a head the kernel refused (the shared zero page, pages on no LRU list) cannot be
   judged and is counted apart (``untracked``);
3. after ``window`` seconds the pages are walked again. A frame marked in step 2 whose head
   lost its Idle flag was accessed; a frame present now that was not present at step 1 was
   faulted in during the window, so it was accessed too; frames gone since step 1 are no
   longer resident and count nowhere.

Besides bytes of frames counted once (``resident``, ``working_set``), each frame is also
counted by the share of its mappings that belong to the processes (``kpagecount``), as the
exporter counts pages (PSS's rule): ``resident_share``, ``working_set_share``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

PAGE = 4096
PM_PRESENT = np.uint64(1 << 63)
PM_PFN_MASK = np.uint64((1 << 55) - 1)
KPF_LRU = 5
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
BITMAP = "/sys/kernel/mm/page_idle/bitmap"
#: pagemap entries read per pread
CHUNK = 1 << 16
#: bytes per bitmap/kpageflags transfer (kernfs handles one page per call for the bitmap)
IO_BYTES = 4096


@dataclass(frozen=True)
class Reference:
    """One window's physical truth, in bytes."""

    window: float  # seconds between the mark and the read
    resident: int  # distinct frames present at the read
    working_set: int  # of those, accessed within the window (or faulted in during it)
    untracked: int  # frames page_idle cannot judge (refused the mark): in resident only
    resident_share: float  # frames by the processes' share of their mappings
    working_set_share: float

    @property
    def cold(self) -> int:
        """Resident, judged and untouched within the window."""
        return self.resident - self.working_set - self.untracked

    def to_dict(self) -> dict:
        return {"window": self.window, "resident": self.resident, "working_set": self.working_set,
                "untracked": self.untracked, "cold": self.cold, "resident_share": self.resident_share,
                "working_set_share": self.working_set_share}


def _maps(pid: int) -> list[tuple[int, int]]:
    out = []
    with open(f"/proc/{pid}/maps", "rb") as f:
        for line in f:
            rng, rest = line.split(b" ", 1)
            if rest.rstrip().endswith(b"[vsyscall]"):
                continue
            a, b = rng.split(b"-")
            out.append((int(a, 16), int(b, 16)))
    return out


def present_pfns(pid: int, ranges: Iterable[tuple[int, int]] | None = None) -> np.ndarray:
    """PFNs of the present pages of ``pid`` (in ``ranges`` if given, else all mappings)."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    out = []
    try:
        for start, end in (ranges if ranges is not None else _maps(pid)):
            page, last = start // PAGE, end // PAGE
            while page < last:
                n = min(CHUNK, last - page)
                ents = np.frombuffer(os.pread(fd, n * 8, page * 8), dtype=np.uint64)
                present = ents[(ents & PM_PRESENT) != 0] & PM_PFN_MASK
                if present.size and not present.any():
                    raise PermissionError(f"pagemap of {pid} gives PFN 0 for present pages (needs CAP_SYS_ADMIN)")
                out.append(present)
                page += n
    finally:
        os.close(fd)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def _read_u64s(path: str, pfns: np.ndarray, per_pfn: bool) -> dict[int, int]:
    """Words of ``path``: one per PFN (kpageflags, kpagecount) or one per 64 PFNs (the idle
    bitmap), for the words holding ``pfns``, keyed by word index."""
    words = np.unique(pfns if per_pfn else pfns >> 6)
    got: dict[int, int] = {}
    per_io = IO_BYTES // 8
    fd = os.open(path, os.O_RDONLY)
    try:
        i = 0
        while i < len(words):
            first = int(words[i])
            j = int(np.searchsorted(words, first + per_io))
            buf = os.pread(fd, IO_BYTES, first * 8)
            vals = np.frombuffer(buf[: len(buf) // 8 * 8], dtype=np.uint64)
            for w in words[i:j]:
                k = int(w) - first
                got[int(w)] = int(vals[k]) if k < len(vals) else 0
            i = j
    finally:
        os.close(fd)
    return got


def heads_of(pfns: np.ndarray) -> np.ndarray:
    """Each frame's folio head (itself unless a tail page): the nearest COMPOUND_HEAD at or
    below a tail within its naturally aligned 512-page block."""
    flags = _read_u64s("/proc/kpageflags", pfns, per_pfn=True)
    heads = pfns.copy()
    for i, pfn in enumerate(pfns.tolist()):
        if not flags[pfn] >> KPF_COMPOUND_TAIL & 1:
            continue
        base = pfn & ~511
        block = _read_u64s("/proc/kpageflags", np.arange(base, pfn + 1, dtype=np.int64), per_pfn=True)
        heads[i] = next((q for q in range(pfn, base - 1, -1) if block[q] >> KPF_COMPOUND_HEAD & 1), pfn)
    return heads


def _mark_idle(heads: np.ndarray) -> None:
    masks: dict[int, int] = {}
    for h in np.unique(heads).tolist():
        masks[h >> 6] = masks.get(h >> 6, 0) | 1 << (h & 63)
    fd = os.open(BITMAP, os.O_WRONLY)
    try:
        for w, m in sorted(masks.items()):
            os.pwrite(fd, m.to_bytes(8, "little"), w * 8)
    finally:
        os.close(fd)


def _idle(heads: np.ndarray) -> np.ndarray:
    words = _read_u64s(BITMAP, heads, per_pfn=False)
    return np.array([words[h >> 6] >> (h & 63) & 1 for h in heads.tolist()], dtype=bool)


def _frames(pids: Iterable[int], ranges: dict[int, list[tuple[int, int]]] | None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct PFNs of all the processes, and how many of their pages map each."""
    all_pfns = [present_pfns(pid, None if ranges is None else ranges.get(pid, [])) for pid in pids]
    pfns = np.concatenate(all_pfns) if all_pfns else np.zeros(0, dtype=np.int64)
    return np.unique(pfns, return_counts=True)


def _shares(pfns: np.ndarray, mapped_here: np.ndarray) -> np.ndarray:
    counts = _read_u64s("/proc/kpagecount", pfns, per_pfn=True)
    total = np.array([max(1, counts[p]) for p in pfns.tolist()], dtype=float)
    return np.minimum(1.0, mapped_here / total)


def take(pids: Iterable[int], window: float, ranges: dict[int, list[tuple[int, int]]] | None = None,
         sleep=time.sleep) -> Reference:
    """The physical working set of ``pids`` over ``window`` seconds (see the module's doc);
    ``ranges`` limits each process to some address ranges (pid -> [(start, end)])."""
    pids = list(pids)
    before, _ = _frames(pids, ranges)
    heads = heads_of(before)
    _mark_idle(heads)
    refused = _idle(heads) == 0  # not idle right after the mark: refused unless on an LRU
    if refused.any():
        flags = _read_u64s("/proc/kpageflags", heads[refused], per_pfn=True)
        lru = np.array([flags[h] >> KPF_LRU & 1 for h in heads[refused].tolist()], dtype=bool)
        refused[np.flatnonzero(refused)[lru]] = False
    t0 = time.monotonic()
    sleep(window)
    idle_now = _idle(heads)
    elapsed = time.monotonic() - t0
    after, mapped = _frames(pids, ranges)
    pos = np.searchsorted(before, after)
    pos_ok = np.minimum(pos, max(0, len(before) - 1))
    known = (pos < len(before)) & (before[pos_ok] == after) if len(before) else np.zeros(len(after), bool)
    untracked = np.zeros(len(after), dtype=bool)
    accessed = ~known  # faulted in during the window
    untracked[known] = refused[pos[known]]
    accessed[known] = ~idle_now[pos[known]] & ~refused[pos[known]]
    share = _shares(after, mapped)
    return Reference(
        window=round(elapsed, 3),
        resident=len(after) * PAGE,
        working_set=int(accessed.sum()) * PAGE,
        untracked=int(untracked.sum()) * PAGE,
        resident_share=float(share.sum()) * PAGE,
        working_set_share=float(share[accessed].sum()) * PAGE,
    )
