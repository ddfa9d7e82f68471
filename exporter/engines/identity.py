"""Which memory a shared region is: the frames at a few addresses, read where it matters.

Two processes' regions over the same addresses are the same memory only where they map the
same frames there (fork leaves them so until a write breaks copy-on-write; two unrelated
programs started without ASLR, or a fixed-address mapping, do not). An engine that can read
PFNs reads them at :func:`frame_grid` addresses of each shared region that overlaps another
process' shared region of the target, and the summary matches regions by frame
(:func:`exporter.summary.sharing.same_memory`). Regions nobody else overlaps are not read:
their identity does not matter.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from exporter.model.attrs import PAGE_SIZE
from exporter.model.errors import OpsError
from exporter.model.records import RegionRecord

#: addresses read per region: one 8-byte pagemap read each
FRAMES_PER_REGION = 16


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
