"""The published errors cover the truth at the stated rate on simulated shared memory.

Random layouts of forked processes sharing one buffer copy-on-write (and, per layout, a
second unrelated tree at the same address whose frames differ; or, apart, a second program
mapping the same file at another base): a random hot range read by
a random subset of the readers in every interval, every process' regions cut near the hot
edges as DAMON's splits leave them. Each region is
checked once per sample interval at a random page, so its hits are drawn from the binomial
model the summary states (:mod:`exporter.summary.sampling`), and the time since its last hit
from the same draws. The truth is known exactly: the hot range once, the rest cold.

The summary promises its errors bracket the truth at least ``1 - ALPHA`` of the time. Over
``LAYOUTS`` layouts a coverage of exactly that rate fails this test with the chance
:data:`FALSE_FAILURE` (the binomial tail is computed, not guessed).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from exporter.engines.identity import frame_grid
from exporter.model.records import FileMapping, RegionRecord, TargetRecords
from exporter.summary import Policy, summarize_target
from exporter.summary.sampling import ALPHA, at_least

MiB = 1 << 20
BASE = 0x7F00_0000_0000
SAMPLE, WINDOW, COLD_AGE, CHECKS = 0.5, 10.0, 60.0, 20
LAYOUTS = 300
#: pages by which a process' region edges miss the hot range's edges, at most
JITTER = 512
#: the chance this test fails although coverage is exactly 1 - ALPHA
FALSE_FAILURE = 0.001
#: misses allowed: the smallest k with P(Binomial(LAYOUTS, ALPHA) > k) <= FALSE_FAILURE
ALLOWED = next(k for k in range(LAYOUTS + 1) if at_least(LAYOUTS, ALPHA, k + 1) <= FALSE_FAILURE)


def region(rng: random.Random, pid: int, lo: int, hi: int, hot: tuple[int, int], used: bool, mappers: int,
           tree: int, base: int = BASE) -> RegionRecord:
    share = max(0, min(hi, hot[1]) - max(lo, hot[0])) / (hi - lo) if used else 0.0
    hits = sum(rng.random() < share for _ in range(CHECKS))
    idle = 0.0
    if not hits:  # samples back in time until one hits (at most the cold age's worth)
        n = 0
        while n * SAMPLE < COLD_AGE * 10 and not rng.random() < share:
            n += 1
        idle = (n + CHECKS) * SAMPLE
    resident = (hi - lo) // mappers
    r = RegionRecord(pid, base + lo, base + hi, resident, nr_accesses=hits, nr_checks=CHECKS,
                     idle_seconds=idle, shared_bytes=resident)
    # a frame per page of the tree's memory, named by its offset in it
    return replace(r, frames=tuple((a, (tree << 40) | ((a - base) >> 12)) for a in frame_grid(r.start, r.end)))


def tree(rng: random.Random, pid0: int, tree_id: int, size: int, hot: tuple[int, int], busy: bool,
         per_page: bool, jitter: int, base: int = BASE, readers: int | None = None, mappers: int | None = None,
         seen_used: bool = False) -> list[RegionRecord]:
    """A parent and its readers over one buffer at ``base``; ``mappers``: processes that map
    each page (the tree's own by default); ``seen_used``: per page, some other process
    uses the memory, so every view sees the use."""
    readers = rng.randint(1, 6) if readers is None else readers
    using = set(rng.sample(range(readers), rng.randint(1, readers))) if busy else set()
    out = []
    for p in range(readers + 1):  # process 0 is the parent, which reads nothing itself
        uses = (p - 1) in using or (per_page and (bool(using) or seen_used))
        near = lambda x: min(size, max(0, x + rng.randint(-jitter, jitter) * 4096))  # noqa: E731
        cuts = sorted({0, near(hot[0]), near(hot[1]), size})
        out += [region(rng, pid0 + p, a, b, hot, uses, mappers or readers + 1, tree_id, base)
                for a, b in zip(cuts, cuts[1:])]
    return out


def layout(rng: random.Random, per_page: bool, jitter: int) -> tuple[list[RegionRecord], int, int]:
    size = rng.randint(16, 256) * MiB
    h0 = rng.randint(0, size // MiB - 8) * MiB
    hot = (h0, min(size, h0 + rng.randint(4, 64) * MiB))
    regions = tree(rng, 100, 1, size, hot, True, per_page, jitter)
    truth_ws = hot[1] - hot[0]
    if rng.random() < 0.5:  # an unrelated idle tree at the same address
        regions += tree(rng, 200, 2, size, hot, False, per_page, jitter)
        return regions, truth_ws, 2 * size - truth_ws
    return regions, truth_ws, size - truth_ws


def misses(per_page: bool, jitter: int, frames: bool = True) -> dict[str, int]:
    """Layouts whose published working set / cold error misses the truth."""
    rng = random.Random(27)
    out = {"working set": 0, "cold": 0}
    for _ in range(LAYOUTS):
        regions, ws, cold = layout(rng, per_page, jitter)
        if not frames:
            regions = [replace(r, frames=None) for r in regions]
        t = summarize_target(TargetRecords("t", tuple(sorted({r.pid for r in regions})), tuple(regions), 0.0),
                             Policy(COLD_AGE, WINDOW), SAMPLE, per_page)
        # a page per mapper is the rounding of counting by share
        slack = 4096 * len(regions)
        out["working set"] += abs(t.working_set_bytes - ws) > t.working_set_error_bytes + slack
        out["cold"] += abs(t.cold_bytes - cold) > t.cold_error_bytes + slack
    return out


@pytest.mark.parametrize("per_page", [False, True], ids=["per-mapping", "per-page"])
def test_errors_bracket_the_truth_at_the_stated_rate_where_regions_end_at_the_hot_edges(per_page):
    """Every region all hot or all cold: what is left to the summary is counting each page
    once, by identity, with the union of the views (per mapping) or the physical view (per
    page)."""
    found = misses(per_page, 0)
    assert max(found.values()) <= ALLOWED, found


def test_matched_by_address_alone_the_unrelated_trees_miss():
    """The same layouts without frames: the idle tree at the same address takes the busy
    tree's use (the test above can fail)."""
    assert misses(False, 0, frames=False)["working set"] > ALLOWED


def test_per_page_errors_bracket_the_truth_at_the_stated_rate_where_regions_straddle_the_hot_edges():
    """Per physical page the views of one memory disagree where their regions straddle the
    hot edge differently, and that spread is in the error, with what the straddlers'
    samples leave unproven (no miss of 300 at seed 27; 9 and 23 with the spread alone)."""
    found = misses(True, JITTER)
    assert max(found.values()) <= ALLOWED, found


def test_per_mapping_errors_bracket_the_truth_at_the_stated_rate_where_regions_straddle_the_hot_edges():
    """Per mapping the union of the views takes the largest overshoot; a lone process' edge
    doubt is only the expected share on the wrong side, but what a straddler's samples
    leave unproven is a bound at ALPHA (exporter.summary.sampling.used_lower), and the error
    holds the larger (3 working-set and 4 cold misses of 300 at seed 27; 119 and 206 with the
    edge doubt alone)."""
    found = misses(False, JITTER)
    assert max(found.values()) <= ALLOWED, found


#: where the second program maps the file (another base, as ASLR puts it)
OTHER_BASE = 0x7E00_0000_0000


def file_layout(rng: random.Random, per_page: bool, jitter: int) -> tuple[list[RegionRecord], list[FileMapping], int, int]:
    """Two unrelated programs, each a parent and readers, map one file at different bases;
    the first program's readers read a hot range of it, the second's read it or not. One
    memory: working set the hot range once, the rest of the file cold."""
    size = rng.randint(16, 256) * MiB
    h0 = rng.randint(0, size // MiB - 8) * MiB
    hot = (h0, min(size, h0 + rng.randint(4, 64) * MiB))
    n1, n2 = rng.randint(1, 6), rng.randint(1, 6)
    mappers = n1 + n2 + 2
    regions = tree(rng, 100, 1, size, hot, True, per_page, jitter, BASE, n1, mappers, seen_used=True)
    regions += tree(rng, 200, 1, size, hot, rng.random() < 0.5, per_page, jitter, OTHER_BASE, n2, mappers,
                    seen_used=True)
    files = [FileMapping(pid, base, base + size, 1, 99, 0)
             for pid, base in [(100 + p, BASE) for p in range(n1 + 1)] + [(200 + p, OTHER_BASE) for p in range(n2 + 1)]]
    return regions, files, hot[1] - hot[0], size - (hot[1] - hot[0])


def file_misses(per_page: bool, jitter: int, files: bool = True) -> dict[str, int]:
    rng = random.Random(28)
    out = {"working set": 0, "cold": 0}
    for _ in range(LAYOUTS):
        regions, mappings, ws, cold = file_layout(rng, per_page, jitter)
        t = summarize_target(TargetRecords("t", tuple(sorted({r.pid for r in regions})), tuple(regions), 0.0,
                                           file_mappings=tuple(mappings) if files else ()),
                             Policy(COLD_AGE, WINDOW), SAMPLE, per_page)
        slack = 4096 * len(regions)
        out["working set"] += abs(t.working_set_bytes - ws) > t.working_set_error_bytes + slack
        out["cold"] += abs(t.cold_bytes - cold) > t.cold_error_bytes + slack
    return out


@pytest.mark.parametrize("jitter", [0, JITTER], ids=["at-the-edges", "straddling"])
@pytest.mark.parametrize("per_page", [False, True], ids=["per-mapping", "per-page"])
def test_errors_bracket_the_truth_at_the_stated_rate_where_programs_map_one_file_at_different_bases(per_page, jitter):
    """The layouts above, but the second program maps the busy program's file at another
    base: matched by file offset, its pages are the busy program's (at seed 28: no miss at
    the edges; straddling, per mapping, 3 working-set and 16 cold misses of 300, the rate
    the model states; per page none)."""
    found = file_misses(per_page, jitter)
    assert max(found.values()) <= ALLOWED, found


def test_matched_by_address_alone_programs_on_one_file_miss():
    """The same layouts without the file mappings: per mapping, the second program's view
    of the hot range stays idle (162 misses of 300: the test above can fail)."""
    assert file_misses(False, 0, files=False)["working set"] > ALLOWED
