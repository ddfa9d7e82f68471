"""Address ranges: page alignment and the kernel's "three regions" construction."""

from __future__ import annotations

from typing import Iterable, NamedTuple

from exporter.model.attrs import PAGE_SIZE


class AddressRange(NamedTuple):
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def align_down(addr: int, size: int = PAGE_SIZE) -> int:
    return addr - addr % size


def align_up(addr: int, size: int = PAGE_SIZE) -> int:
    return -(-addr // size) * size


def three_regions(mappings: Iterable[tuple[int, int]]) -> list[AddressRange]:
    """Ranges to monitor for one address space: everything but the two biggest gaps.

    ``mappings`` must be sorted by address (``/proc/PID/maps`` order). Like the kernel's
    ``__damon_va_three_regions()`` this is a single pass that keeps only the two largest gaps
    seen so far, so it costs O(n) time and O(1) memory even for processes with tens of
    thousands of mappings (the point the reviewer of the seed patch raised: no second walk,
    no sort, no list of gaps).

    The usual result is three ranges: heap and below, the mmap area, the stack. Where the
    kernel returns -EINVAL (fewer than two gaps) we still monitor: one gap gives two ranges,
    no gap gives one.
    """
    first_gap = (0, 0)  # largest gap so far, as (start, end)
    second_gap = (0, 0)
    start = None
    last_end = None
    for m_start, m_end in mappings:
        if m_end <= m_start:
            continue
        if start is None:
            start = m_start
        elif m_start > last_end:
            gap = (last_end, m_start)
            size = m_start - last_end
            if size > second_gap[1] - second_gap[0]:
                second_gap = gap
                if size > first_gap[1] - first_gap[0]:
                    first_gap, second_gap = second_gap, first_gap
        if last_end is None or m_end > last_end:
            last_end = m_end
    if start is None:
        return []
    gaps = sorted(g for g in (first_gap, second_gap) if g[1] > g[0])
    out: list[AddressRange] = []
    cursor = start
    for g_start, g_end in gaps:
        out.append(AddressRange(align_down(cursor), align_up(g_start)))
        cursor = g_end
    out.append(AddressRange(align_down(cursor), align_up(last_end)))
    return [r for r in out if r.end > r.start]


def normalize(ranges: Iterable[tuple[int, int]], join_touching: bool = True) -> list[AddressRange]:
    """Page-align, sort and coalesce overlapping ranges; drop empty ones.

    With ``join_touching=False`` ranges that only touch stay apart: a per-mapping backend
    needs every mapping boundary, even between neighbours such as a library's text and data.
    """
    out: list[AddressRange] = []
    for s, e in sorted((align_down(s), align_up(e)) for s, e in ranges):
        if e <= s:
            continue
        if out and (s < out[-1].end or (join_touching and s == out[-1].end)):
            if e > out[-1].end:
                out[-1] = AddressRange(out[-1].start, e)
        else:
            out.append(AddressRange(s, e))
    return out
