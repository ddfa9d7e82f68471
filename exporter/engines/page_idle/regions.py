"""Regions and the operations on them: even split, merge, random split, set-regions.

Each function mirrors one in the kernel's ``mm/damon/core.c`` / ``vaddr.c``; the docstrings
say which, and where we deliberately differ. Region lists are plain Python lists kept sorted
by address, one list per process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from exporter.engines.page_idle.ranges import AddressRange, align_down, align_up
from exporter.model.attrs import PAGE_SIZE

MIN_REGION = PAGE_SIZE


@dataclass(slots=True)
class Region:
    """One monitoring region: ``[start, end)``, page aligned, with its access counters.

    ``nr_accesses`` counts sample hits in the current aggregation, ``nr_checks`` the samples
    that could be checked at all (a non-resident or untrackable page is neither hit nor
    miss). ``age`` counts aggregations the access pattern stayed the same (kernel semantics).

    Idle time is kept apart from ``age``, in seconds: ``last_access`` is the monitor clock's
    time of the last sample that saw an access in the region (``seen`` True), or, for a
    region never seen accessed (``seen`` False), the time we began watching its memory.
    A clock time does not change meaning when the aggregation interval does, as a count of
    aggregations would; ``age`` stays for what the kernel uses it for.
    """

    start: int
    end: int
    nr_accesses: int = 0
    nr_checks: int = 0
    last_nr_accesses: int = 0
    age: int = 0
    sampling_addr: int = 0
    last_access: float = 0.0
    seen: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start

    def piece(self, start: int, end: int) -> "Region":
        """A part of this region: same counters, same history (it was observed as a whole)."""
        return Region(start, end, self.nr_accesses, self.nr_checks, self.last_nr_accesses, self.age,
                      last_access=self.last_access, seen=self.seen)

    def idle_seconds(self, now: float) -> float:
        """Seconds without an observed access at ``now`` (0 if this aggregation saw one);
        for a region never seen accessed, seconds since we began watching it."""
        return 0.0 if self.nr_accesses > 0 else max(0.0, now - self.last_access)


def split_evenly(r: Region, nr_pieces: int) -> list[Region]:
    """``damon_va_evenly_split_region()``: ``nr_pieces`` page-aligned pieces, last takes the rest."""
    size = r.end - r.start
    if nr_pieces <= 1:
        return [r]
    piece = align_down(size // nr_pieces, MIN_REGION)
    if piece == 0:
        return [r]
    out = []
    start = r.start
    while start + piece <= r.end and len(out) < nr_pieces:
        out.append(r.piece(start, start + piece))
        start += piece
    out[-1].end = r.end
    return out


def init_regions(ranges: Sequence[AddressRange], min_regions: int, size_limit: int | None = None,
                 now: float = 0.0) -> list[Region]:
    """``__damon_va_init_regions()``: each range split so region sizes approach total/min.

    ``size_limit`` defaults to the ranges' own size over ``min_regions``; a process joining
    a multi-process target passes its :func:`process_size_limit`, the limit its merges
    will keep. The piece count is rounded up (the kernel rounds down), so no initial region
    is larger than the limit and the first merge never has to exceed it. The regions are
    fresh: never seen accessed, watched from ``now``.
    """
    total = sum(r.size for r in ranges)
    if total == 0:
        return []
    sz = max(MIN_REGION, total // min_regions if size_limit is None else size_limit)
    out: list[Region] = []
    for rng in ranges:
        out.extend(split_evenly(Region(rng.start, rng.end, last_access=now), max(1, -(-rng.size // sz))))
    return out


def region_size_limit(total_size: int, min_regions: int) -> int:
    """``damon_region_sz_limit()``: no merge may build a region larger than total/min.

    This is what keeps the count near or above ``min_regions`` after merging. Rounded up to
    a page (the kernel rounds down): rounding down can make the limit smaller than the
    regions of a tiny target, so that nothing merges and the count stays above the max.
    """
    return max(MIN_REGION, align_up(-(-total_size // max(1, min_regions)), MIN_REGION))


def process_size_limit(process_size: int, target_size: int, min_regions: int, max_regions: int) -> int:
    """The largest region a merge may build in one process of a target.

    The kernel divides the whole context by ``min_nr_regions`` (its limit sums every
    target). In a target of several alike processes that lets one region cover a large
    share of each: five forked readers of 128 MiB at the default 10 may hold regions of
    65 MiB, half a process, and a process' hot edge then hides in a region mostly idle,
    whose verdict swings the figures by its whole size from one aggregation to the next.
    Each process is held to ``min_regions``' resolution of its own memory instead, as if
    it were watched alone, unless ``max_regions`` cannot hold that many regions for the
    whole target: then the target's size over ``max_regions``, the finest the cap allows.
    A target of one process gets the kernel's limit.
    """
    return max(region_size_limit(process_size, min_regions), region_size_limit(target_size, max_regions))


def merge_two(left: Region, right: Region) -> None:
    """``damon_merge_two_regions()``: ``left`` absorbs ``right``; counters become the
    size-weighted averages.

    Idle time merges the same way (the time of the last access is the size-weighted mean
    of the two), so the merged region's idle time lies between its parts': a merge never
    makes memory look more recently used than its most recently used part, nor idler than
    its idlest. Whether that time is an observed access (``seen``) is taken from the larger
    part. Either way the bytes a merge can misplace are bounded by the merged region.

    A merge of a region that saw an access this aggregation with one that did not (only
    :func:`force_merge` does that) keeps ``nr_accesses`` at 1 or more, where the kernel's
    integer average can round it to 0: a region holding an observed access is never
    reported as unaccessed.
    """
    sl, sr = left.size, right.size
    total = sl + sr
    accessed = left.nr_accesses > 0 or right.nr_accesses > 0
    left.nr_accesses = (left.nr_accesses * sl + right.nr_accesses * sr) // total
    if accessed and left.nr_accesses == 0:
        left.nr_accesses = 1
    left.nr_checks = (left.nr_checks * sl + right.nr_checks * sr) // total
    left.last_nr_accesses = (left.last_nr_accesses * sl + right.last_nr_accesses * sr) // total
    left.age = (left.age * sl + right.age * sr) // total
    if left.last_access != right.last_access:
        left.last_access = (left.last_access * sl + right.last_access * sr) / total
    if sr > sl:
        left.seen = right.seen
    left.end = right.end


def force_merge(region_lists: list[list[Region]], max_regions: int) -> None:
    """Merge the most alike adjacent pair, repeatedly, until at most ``max_regions`` remain.

    The kernel's threshold doubling can stop above the maximum (the size limit, or our
    zero/non-zero rule, blocks the last merges); this makes the maximum a guarantee, as
    long as there are contiguous neighbours left to merge. Most alike = smallest access
    difference, then smallest combined size. Works in place on each process' list.
    """
    count = sum(len(rs) for rs in region_lists)
    while count > max_regions:
        best = None
        for li, rs in enumerate(region_lists):
            for i in range(len(rs) - 1):
                a, b = rs[i], rs[i + 1]
                if a.end != b.start:
                    continue
                key = (abs(a.nr_accesses - b.nr_accesses), a.size + b.size)
                if best is None or key < best[0]:
                    best = (key, li, i)
        if best is None:
            return
        _, li, i = best
        rs = region_lists[li]
        merge_two(rs[i], rs[i + 1])
        del rs[i + 1]
        count -= 1


def update_age(regions: list[Region], threshold: int) -> None:
    """Age bookkeeping of ``damon_merge_regions_of()``: a changed pattern restarts the age.

    As in the kernel since 6.x, a move to or from zero accesses also restarts it, so that
    ``age`` of an unaccessed region is exactly how long it has been idle.
    """
    for r in regions:
        if abs(r.nr_accesses - r.last_nr_accesses) > threshold or (
            (r.nr_accesses == 0) != (r.last_nr_accesses == 0)
        ):
            r.age = 0
        else:
            r.age += 1


def merge_regions(regions: list[Region], threshold: int, size_limit: int) -> list[Region]:
    """``damon_merge_regions_of()`` without the age update: merge adjacent similar regions.

    Two neighbours merge when they touch, their ``nr_accesses`` differ by at most
    ``threshold`` and the result stays within ``size_limit``. Counters and age become the
    size-weighted averages, as in ``damon_merge_two_regions()``.

    One deliberate difference: a region that saw no access this aggregation never merges
    with one that did, however small the difference. The kernel restarts ``age`` on that
    same boundary; keeping the regions apart too stops a just-touched region from dragging
    a long-idle neighbour's age (and so its idle time) towards zero, which is what the
    working-set and cold-memory figures are made of.
    """
    out: list[Region] = []
    prev: Region | None = None
    for r in regions:
        if (
            prev is not None
            and prev.end == r.start
            and abs(prev.nr_accesses - r.nr_accesses) <= threshold
            and (prev.nr_accesses == 0) == (r.nr_accesses == 0)
            and prev.size + r.size <= size_limit
        ):
            merge_two(prev, r)
        else:
            out.append(r)
            prev = r
    return out


def split_regions(regions: list[Region], nr_subs: int, rng: random.Random) -> list[Region]:
    """``damon_split_regions_of()``: cut each region into up to ``nr_subs`` random pieces.

    The left piece gets 10%..90% of the region, page aligned; regions of two pages or less
    stay whole. Pieces inherit the counters, age and idle time: the region was observed as
    a whole, so that is all that is known of each piece.
    """
    out: list[Region] = []
    for r in regions:
        pieces = [r]
        cur = r
        size = cur.size
        for _ in range(nr_subs - 1):
            if size <= 2 * MIN_REGION:
                break
            sub = align_down(rng.randint(1, 9) * size // 10, MIN_REGION)
            if sub == 0 or sub >= size:
                continue
            right = cur.piece(cur.start + sub, cur.end)
            cur.end = cur.start + sub
            pieces.insert(1, right)  # the left piece (cur) is split again next round
            size = sub
        out.extend(pieces)
    return out


def set_regions(regions: list[Region], ranges: Sequence[AddressRange], now: float = 0.0) -> list[Region]:
    """``damon_set_regions()``: fit existing regions to new monitoring ranges.

    Regions that intersect no new range are dropped; in each range the first and last
    intersecting regions are trimmed to the range's edges, holes between the remaining
    regions are filled with fresh regions, and a range with no region at all becomes one
    new region. Counters of surviving regions are kept, so an update does not throw away
    what was learned about memory that is still mapped.

    One deliberate difference: where a range grew past its first or last region, the
    kernel stretches that region over the new memory, which then inherits an access
    history it never had (a long idle time for a heap that just grew, say). Here the new
    memory becomes a fresh region of its own, like a hole: never seen accessed, watched
    from ``now``.
    """
    ranges = sorted(AddressRange(align_down(a), align_up(b)) for a, b in ranges)
    out: list[Region] = []
    i = 0
    n = len(regions)
    for rng in ranges:
        if rng.end <= rng.start:
            continue
        # skip regions entirely before this range (dropped unless a later range takes them)
        while i < n and regions[i].end <= rng.start:
            i += 1
        inside: list[Region] = []
        j = i
        while j < n and regions[j].start < rng.end:
            inside.append(regions[j])
            j += 1
        # a region straddling the end of this range may also intersect the next range:
        # do not consume it past this point
        i = j - 1 if inside and inside[-1].end > rng.end else j
        if not inside:
            out.append(Region(rng.start, rng.end, last_access=now))
            continue
        pieces: list[Region] = []
        prev_end = rng.start
        for r in inside:
            start, end = max(r.start, rng.start), min(r.end, rng.end)
            if start > prev_end:
                pieces.append(Region(prev_end, start, last_access=now))  # new memory, or a hole
            if end > start:
                pieces.append(r.piece(start, end))
            prev_end = max(prev_end, end)
        if rng.end > prev_end:
            pieces.append(Region(prev_end, rng.end, last_access=now))
        out.extend(pieces)
    return out
