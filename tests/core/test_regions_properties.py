"""Invariants of the region operations, checked on random inputs (hypothesis)."""

import random

from hypothesis import given
from hypothesis import strategies as st

from exporter.engines.page_idle.ranges import AddressRange, normalize, three_regions
from exporter.engines.page_idle.regions import (
    Region,
    init_regions,
    merge_regions,
    process_size_limit,
    region_size_limit,
    set_regions,
    split_evenly,
    split_regions,
    update_age,
)

PAGE = 4096


def covered(regions):
    """Union of the regions as normalized ranges."""
    return normalize((r.start, r.end) for r in regions)


def assert_well_formed(regions):
    for r in regions:
        assert r.start % PAGE == 0 and r.end % PAGE == 0, r
        assert r.end > r.start, r
    for a, b in zip(regions, regions[1:]):
        assert a.end <= b.start, (a, b)  # sorted, non-overlapping


@st.composite
def mappings(draw, max_n=40):
    """Sorted, non-overlapping page-aligned (start, end) pairs with random gaps."""
    n = draw(st.integers(1, max_n))
    addr = draw(st.integers(1, 1 << 20)) * PAGE
    out = []
    for _ in range(n):
        addr += draw(st.sampled_from([0, 0, 1, 3, 100, 1 << 10, 1 << 16])) * PAGE  # gap (0 = adjacent)
        size = draw(st.integers(1, 1 << 12)) * PAGE
        out.append((addr, addr + size))
        addr += size
    return out


def brute_three_regions(maps):
    gaps = [(b[0] - a[1], a[1], b[0]) for a, b in zip(maps, maps[1:]) if b[0] > a[1]]
    # the two biggest gaps; ties broken by first occurrence, like the one-pass version
    top = sorted(gaps, key=lambda g: -g[0])[:2]
    cuts = sorted((s, e) for _, s, e in top)
    out, cur = [], maps[0][0]
    for s, e in cuts:
        out.append((cur, s))
        cur = e
    out.append((cur, maps[-1][1]))
    return out


@given(mappings())
def test_three_regions_matches_brute_force(maps):
    got = three_regions(maps)
    assert [tuple(r) for r in got] == brute_three_regions(maps)
    # every mapped byte is inside the result
    for s, e in maps:
        assert any(r.start <= s and e <= r.end for r in got)
    assert 1 <= len(got) <= 3


def test_three_regions_fewer_than_two_gaps():
    assert three_regions([(0x1000, 0x5000)]) == [AddressRange(0x1000, 0x5000)]
    assert three_regions([(0x1000, 0x2000), (0x2000, 0x3000)]) == [AddressRange(0x1000, 0x3000)]
    assert three_regions([(0x1000, 0x2000), (0x9000, 0xA000)]) == [
        AddressRange(0x1000, 0x2000),
        AddressRange(0x9000, 0xA000),
    ]
    assert three_regions([]) == []


def test_three_regions_typical_process_layout():
    maps = [
        (0x400000, 0x401000), (0x600000, 0x602000),  # text, data
        (0x1000000, 0x1100000),  # heap
        (0x7F0000000000, 0x7F0000100000), (0x7F0000200000, 0x7F0000300000),  # mmap area
        (0x7FFFF0000000, 0x7FFFF0021000),  # stack
    ]
    assert three_regions(maps) == [
        AddressRange(0x400000, 0x1100000),
        AddressRange(0x7F0000000000, 0x7F0000300000),
        AddressRange(0x7FFFF0000000, 0x7FFFF0021000),
    ]


def test_three_regions_is_one_pass_over_an_iterator():
    # 50,000 mappings with two big gaps in the middle, given as a generator: a generator can
    # be consumed only once, so this also proves the search needs no second walk
    n = 50_000
    big = {20_000: 1 << 30, 40_000: 1 << 31}

    def gen():
        addr = 0
        for i in range(n):
            addr += big.get(i, PAGE)
            yield (addr, addr + PAGE)
            addr += PAGE

    maps = list(gen())
    got = three_regions(gen())
    assert got == [
        AddressRange(maps[0][0], maps[19_999][1]),
        AddressRange(maps[20_000][0], maps[39_999][1]),
        AddressRange(maps[40_000][0], maps[-1][1]),
    ]


@given(st.integers(1, 1 << 14), st.integers(1, 50))
def test_split_evenly_covers_region(pages, pieces):
    r = Region(PAGE * 10, PAGE * (10 + pages), nr_accesses=3, age=4)
    out = split_evenly(r, pieces)
    assert_well_formed(out)
    assert covered(out) == [AddressRange(r.start, r.end)]
    assert len(out) <= max(1, pieces)
    assert all(x.nr_accesses == 3 and x.age == 4 for x in out)


@given(mappings(), st.integers(3, 100))
def test_init_regions_cover_ranges(maps, min_regions):
    ranges = three_regions(maps)
    regs = init_regions(ranges, min_regions)
    assert_well_formed(regs)
    assert covered(regs) == normalize(ranges)


@st.composite
def region_lists(draw):
    maps = draw(mappings(max_n=10))
    regs = init_regions(three_regions(maps), draw(st.integers(3, 60)))
    for r in regs:
        r.nr_accesses = draw(st.integers(0, 20))
        r.last_nr_accesses = draw(st.integers(0, 20))
        r.age = draw(st.integers(0, 100))
    return regs


@given(region_lists(), st.integers(0, 20), st.integers(1, 1 << 16))
def test_merge_preserves_coverage_and_respects_limits(regs, threshold, limit_pages):
    before = covered(regs)
    snapshot = [(r.start, r.end, r.nr_accesses) for r in regs]
    limit = limit_pages * PAGE
    out = merge_regions([Region(*s[:2], nr_accesses=s[2]) for s in snapshot], threshold, limit)
    assert_well_formed(out)
    assert covered(out) == before
    # a merged region is made only of contiguous originals within the threshold and the limit
    for m in out:
        parts = [s for s in snapshot if m.start <= s[0] and s[1] <= m.end]
        assert parts[0][0] == m.start and parts[-1][1] == m.end
        if len(parts) > 1:
            assert m.end - m.start <= limit
            for a, b in zip(parts, parts[1:]):
                assert a[1] == b[0]
        # size-weighted average stays within the parts' range
        assert min(p[2] for p in parts) <= m.nr_accesses <= max(p[2] for p in parts)


def test_merge_weighted_average():
    a = Region(0, 3 * PAGE, nr_accesses=10, age=10)
    b = Region(3 * PAGE, 4 * PAGE, nr_accesses=6, age=2)
    (m,) = merge_regions([a, b], threshold=4, size_limit=1 << 30)
    assert (m.start, m.end, m.nr_accesses, m.age) == (0, 4 * PAGE, 9, 8)
    # beyond the threshold, or not adjacent, or over the size limit: no merge
    assert len(merge_regions([Region(0, PAGE, 10), Region(PAGE, 2 * PAGE, 5)], 4, 1 << 30)) == 2
    assert len(merge_regions([Region(0, PAGE, 5), Region(2 * PAGE, 3 * PAGE, 5)], 4, 1 << 30)) == 2
    assert len(merge_regions([Region(0, PAGE, 5), Region(PAGE, 2 * PAGE, 5)], 4, PAGE)) == 2


@given(region_lists(), st.sampled_from([2, 3]), st.integers(0, 1 << 30))
def test_split_preserves_coverage(regs, nr_subs, seed):
    before = covered(regs)
    n = len(regs)
    out = split_regions(regs, nr_subs, random.Random(seed))
    assert_well_formed(out)
    assert covered(out) == before
    assert n <= len(out) <= n * nr_subs


def test_split_pieces_are_10_to_90_percent():
    rng = random.Random(1)
    for _ in range(200):
        (a, b) = split_regions([Region(0, 100 * PAGE, nr_accesses=7, age=3)], 2, rng)
        assert 10 * PAGE <= a.size <= 90 * PAGE
        assert (b.nr_accesses, b.age) == (7, 3)
    # two pages or less: never split
    assert len(split_regions([Region(0, 2 * PAGE)], 3, rng)) == 1


def test_age_rules():
    r = Region(0, PAGE, nr_accesses=5, last_nr_accesses=4, age=7)
    update_age([r], threshold=2)
    assert r.age == 8  # similar pattern: older
    r.nr_accesses, r.last_nr_accesses = 10, 4
    update_age([r], threshold=2)
    assert r.age == 0  # changed beyond threshold
    r.nr_accesses, r.last_nr_accesses, r.age = 0, 1, 5
    update_age([r], threshold=2)
    assert r.age == 0  # became idle: the idle time starts now
    r.nr_accesses, r.last_nr_accesses = 0, 0
    update_age([r], threshold=2)
    assert r.age == 1


@given(region_lists(), mappings(max_n=8))
def test_set_regions_fits_new_ranges(regs, new_maps):
    ranges = three_regions(new_maps)
    out = set_regions(regs, ranges)
    assert_well_formed(out)
    assert covered(out) == normalize(ranges)
    for r in out:
        assert any(x.start <= r.start and r.end <= x.end for x in ranges)


def test_set_regions_keeps_counters_and_history_new_memory_starts_fresh():
    regs = [
        Region(10 * PAGE, 20 * PAGE, nr_accesses=1, age=5, last_access=50.0, seen=True),
        Region(30 * PAGE, 40 * PAGE, nr_accesses=2, age=6, last_access=60.0, seen=True),
        Region(100 * PAGE, 110 * PAGE, nr_accesses=3, age=7, last_access=70.0, seen=True),
    ]
    out = set_regions(regs, [AddressRange(5 * PAGE, 45 * PAGE), AddressRange(200 * PAGE, 210 * PAGE)], now=99.0)
    got = [(r.start // PAGE, r.end // PAGE, r.nr_accesses, r.age, r.last_access, r.seen) for r in out]
    assert got == [
        (5, 10, 0, 0, 99.0, False),  # the range grew below its first region: new memory, fresh
        (10, 20, 1, 5, 50.0, True),  # kept with its counters and history
        (20, 30, 0, 0, 99.0, False),  # the hole between kept regions, filled fresh
        (30, 40, 2, 6, 60.0, True),
        (40, 45, 0, 0, 99.0, False),  # grown above its last region: fresh (the kernel stretches)
        (200, 210, 0, 0, 99.0, False),  # a new range with no region: one fresh region
    ]  # the region at 100..110 intersects no new range: dropped
    # a trimmed region keeps its history
    (r,) = set_regions([Region(0, 10 * PAGE, last_access=5.0, seen=True)], [AddressRange(2 * PAGE, 8 * PAGE)], now=9.0)
    assert (r.start, r.end, r.last_access, r.seen) == (2 * PAGE, 8 * PAGE, 5.0, True)


def test_split_pieces_inherit_the_idle_history():
    r = Region(0, 100 * PAGE, last_access=12.5, seen=True)
    pieces = split_regions([r], 3, random.Random(3)) + split_evenly(Region(0, 8 * PAGE, last_access=3.0), 4)
    assert [(p.last_access, p.seen) for p in pieces[:-4]] == [(12.5, True)] * (len(pieces) - 4)
    assert [(p.last_access, p.seen) for p in pieces[-4:]] == [(3.0, False)] * 4
    assert init_regions([AddressRange(0, 64 * PAGE)], 4, now=7.0)[0].last_access == 7.0


def test_merged_idle_time_lies_between_the_parts():
    """Size-weighted, like the kernel's age: the larger part's history dominates, and the
    merged idle time is never below the most recently used part's nor above the idlest's."""
    a = Region(0, 3 * PAGE, last_access=100.0, seen=True)  # idle 100 s at t=200
    b = Region(3 * PAGE, 4 * PAGE, last_access=180.0, seen=False)  # idle 20 s
    (m,) = merge_regions([a, b], threshold=0, size_limit=1 << 30)
    assert m.last_access == 120.0 and m.seen is True
    assert m.idle_seconds(200.0) == 80.0
    c = Region(0, PAGE, last_access=10.0, seen=True)
    d = Region(PAGE, 4 * PAGE, last_access=40.0, seen=False)
    (m,) = merge_regions([c, d], threshold=0, size_limit=1 << 30)
    assert (m.last_access, m.seen) == (32.5, False)  # the larger part's kind of history


@given(region_lists(), st.integers(0, 20), st.integers(1, 1 << 16), st.lists(st.floats(0, 1000), min_size=1, max_size=200))
def test_merged_idle_time_bounded_by_parts(regs, threshold, limit_pages, times):
    for i, r in enumerate(regs):
        r.last_access = times[i % len(times)]
    parts = [(r.start, r.end, r.last_access) for r in regs]
    out = merge_regions(regs, threshold, limit_pages * PAGE)
    for m in out:
        inside = [p[2] for p in parts if m.start <= p[0] and p[1] <= m.end]
        assert min(inside) - 1e-9 <= m.last_access <= max(inside) + 1e-9


def test_region_size_limit():
    assert region_size_limit(100 * PAGE, 10) == 10 * PAGE
    assert region_size_limit(5 * PAGE, 10) == PAGE
    assert region_size_limit(101 * PAGE, 10) == 11 * PAGE  # rounded up, never below a region's reach


def test_process_size_limit():
    # one process: the kernel's limit, the target over min_regions
    assert process_size_limit(100 * PAGE, 100 * PAGE, 10, 100) == 10 * PAGE
    # five alike processes: each held to a tenth of its own memory, not half of it
    assert process_size_limit(100 * PAGE, 500 * PAGE, 10, 100) == 10 * PAGE
    # many small processes: as fine as max_regions allows for the whole target, no finer
    assert process_size_limit(10 * PAGE, 1000 * PAGE, 10, 100) == 10 * PAGE


def test_force_merge_reaches_the_cap_merging_most_alike_first():
    from exporter.engines.page_idle.regions import force_merge

    a = [Region(0, PAGE, 0), Region(PAGE, 2 * PAGE, 10), Region(2 * PAGE, 3 * PAGE, 11)]
    b = [Region(10 * PAGE, 11 * PAGE, 0), Region(20 * PAGE, 21 * PAGE, 0)]  # not contiguous
    force_merge([a, b], 4)
    assert [(r.start // PAGE, r.end // PAGE) for r in a] == [(0, 1), (1, 3)]  # 10 and 11 merged
    assert len(b) == 2  # gaps are never bridged
    force_merge([a, b], 1)  # impossible: stops at what contiguity allows
    assert len(a) == 1 and len(b) == 2
