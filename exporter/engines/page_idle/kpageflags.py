"""What only page_idle reads besides the bitmap: ``/proc/kpageflags``, and runs of entries.

- ``/proc/kpageflags`` has one u64 of KPF_* flags per PFN at offset ``pfn * 8``
  (include/uapi/linux/kernel-page-flags.h); page_idle needs it to find a THP's head page
  (the idle flag lives there) and to tell pages that are not on an LRU;
- pagemap, kpageflags and bitmap reads are batched into runs of neighbouring entries.
"""

from __future__ import annotations

from array import array
from typing import Iterator

from exporter.procfs.io import _NATIVE_U64

# /proc/kpageflags bits (KPF_*) that page_idle reads
KPF_LRU = 5
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_THP = 22

#: pages per PMD-sized folio: the largest folio page_idle can see (hugetlb is never on an LRU)
PMD_PAGES = 512


def pack_u64s(values: list[int]) -> bytes:
    return array(_NATIVE_U64, values).tobytes()


def runs(pages: list[int], max_gap: int, max_span: int = 512) -> Iterator[tuple[int, int, list[int]]]:
    """Group page (or PFN) numbers into (first, count, indices) runs read with one pread:
    neighbours at most ``max_gap`` apart share a run, and a run covers at most ``max_span``
    entries (512 u64 = 4 KiB), so one read never grows without bound. ``indices`` index into
    ``pages``."""
    order = sorted(range(len(pages)), key=pages.__getitem__)
    i = 0
    n = len(order)
    while i < n:
        first = pages[order[i]]
        j = i + 1
        while j < n and pages[order[j]] - pages[order[j - 1]] <= max_gap and pages[order[j]] - first < max_span:
            j += 1
        yield first, pages[order[j - 1]] - first + 1, order[i:j]
        i = j
