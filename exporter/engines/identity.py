"""Which memory a shared region is: the frames at a few addresses, read where it matters.

Two processes' regions over the same addresses are the same memory only where they map the
same frames there (fork leaves them so until a write breaks copy-on-write; two unrelated
programs started without ASLR, or a fixed-address mapping, do not). An engine that can read
PFNs reads them at :func:`frame_grid` addresses of each shared region that overlaps another
process' shared region of the target, and the summary matches regions by frame
(:func:`exporter.summary.sharing.same_memory`). Regions nobody else overlaps are not read:
their identity does not matter.

Shared pages of a file are one memory at one offset of the file, wherever each process maps
it: the engines hand the file mappings over the shared regions to the summary
(:func:`file_mappings`), which matches them by offset
(:mod:`exporter.summary.file_identity`). Only targets with shared regions in two processes
or more need them, so no other target costs a read of ``/proc/PID/maps``.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from itertools import accumulate
from typing import Callable, Sequence

from exporter.model.attrs import PAGE_SIZE
from exporter.model.errors import OpsError
from exporter.model.records import FileMapping, RegionRecord
from exporter.procfs.parsers import parse_file_maps

#: addresses read per region: one 8-byte pagemap read each
FRAMES_PER_REGION = 16
#: file mappings kept per process (about 120 bytes each, held for a regions update
#: interval); a process with more (the kernel allows 65,530 mappings) is matched by address
MAX_FILE_MAPPINGS = 4096


def frame_grid(start: int, end: int, count: int = FRAMES_PER_REGION) -> list[int]:
    """At most about ``count`` addresses in ``[start, end)``: the multiples of the smallest
    power-of-two number of pages that gives no more. Two regions over common addresses
    read common addresses: the coarser grid is a subset of the finer one."""
    pages = max(1, (end - start) // PAGE_SIZE)
    stride = PAGE_SIZE
    while pages > count * (stride // PAGE_SIZE):
        stride *= 2
    first = -(-start // stride) * stride
    return list(range(first, end, stride))


def overlapping_shared(records: Sequence[RegionRecord]) -> list[int]:
    """Indices of the records with shared bytes that overlap a shared record of another
    process: the only ones whose identity the summary asks."""
    order = sorted((i for i, r in enumerate(records) if r.shared_bytes > 0 and r.end > r.start),
                   key=lambda i: records[i].start)
    hit: set[int] = set()
    active: list[int] = []
    for i in order:
        r = records[i]
        active = [j for j in active if records[j].end > r.start]
        for j in active:
            if records[j].pid != r.pid:
                hit.update((i, j))
        active.append(i)
    return sorted(hit)


def with_frames(records: list[RegionRecord], read: Callable[[int, list[int]], list[int] | None]) -> list[RegionRecord]:
    """``records`` with the frames of those :func:`overlapping_shared` finds, ``read(pid,
    addresses)`` giving PFNs (0: none there; None: cannot be read). Where a read fails (the
    process left since its records were taken), that region's identity is left unknown: it
    is matched by address."""
    out = list(records)
    for i in overlapping_shared(records):
        r = records[i]
        addrs = frame_grid(r.start, r.end)
        try:
            pfns = read(r.pid, addrs)
        except OpsError:
            continue
        if pfns is not None:
            out[i] = replace(r, frames=tuple((a, f) for a, f in zip(addrs, pfns) if f))
    return out


def file_mappings(records: Sequence[RegionRecord],
                  mappings_of: Callable[[int], Sequence[tuple[int, int, int, int, int]] | None],
                  ) -> tuple[FileMapping, ...]:
    """The file mappings that meet a shared region of ``records`` (one target's), as
    ``mappings_of(pid)`` gives them (:func:`parse_file_maps`' tuples; None, or OpsError:
    not known, the process' regions are matched by address); none where fewer than two
    processes have shared regions."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for r in records:
        if r.shared_bytes > 0 and r.end > r.start:
            spans.setdefault(r.pid, []).append((r.start, r.end))
    if len(spans) < 2:
        return ()
    out: list[FileMapping] = []
    for pid in sorted(spans):
        try:
            mappings = mappings_of(pid)
        except OpsError:
            continue
        if mappings is None:
            continue
        own = sorted(spans[pid])
        starts = [s for s, _ in own]
        reach = list(accumulate((e for _, e in own), max))
        for start, end, device, inode, offset in mappings:
            i = bisect_left(starts, end) - 1  # the last shared region starting before the mapping ends
            if i >= 0 and reach[i] > start:
                out.append(FileMapping(pid, start, end, device, inode, offset))
    return tuple(out)


class FileMaps:
    """Each process' file mappings for :func:`file_mappings`, read from ``/proc/PID/maps``
    at most once per ``interval`` seconds: the regions update interval,
    at which DAMON itself follows a process' mappings. Reading and parsing the maps of a
    process with a few hundred mappings costs about a millisecond, too much for every
    aggregation of every process of a large target. A mapping made since the last read is
    matched by address until the next. Memory: at most :data:`MAX_FILE_MAPPINGS` per
    process read within the interval."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._read_at: dict[int, tuple[float, list[tuple[int, int, int, int, int]] | None]] = {}

    def of(self, records: Sequence[RegionRecord], read: Callable[[int], bytes | None],
           interval: float) -> tuple[FileMapping, ...]:
        """:func:`file_mappings` of ``records``, ``read(pid)`` giving a process' maps text
        where it was not read within ``interval`` seconds."""
        now = self.clock()
        # what is older than the interval would be read again: kept, it would only hold
        # the mappings of processes gone since (memory bounded by what one interval read)
        self._read_at = {pid: v for pid, v in self._read_at.items() if now - v[0] < interval}

        def mappings_of(pid: int) -> list[tuple[int, int, int, int, int]] | None:
            last = self._read_at.get(pid)
            if last is None:
                data = read(pid)
                mappings = None if data is None else parse_file_maps(data, MAX_FILE_MAPPINGS)
                if mappings is not None and len(mappings) > MAX_FILE_MAPPINGS:
                    mappings = None
                last = self._read_at[pid] = (now, mappings)
            return last[1]

        return file_mappings(records, mappings_of)
