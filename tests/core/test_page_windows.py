"""Page windows (exporter/engines/page_idle/windows.py): the used share of regions whose pages
are not used alike, against an exact ground truth (simulated memory), and the estimator's
parts on their own."""

from __future__ import annotations

import random

import pytest

from exporter.engines.page_idle.ops_simulated import HotRange
from exporter.engines.page_idle.monitor import WINDOWS_PER_HORIZON
from exporter.engines.page_idle.windows import MIN_STRATUM_PAGES, WINDOW_PAGES, allocate, draw, stratum
from exporter.summary.sampling import ALPHA, share_bounds
from tests.support.simulation import BASE, MiB, STACK, TEXT, aggregations, make_monitor, process_with_buffer
from tests.vm.tolerance import FALSE_FAILURE, allowed_misses

WINDOW = 4.0
COLD = 8.0
PAGE = 4096


@pytest.mark.parametrize("density", [0.1, 0.3, 0.7])
def test_a_scattered_hot_set_is_measured_by_its_pages_not_its_regions(density):
    # 256 MiB whose used pages are scattered over the first 192 MiB at ``density``: every
    # region there holds used pages, so one sampled page per region and interval finds
    # all of them hit and counts them whole (the figure without windows: 192 MiB)
    hot = HotRange(BASE, BASE + 192 * MiB, density=density)
    proc = process_with_buffer(256 * MiB, [hot])
    mon, _, _ = make_monitor({1: proc}, seed=7, cold_age=COLD, working_set_window=WINDOW, windows=True)
    resident = 256 * MiB + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    truth = proc.hot_bytes(0.0)
    assert abs(truth - density * 192 * MiB) < 0.01 * 192 * MiB
    judged = ws_misses = cold_misses = 0
    for i, snap in enumerate(aggregations(mon, 30), start=1):
        t = snap.target("t")
        if i <= 4:  # the first windows of both horizons have not been read yet
            continue
        judged += 1
        ws_misses += abs(t.working_set_bytes - truth) > t.working_set_error_bytes
        cold_misses += abs(t.cold_bytes - (resident - truth)) > t.cold_error_bytes
        # ~1024 pages per window: off by at most ~2.6% of resident at the 95% bound
        assert abs(t.working_set_bytes - truth) <= 0.05 * resident, (i, t.working_set_bytes, truth)
        assert t.working_set_error_bytes <= 0.05 * resident
    # each aggregation's error covers the truth at 1 - ALPHA; windows overlap, so these are
    # not independent draws: the allowance is for independent ones, at FALSE_FAILURE
    k = allowed_misses(judged)
    assert ws_misses <= k and cold_misses <= k, (ws_misses, cold_misses, k)


def test_a_figure_from_a_window_is_dated_by_its_read():
    proc = process_with_buffer(64 * MiB, [HotRange(BASE, BASE + 16 * MiB, density=0.5)])
    mon, _, clk = make_monitor({1: proc}, seed=1, cold_age=COLD, working_set_window=WINDOW, windows=True)
    snaps = list(aggregations(mon, 8))
    t = snaps[-1].target("t")
    assert snaps[-1].taken_at - WINDOW / 2 - 2.0 <= t.working_set_measured_at <= snaps[-1].taken_at
    assert t.cold_measured_at <= snaps[-1].taken_at and t.cold_known


def test_allocation_follows_resident_bytes_and_sparse_regions_get_more():
    full = (0, 64 * MiB, 64 * MiB)
    sparse = (64 * MiB, 128 * MiB, 4 * MiB)  # 1/16 resident: drawn as densely per page present
    empty = (128 * MiB, 130 * MiB, 0)
    tiny = (130 * MiB, 130 * MiB + 2 * PAGE, PAGE)
    n = allocate([full, sparse, empty, tiny], total=1024)
    assert n[2] == 0 and n[3] == 2  # at least MIN_STRATUM_PAGES, at most all it has
    assert n[0] == n[1] == 512
    # no region gets more pages than it has
    assert allocate([(0, 4 * PAGE, 4 * PAGE)], total=1024) == [4]


def test_draw_is_distinct_pages_of_the_region():
    rng = random.Random(3)
    got = draw(BASE, BASE + 100 * PAGE, 30, rng)
    assert len(set(got)) == 30 and got == sorted(got)
    assert all(BASE <= a < BASE + 100 * PAGE and a % PAGE == 0 for a in got)
    assert draw(BASE, BASE + 3 * PAGE, 5, rng) == [BASE, BASE + PAGE, BASE + 2 * PAGE]


def test_stratum_weighs_pages_by_their_share():
    s = stratum(1, 0, 10 * PAGE, 10 * PAGE, [(True, 1.0), (False, 1.0), (None, 0.0), (True, 0.5), (False, 0.0)])
    # used: 1 + 0.5 of weights 1 + 1 + 0.5; Kish: 2.5^2 / 2.25 = 2.78 -> 3 pages
    assert s.accessed_share == pytest.approx(1.5 / 2.5)
    assert s.pages == 3
    assert stratum(1, 0, PAGE, PAGE, [(None, 0.0)]).pages == 0
    # drawn among the 40 present pages: resident is 40 pages at the mean share of those read
    # (the zero page's 0 included: it is nobody's memory), not the sampled residency passed
    s = stratum(1, 0, 100 * PAGE, 7 * PAGE, [(True, 1.0), (False, 0.5), (False, 0.0), (None, 0.0)], present=40)
    assert s.resident_bytes == round(40 * PAGE * 1.5 / 3)


def test_share_bounds_cover_the_truth_at_the_stated_rate():
    # strata of random sizes and used shares, n pages each: the interval [point - below,
    # point + above] must hold the truth in at least 1 - ALPHA of the draws; the test allows
    # the misses the binomial tail gives at that rate (false failure below FALSE_FAILURE)
    rng = random.Random(11)
    trials, misses = 400, 0
    for _ in range(trials):
        parts, truth = [], 0.0
        for _ in range(rng.randint(1, 30)):
            b, p, n = rng.randint(1, 100) * MiB, rng.choice([0.0, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0]), rng.randint(1, 60)
            k = sum(rng.random() < p for _ in range(n))
            parts.append((b, k / n, n))
            truth += b * p
        point, below, above = share_bounds(parts)
        misses += not (point - below <= truth <= point + above)
    assert misses <= allowed_misses(trials, ALPHA, FALSE_FAILURE), misses


def test_a_stratum_nothing_could_be_read_of_is_all_doubt():
    # it counts at the others' share (3/4), and may be anything from 0 to all of it
    point, below, above = share_bounds([(10 * MiB, 0.0, 0), (4 * MiB, 0.75, 200)])
    assert point == pytest.approx(7.5 * MiB + 3 * MiB)
    assert 7.5 * MiB < below < 7.5 * MiB + 0.2 * 4 * MiB
    assert 2.5 * MiB < above < 2.5 * MiB + 0.2 * 4 * MiB
    # nothing known at all: half, give or take half
    assert share_bounds([(MiB, 0.0, 0)]) == (MiB / 2, MiB / 2, MiB / 2)


def test_every_aggregation_publishes_a_window_read_then_when_steps_run_late():
    # real steps end a little after their sample interval (the checks take time): windows
    # must still be read at every aggregation, each a horizon old, not skipped for lateness
    proc = process_with_buffer(64 * MiB, [HotRange(BASE, BASE + 16 * MiB, density=0.5)])
    mon, _, clk = make_monitor({1: proc}, seed=2, cold_age=COLD, working_set_window=WINDOW, windows=True)
    sleep = clk.sleep
    clk.sleep = lambda s: sleep(s * 1.013)  # noqa: E731
    mon.sleep = clk.sleep
    measured = []
    for snap in aggregations(mon, 20):
        t = snap.target("t")
        measured.append((snap.taken_at, t.working_set_measured_at, t.cold_measured_at))
    for taken, ws_at, cold_at in measured[5:]:
        assert ws_at == taken and cold_at == taken, measured


def test_an_all_cold_target_is_cold_within_what_its_pages_prove():
    # none of a window's ~1024 pages used: that bounds the used share by a few per mille per
    # stratum (rate_upper(n, 0) at ALPHA / 2, about 3.7 / n), combined over the strata; it
    # does not prove 0, and the errors say so
    mon, _, _ = make_monitor({1: process_with_buffer(1024 * MiB)}, seed=1, cold_age=COLD, working_set_window=WINDOW,
                             windows=True)
    t = list(aggregations(mon, 10))[-1].target("t")
    assert t.working_set_bytes == 0 and t.cold_bytes == t.resident_bytes
    assert 0 < t.working_set_error_bytes <= 0.03 * t.resident_bytes
    assert 0 < t.cold_error_bytes <= 0.03 * t.resident_bytes


def test_the_pages_open_windows_hold_per_target_are_bounded():
    # what a target's open windows hold (and the ops set keeps per watched page) is bounded
    # by the horizons, not by how long the exporter runs: at most WINDOWS_PER_HORIZON + 1
    # windows per horizon, each about WINDOW_PAGES plus the regions' minimums
    procs = {pid: process_with_buffer(64 * MiB, [HotRange(BASE, BASE + 8 * MiB, density=0.3)]) for pid in (1, 2, 3)}
    mon, ops, _ = make_monitor(procs, seed=5, cold_age=COLD, working_set_window=WINDOW, windows=True)
    live: dict[int, int] = {}
    opened = ops.open_window
    closed = ops.close_window

    def open_window(ref, addrs):
        handle = opened(ref, addrs)
        live[id(handle)] = len(addrs)
        return handle

    def close_window(handle):
        live.pop(id(handle))
        closed(handle)

    ops.open_window, ops.close_window = open_window, close_window
    regions = mon.attrs.max_regions * len(procs)
    bound = 2 * (WINDOWS_PER_HORIZON + 1) * (WINDOW_PAGES + (MIN_STRATUM_PAGES + 1) * regions)
    most = 0
    for _ in aggregations(mon, 60):
        most = max(most, sum(live.values()))
        assert sum(live.values()) <= bound
    assert most > 0  # (a process that goes releases its windows in the ops set: forget)
