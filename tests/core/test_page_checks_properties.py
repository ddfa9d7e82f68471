"""Windows of page checks on simulated memory: the published error covers the truth at the
stated rate (95%) over many random layouts, scattered and contiguous.

Each layout is one independent trial: a buffer of random size whose used pages are scattered
over it (single pages, or short runs, at a random density) or lie in one to three contiguous
ranges; every used page is used in every sample interval, the rest never, so the truth over
any window is exact. After the windows have completed, one summary per layout is judged:
``|working set - truth| <= published error`` and the same for cold bytes. With 95% coverage
per trial the misses among ``TRIALS`` are at most Binomial(TRIALS, 0.05); ``ALLOWED_MISSES``
is the smallest count that this exceeds with probability under 0.1% (the test's
false-failure rate), computed from the binomial tail below rather than chosen by a run.
"""

from __future__ import annotations

import math
import random

import pytest

from exporter.engines.page_idle.ops_simulated import HotRange
from exporter.model.attrs import MonitoringAttrs, PAGE_SIZE
from exporter.summary.page_checks import stretch_variance

from tests.support.simulation import BASE, MiB, aggregations, make_monitor, process_with_buffer

TRIALS = 60
COVERAGE = 0.95
FALSE_FAILURE = 0.001
WINDOW = 6.0
COLD = 10.0
ATTRS = MonitoringAttrs(sample_interval=0.1, aggregation_interval=2.0, update_interval=10.0,
                        min_regions=10, max_regions=100)


def _binomial_sf(k: int, n: int, p: float) -> float:
    """P(X > k), X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1, n + 1))


ALLOWED_MISSES = next(k for k in range(TRIALS) if _binomial_sf(k, TRIALS, 1 - COVERAGE) < FALSE_FAILURE)


def _layout(rng: random.Random):
    """(process, truth working set bytes, kind) for one random layout."""
    pages = rng.randrange(64, 384) * MiB // PAGE_SIZE
    size = pages * PAGE_SIZE
    kind = rng.choice(["pages", "runs", "ranges"])
    if kind == "ranges":
        hot = []
        for _ in range(rng.randint(1, 3)):
            a = rng.randrange(pages)
            b = min(pages, a + rng.randrange(1, pages // 4))
            hot.append((a, b))
        used = set()
        for a, b in hot:
            used.update(range(a, b))
        ranges = [HotRange(BASE + a * PAGE_SIZE, BASE + b * PAGE_SIZE) for a, b in hot]
        proc = process_with_buffer(size, ranges)
    else:
        density = rng.uniform(0.01, 0.7)
        run = 1 if kind == "pages" else rng.randint(2, 32)
        used = set()
        for start in range(0, pages, run):
            if rng.random() < density:
                used.update(range(start, min(pages, start + run)))
        proc = process_with_buffer(size, hot_pages=frozenset(BASE + i * PAGE_SIZE for i in used))
    return proc, len(used) * PAGE_SIZE, kind


def test_the_binomial_tail_gives_the_allowed_misses():
    assert ALLOWED_MISSES == 9  # Binomial(60, 0.05) exceeds 9 with probability 0.07%
    assert _binomial_sf(ALLOWED_MISSES, TRIALS, 0.05) < FALSE_FAILURE <= _binomial_sf(ALLOWED_MISSES - 1, TRIALS, 0.05)


def test_a_stretch_checked_whole_is_exact_and_extremes_are_not_certain():
    assert stretch_variance(1e6, 16, 16, 16) == 0.0
    assert stretch_variance(1e6, 0, 16, 10_000) > 0.0 and stretch_variance(1e6, 16, 16, 10_000) > 0.0


def test_published_error_covers_the_truth_over_random_layouts():
    misses = {"working_set": [], "cold": []}
    widths = []
    for seed in range(TRIALS):
        proc, truth_ws, kind = _layout(random.Random(seed))
        mon, _, _ = make_monitor({1: proc}, ATTRS, seed=seed, cold_age=COLD, working_set_window=WINDOW)
        snaps = list(aggregations(mon, 8))  # 16 s: the cold windows (10 s) have been read
        t = snaps[-1].target("t")
        other = t.resident_bytes - proc.resident_in(BASE, BASE + (proc.mappings[1][1] - BASE))
        truth_cold = t.resident_bytes - truth_ws
        # the text and stack mappings are resident and never used: cold, out of the working set
        assert other > 0
        if abs(t.working_set_bytes - truth_ws) > t.working_set_error_bytes:
            misses["working_set"].append((seed, kind, t.working_set_bytes, truth_ws, t.working_set_error_bytes))
        if abs(t.cold_bytes - truth_cold) > t.cold_error_bytes:
            misses["cold"].append((seed, kind, t.cold_bytes, truth_cold, t.cold_error_bytes))
        widths.append(t.working_set_error_bytes / t.resident_bytes)
    assert len(misses["working_set"]) <= ALLOWED_MISSES, misses
    assert len(misses["cold"]) <= ALLOWED_MISSES, misses
    # and the interval says something: on average under a tenth of the resident bytes
    assert sum(widths) / len(widths) < 0.10, widths


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_scattered_hot_pages_are_not_counted_whole(density):
    """The failure of one sample per region: every region holds some used pages, so every
    region is hit and counted whole; the page checks count the used share."""
    rng = random.Random(5)
    pages = 256 * MiB // PAGE_SIZE
    used = frozenset(BASE + i * PAGE_SIZE for i in range(pages) if rng.random() < density)
    proc = process_with_buffer(256 * MiB, hot_pages=used)
    mon, _, _ = make_monitor({1: proc}, ATTRS, seed=1, cold_age=COLD, working_set_window=WINDOW)
    t = list(aggregations(mon, 8))[-1].target("t")
    truth = len(used) * PAGE_SIZE
    assert abs(t.working_set_bytes - truth) <= t.working_set_error_bytes
    assert t.working_set_error_bytes < 0.05 * t.resident_bytes
