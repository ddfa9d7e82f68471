"""Cold memory that comes back: the promotion tracker on hand-made records with an exact
truth, and on the user-space engine over simulated memory on a virtual clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.engines.clear_refs.curves import period_length
from exporter.model.records import Aggregation, RegionRecord, TargetRecords
from exporter.summary import Policy, summarize
from exporter.summary.bands import IDLE_AGE_BUCKETS
from exporter.summary.promotion import PromotionTracker, Promotions
from exporter.summary.sampling import rate_lower, rate_upper

MiB = 1 << 20
A = 0x7F00_0000_0000
AGGR = 1.0  # seconds per aggregation in the hand-made runs


def hot(start_mib, size_mib, pid=1, acc=20):
    s = A + start_mib * MiB
    return RegionRecord(pid, s, s + size_mib * MiB, size_mib * MiB, nr_accesses=acc, nr_checks=20)


def idle(start_mib, size_mib, pid=1, seconds=0.0):
    s = A + start_mib * MiB
    return RegionRecord(pid, s, s + size_mib * MiB, size_mib * MiB, nr_checks=20, idle_seconds=seconds)


def observed(t: TargetRecords, policy: Policy, tracker: PromotionTracker) -> Promotions | None:
    """The tracker fed one aggregation of ``t``, as the sampler feeds it (summarize)."""
    agg = Aggregation("test", t.aggregated_at, 0.1, AGGR, (t,))
    return summarize(agg, policy, tracker).targets[0].promotions


class Run:
    """One target fed aggregation by aggregation, one second apart."""

    def __init__(self, cold_age=20.0):
        self.tracker = PromotionTracker()
        self.policy = Policy(cold_age=cold_age, working_set_window=5.0)
        self.now = 1000.0
        self.last: Promotions | None = None

    def step(self, *regions, n=1):
        for _ in range(n):
            self.now += AGGR
            t = TargetRecords("t", tuple(sorted({r.pid for r in regions})), tuple(regions), self.now)
            self.last = observed(t, self.policy, self.tracker)
        return self.last

    def bucket(self, le):
        return dict(self.last.histogram)[le]


def test_steady_memory_returns_nothing():
    r = Run()
    for _ in range(60):
        p = r.step(hot(0, 64), idle(64, 448, seconds=r.now - 900))
    assert p.promoted_bytes == 0 and p.count == 0 and p.idle_sum == 0


def test_a_region_idle_for_a_minute_counts_once_when_it_comes_back():
    r = Run(cold_age=20.0)
    r.step(hot(0, 64), idle(64, 8, seconds=0.0))
    r.step(hot(0, 64), idle(64, 8, seconds=1.0), n=60)  # idle for 60 more aggregations
    for _ in range(30):  # back, and hot for 30 aggregations: still one return
        p = r.step(hot(0, 64), hot(64, 8))
    assert p.promoted_bytes == 8 * MiB and p.count == 8 * MiB
    # every sample saw the access: 20 of 20 prove 86% of the bytes used (95%), less the
    # share the 1200 checks that found it idle (60 s at 20 a second) leave possible in use
    # unseen (0.25%); the rest is the error
    proven = 8 * MiB * (rate_lower(20, 20) - rate_upper(60 * 20, 0))
    assert p.promoted_error_bytes == pytest.approx(8 * MiB - proven, rel=0.01)
    # the idle time it came back from: 60 s at the last aggregation that saw it idle (a
    # lower bound), in the (30, 60] bucket
    assert r.bucket(30) == 0 and r.bucket(60) == 8 * MiB
    assert p.idle_sum == pytest.approx(60 * 8 * MiB)


def test_short_idleness_is_a_return_but_not_a_promotion():
    r = Run(cold_age=20.0)
    r.step(hot(0, 8))
    r.step(idle(0, 8), n=5)
    p = r.step(hot(0, 8), n=10)
    assert p.promoted_bytes == 0 and p.count == 8 * MiB and r.bucket(5) == 8 * MiB


def test_a_coarse_region_counts_what_its_splits_find_used():
    """448 MiB idle for two minutes; 8 MiB of it comes back. DAMON first sees the whole
    region accessed, then splits it: only the part still accessed after the splits counts."""
    r = Run(cold_age=20.0)
    r.step(hot(0, 64), idle(64, 448), n=120)
    r.step(hot(0, 64), hot(64, 448, acc=1))  # one sample of 20 hit: the whole region reads accessed
    r.step(hot(0, 64), hot(64, 112, acc=4), idle(176, 336))
    r.step(hot(0, 64), hot(64, 28), idle(92, 84), idle(176, 336))
    p = r.step(hot(0, 64), hot(64, 8), idle(72, 20), idle(92, 84), idle(176, 336), n=10)
    assert p.promoted_bytes == pytest.approx(8 * MiB)
    # what went back to idle kept its age: no second return when it is split again
    p = r.step(hot(0, 64), hot(64, 8), idle(72, 440), n=5)
    assert p.promoted_bytes == pytest.approx(8 * MiB)


def test_a_revived_region_that_never_splits_counts_what_its_samples_saw():
    """100 MiB back, 5 of 20 samples seeing the access at every aggregation and DAMON never
    splitting it finer: a quarter comes back, the rest is error (one region cannot tell a
    quarter used all the time from the whole used a quarter of the time)."""
    r = Run(cold_age=20.0)
    r.step(idle(0, 100), n=30)
    p = r.step(hot(0, 100, acc=5), n=10)
    assert p.promoted_bytes == pytest.approx(25 * MiB)
    assert p.promoted_error_bytes == pytest.approx(75 * MiB)


def test_splits_and_merges_of_idle_memory_are_not_returns():
    r = Run()
    r.step(idle(0, 256), n=30)
    r.step(idle(0, 100), idle(100, 156), n=3)
    r.step(idle(0, 50), idle(50, 60), idle(110, 146), n=3)
    p = r.step(idle(0, 256), n=3)
    assert p.count == 0
    # and they kept the memory's idle history: when it comes back, it comes back from 39 s
    p = r.step(hot(0, 256), n=10)
    assert p.promoted_bytes == 256 * MiB and r.bucket(30) == 0 and r.bucket(60) == 256 * MiB


def test_freed_memory_leaves_and_new_memory_is_not_a_return():
    r = Run()
    r.step(idle(0, 256), n=30)
    r.step(idle(0, 128), n=3)  # half unmapped
    p = r.step(hot(0, 128), hot(512, 64), n=10)  # the rest back; new memory faulted in
    assert p.promoted_bytes == 128 * MiB and p.count == 128 * MiB


def test_reclaimed_memory_leaves_the_idle_history():
    """Half of an idle region's pages are reclaimed (its range stays mapped): when the region
    comes back, only the 128 MiB still resident can have returned."""
    r = Run()
    r.step(idle(0, 256), n=30)
    r.step(replace(idle(0, 256), resident_bytes=128 * MiB), n=3)
    p = r.step(replace(hot(0, 256), resident_bytes=128 * MiB), n=10)
    assert p.promoted_bytes == 128 * MiB and p.count == 128 * MiB


def test_a_region_growing_over_idle_memory_at_the_edge_of_use_brackets_no_return():
    """48 MiB in use beside 16 MiB idle for 30 s; then DAMON merges the two into one region
    that reads 15 hits in 20 samples (48/64 of the used part's 20). Nothing came back, and
    the hits prove nothing back: the 48 MiB in use explain them all. The 16 MiB it brought
    in count at the region's frequency (12 MiB) with an error that reaches down to 0."""
    r = Run(cold_age=20.0)
    r.step(hot(0, 48), idle(48, 16), n=30)
    p = r.step(hot(0, 64, acc=15), n=10)
    assert p.promoted_bytes == pytest.approx(12 * MiB)
    assert p.promoted_bytes - p.promoted_error_bytes <= 0


def test_a_region_at_the_edge_of_use_that_comes_back_whole_counts_what_it_proves():
    """The same merge, every sample hit: 64 MiB used where 48 were, so the 16 MiB idle for
    30 s came back, proven as far as 20 hits in 20 checks prove (86% of the region, less
    the 48 MiB in use at the last aggregation) and but for the share the checks that found
    it idle leave possible in use unseen (29 s at 20 checks a second: 0.5%)."""
    r = Run(cold_age=20.0)
    r.step(hot(0, 48), idle(48, 16), n=30)
    p = r.step(hot(0, 64), n=10)
    assert p.promoted_bytes == pytest.approx(16 * MiB)
    proven = 64 * MiB * rate_lower(20, 20) - 48 * MiB - 16 * MiB * rate_upper(29 * 20, 0)
    assert p.promoted_error_bytes == pytest.approx(16 * MiB - max(0, proven), rel=0.01)


def test_hot_pages_a_split_finds_in_a_region_read_idle_bracket_no_return():
    """Steady memory: 64 KiB in use all along inside a region of 16 MiB whose one sampled
    page per interval never landed on them for 30 s (600 checks: up to 0.5% of it, 82 KiB,
    may have been used unseen). A split isolates them, hit at every sample. That proves
    no return: the counter brackets 0."""
    r = Run(cold_age=20.0)
    r.step(hot(16, 64), idle(0, 16), n=30)
    s = A + 64 * 1024
    p = r.step(hot(16, 64), RegionRecord(1, A, s, 64 * 1024, nr_accesses=20, nr_checks=20),
               RegionRecord(1, s, A + 16 * MiB, 16 * MiB - 64 * 1024, nr_checks=20, idle_seconds=31.0), n=10)
    assert p.promoted_bytes > 0  # counted at its frequency, as the samples say
    assert p.promoted_bytes - p.promoted_error_bytes <= 0


def test_hits_go_to_memory_idle_briefly_before_memory_idle_long():
    """24 and 8 MiB idle 55 s; the 24 come back for one aggregation (a promotion) and are
    idle again; 5 s later both come back as one region with 15 of 20 samples hit. The hits
    prove 17 MiB back (15 of 20 prove 54% of the region at 95%), given to the young bytes first (used lately, likelier used again):
    nothing of the old 8 MiB is proven, so its count at the frequency (6 MiB) carries an
    error down to 0. The 24 MiB kept the time they were used, so they are not promoted
    twice."""
    r = Run(cold_age=20.0)
    r.step(idle(0, 24), idle(24, 8), n=55)
    r.step(hot(0, 24), idle(24, 8))
    p = r.step(idle(0, 24), idle(24, 8), n=5)
    # proven as far as 20 hits in 20 checks prove, but for what 54 s of checks that found it
    # idle leave possible in use unseen (0.3%)
    assert p.promoted_bytes == 24 * MiB
    proven = 24 * MiB * (rate_lower(20, 20) - rate_upper(54 * 20, 0))
    assert p.promoted_error_bytes == pytest.approx(24 * MiB - proven, rel=0.02)
    first = p.promoted_error_bytes
    p = r.step(hot(0, 32, acc=15), n=10)
    assert p.promoted_bytes == pytest.approx(30 * MiB)
    assert p.promoted_error_bytes - first == pytest.approx(6 * MiB)
    assert r.bucket(5) == pytest.approx(18 * MiB)  # the young 24 at the frequency


def test_a_process_that_exits_takes_its_pending_returns_with_it():
    r = Run()
    r.step(idle(0, 64, pid=1), idle(0, 64, pid=2), n=30)
    r.step(hot(0, 64, pid=1), hot(0, 64, pid=2))
    p = r.step(hot(0, 64, pid=2), n=10)
    assert p.promoted_bytes == 64 * MiB


def test_targets_that_leave_start_again_from_zero():
    tr = PromotionTracker()
    pol = Policy(20.0, 5.0)

    def step(now, *regions):
        return observed(TargetRecords("t", (1,), tuple(regions), now), pol, tr)

    for i in range(30):
        step(1000.0 + i, idle(0, 8))
    for i in range(10):
        p = step(1030.0 + i, hot(0, 8))
    assert p.promoted_bytes == 8 * MiB
    tr.retain([])
    assert step(1050.0, hot(0, 8)).promoted_bytes == 0


def test_buckets_are_cumulative_and_count_is_the_last():
    r = Run(cold_age=20.0)
    r.step(idle(0, 8), idle(8, 8), n=40)
    r.step(hot(0, 8), idle(8, 8), n=10)
    r.step(idle(0, 8), idle(8, 8), n=3)
    p = r.step(hot(0, 8), hot(8, 8), n=10)
    values = [v for _, v in p.histogram]
    assert values == sorted(values) and p.count == values[-1] == 24 * MiB
    assert [b for b, _ in p.histogram] == list(IDLE_AGE_BUCKETS)
    assert p.promoted_bytes == 16 * MiB  # the 3 s idleness is a return, not a promotion


# -- referenced bytes (clear_refs) ------------------------------------------------------------


def mapping(start_mib, size_mib, referenced_mib, period_start, untouched):
    """A clear_refs record: ``untouched`` = [(seconds, MiB untouched within them)]."""
    s = A + start_mib * MiB
    return RegionRecord(1, s, s + size_mib * MiB, size_mib * MiB,
                        idle_distribution=tuple((sec, int(mib * MiB)) for sec, mib in untouched),
                        period_start=period_start, period_referenced=int(referenced_mib * MiB))


def test_referenced_bytes_first_touches_after_idle_since_the_clear():
    """A 64 MiB mapping, 16 MiB hot. Cleared at 1000 s, 1060 s; 8 MiB cold memory touched
    first at 1040 s (idle since the clear at least: 40 s, the first read at 1000 s proving
    it untouched since) and again right after the next clear (not proven idle: no return)."""
    r = Run(cold_age=20.0)
    r.now = 1000.0
    r.step(mapping(0, 64, 16, 1000.0, [(1, 48)]))
    for _ in range(38):  # 1002..1039
        r.step(mapping(0, 64, 16, 1000.0, [(1, 48)]))
    p = r.step(mapping(0, 64, 24, 1000.0, [(1, 40)]))  # 1040: 8 MiB touched first
    assert p.promoted_bytes == 8 * MiB and dict(p.histogram)[30] == 0 and dict(p.histogram)[60] == 8 * MiB
    for _ in range(19):
        r.step(mapping(0, 64, 24, 1000.0, [(1, 40)]))
    # the clear at 1060: everything touched in the last period is known idle since then only,
    # so the 8 MiB touched again may be the same (no return); what the first aggregation
    # after a clear touches is the memory in use touching itself again, as far as the last
    # period's first aggregation (not seen here: the mapping was new) tells
    p = r.step(mapping(0, 64, 24, 1060.0, [(1, 40)]))
    p = r.step(mapping(0, 64, 24, 1060.0, [(1, 40)]), n=5)
    assert p.promoted_bytes == 8 * MiB


def test_referenced_bytes_first_touched_right_before_a_clear_are_counted():
    """A 64 MiB mapping, 16 MiB hot, cleared at 1000 s and half a second before the
    aggregation at 1040 s; 8 MiB idle since the start are first touched after the
    aggregation at 1039 s, before the clear. Only the engine's last read of the period (right
    before the clear) saw them: that read's count (``closed_referenced``) proves them back,
    40 s after the clear, as if an aggregation had seen them."""
    r = Run(cold_age=20.0)
    r.now = 1000.0
    for _ in range(40):  # 1001..1040
        p = r.step(mapping(0, 64, 16, 1000.0, [(1, 48)]))
    assert p.promoted_bytes == 0
    p = r.step(replace(mapping(0, 64, 16, 1040.5, [(0.5, 48)]), closed_referenced=24 * MiB))
    assert p.promoted_bytes == 8 * MiB and p.promoted_error_bytes == 0
    assert dict(p.histogram)[30] == 0 and dict(p.histogram)[60] == 8 * MiB
    p = r.step(mapping(0, 64, 16, 1040.5, [(1, 48)]), n=10)  # and once only
    assert p.promoted_bytes == 8 * MiB


def test_referenced_bytes_steady_is_nothing():
    r = Run(cold_age=20.0)
    clears = [1000.0 + 30 * k for k in range(6)]
    for now in range(1001, 1180):
        period = max(c for c in clears if c <= now)
        p = r.step(mapping(0, 64, 16, period, [(1, 48)]))
    # the hot 16 MiB is touched again in the first aggregation after each clear: not proven
    # idle at the aggregation before, so no return; the cold 48 MiB is never touched
    assert p.promoted_bytes == 0


def test_referenced_bytes_steady_with_clears_between_aggregations_is_nothing():
    """As above, but each clear lands half a second before an aggregation, so the hot
    16 MiB's first touches after it fall in two aggregations: 8 MiB in the half second, the
    rest in the next. Neither is a return (nothing was proven idle, so nothing is counted),
    but the second 8 MiB are doubt: any of them could have been a cold byte back, which
    smaps cannot tell. Only the aggregation that holds the clear is taken for the memory in
    use touching itself (the engine clears a sample interval before an aggregation, so that
    this holds it all for memory used every sample interval)."""
    r = Run(cold_age=20.0)
    clears = [1000.5 + 30 * k for k in range(6)]
    r.now = 1001.0
    for now in range(1002, 1180):  # from a first read that saw the hot 16 MiB touched
        period = max(c for c in clears if c <= now)
        hot_touched = 8 if now - period < 1 else 16
        p = r.step(mapping(0, 64, hot_touched, period, [(1, 64 - hot_touched)]))
    assert p.promoted_bytes == 0 and p.count == 0
    assert p.promoted_error_bytes == 8 * MiB * 5  # the clears at 1030.5 .. 1150.5


def chunk_returns(cold_age: float, period: float, every: float, seconds: int, warm_every: float = 0.0):
    """A 512 MiB mapping, 64 MiB hot (touched again at once after each clear); from 100 s
    on, a fresh 8 MiB chunk idle since the start comes back every ``every`` seconds (or, with
    ``warm_every``, the same 8 MiB is touched again every ``warm_every`` seconds); clears
    every ``period`` s, stretched as the engine stretches them. Returns the promotions and the truth (bytes back after >= cold_age)."""
    r = Run(cold_age=cold_age)
    r.now = 1000.0
    first_touch: dict[int, float] = {}  # chunk -> first touch time since the clear
    p = None
    truth = 0.0
    clears, n = [0.0], 1
    while clears[-1] < seconds:  # as the engine clears: aperiodically
        clears.append(clears[-1] + round(period_length(period, n)))
        n += 1
    for t in range(seconds):
        now = 1000.0 + t
        cleared = 1000.0 + max(c for c in clears if c <= t)
        if now == cleared:
            first_touch = {}
        if t >= 100:
            if warm_every and (t - 100) % warm_every == 0:
                first_touch.setdefault(0, now)
            elif not warm_every and (t - 100) % every == 0:
                k = 1 + (t - 100) // every
                first_touch.setdefault(k, now)
                truth += 8 * MiB
        referenced = 64 + 8 * len(first_touch)
        p = r.step(mapping(0, 512, referenced, cleared, [(1, 512 - referenced)]))
    return p, truth


@pytest.mark.parametrize("every", [5, 7, 10, 13, 20, 30, 90])
def test_referenced_bytes_returns_within_a_quarter_at_twice_cold_age(every):
    """Chunks coming back every ``every`` s, cold_age 20 s, clears 40 to 60 s apart (the
    engine's period): the part of each period past cold_age proves its returns, the part
    before is estimated at the rate they were proved at; the truth lies within the error."""
    p, truth = chunk_returns(20.0, 40, every, 1000)
    assert abs(p.promoted_bytes - truth) <= 0.25 * truth, (p.promoted_bytes / MiB, truth / MiB)
    assert p.promoted_bytes - p.promoted_error_bytes <= truth <= p.promoted_bytes + p.promoted_error_bytes


@pytest.mark.parametrize("every", [40, 45, 50, 55, 60])
def test_referenced_bytes_returns_on_the_clear_rhythm_stay_within_the_error(every):
    """Returns on a rhythm close to the clear period's fall at a slowly drifting phase of
    each period, often before cold_age where nothing is proved: counted short (down to 0.69
    of the truth measured), never over. The error brackets all but the returns that fall in
    the first aggregation after a clear, which are taken for the memory in use."""
    p, truth = chunk_returns(20.0, 40, every, 2000)
    assert 0.6 * truth <= p.promoted_bytes <= 1.05 * truth, (p.promoted_bytes / MiB, truth / MiB)
    assert p.promoted_bytes + p.promoted_error_bytes >= 0.95 * truth


@pytest.mark.parametrize("warm_every", [5, 15])
def test_referenced_bytes_warm_memory_is_no_return(warm_every):
    """The same 8 MiB touched every few seconds (under cold_age) after its one return at
    100 s: its first touch after each clear comes before cold_age, so once the periods that
    proved the first return have passed, nothing more is estimated."""
    p, _ = chunk_returns(20.0, 40, 0, 400, warm_every=warm_every)
    assert 8 * MiB <= p.promoted_bytes <= 8 * MiB + p.promoted_error_bytes
    later, _ = chunk_returns(20.0, 40, 0, 800, warm_every=warm_every)
    assert later.promoted_bytes == p.promoted_bytes


# -- the user-space engine on simulated memory ------------------------------------------------


@pytest.mark.slow  # minutes of simulated monitoring
@pytest.mark.parametrize("attrs, duration, gap, tolerance", [
    ((0.005, 0.1), 4.0, 10.0, 0.25),  # page_idle's VM-test attributes: returns of a few seconds
    ((0.005, 2.0), 10.0, 20.0, 0.25),  # kernel DAMON's own defaults
    ((0.5, 10.0), 30.0, 40.0, 0.40),  # the exporter's defaults: returns of three aggregations
], ids=["100ms", "2s", "defaults"])
@pytest.mark.parametrize("seed", range(2))
def test_engine_counts_revived_chunks(attrs, duration, gap, tolerance, seed):
    """512 MiB, 64 hot; from 60 s on, the cold rest comes back 8 MiB at a time (six chunks,
    each idle since the start) for ``duration`` seconds every ``gap``: the counter grows by
    the revived bytes, nothing before the first return, every return above cold_age."""
    from exporter.engines.page_idle.ops_simulated import HotRange
    from exporter.model.attrs import MonitoringAttrs
    from tests.support.simulation import BASE, aggregations, make_monitor, process_with_buffer

    chunks = [(1060.0 + gap * k, BASE + (128 + 8 * k) * MiB) for k in range(6)]
    hots = [HotRange(BASE, BASE + 64 * MiB)] + [HotRange(a, a + 8 * MiB, active_from=t0, active_until=t0 + duration)
                                               for t0, a in chunks]
    mon, _, clk = make_monitor({1: process_with_buffer(512 * MiB, hots)}, MonitoringAttrs(*attrs, 60.0, 10, 100),
                               seed=seed, cold_age=20.0, working_set_window=5.0)
    early = None
    for snap in aggregations(mon, int((60 + 6 * gap + 3 * duration) / attrs[1])):
        p = snap.target("t").promotions
        if clk() < 1059:
            early = p.promoted_bytes
    assert early == 0
    truth = 6 * 8 * MiB
    assert abs(p.promoted_bytes - truth) <= tolerance * truth, (p.promoted_bytes / MiB, p.promoted_error_bytes / MiB)
    assert abs(p.promoted_bytes - truth) <= p.promoted_error_bytes + 0.1 * truth
    # the histogram puts them above cold_age: what is above 10 s is the counter, within a
    # quarter of the truth (returns from 10-20 s of idleness: regions flickering at the edges)
    above_10s = p.count - dict(p.histogram)[10]
    assert p.promoted_bytes - 1 <= above_10s <= p.promoted_bytes + 0.25 * truth


@pytest.mark.slow  # minutes of simulated monitoring
@pytest.mark.parametrize("attrs", [(0.005, 0.1), (0.005, 2.0), (0.5, 10.0)], ids=["100ms", "2s", "defaults"])
def test_engine_steady_memory_promotes_nothing(attrs):
    from exporter.engines.page_idle.ops_simulated import HotRange
    from exporter.model.attrs import MonitoringAttrs
    from tests.support.simulation import BASE, aggregations, make_monitor, process_with_buffer

    mon, _, _ = make_monitor({1: process_with_buffer(512 * MiB, [HotRange(BASE, BASE + 64 * MiB)])},
                             MonitoringAttrs(*attrs, 60.0, 10, 100), seed=1, cold_age=20.0, working_set_window=5.0)
    for snap in aggregations(mon, int(200 / attrs[1])):
        p = snap.target("t").promotions
    assert p.promoted_bytes <= p.promoted_error_bytes + 1 * MiB
