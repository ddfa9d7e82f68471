"""The referenced-bytes engine's bookkeeping against a simulated smaps source.

The simulation keeps, per page, the time of its last access and the time of the last clear,
and answers smaps the way the kernel does: Referenced = resident pages touched since the
last clear. Mappings appear, grow, shrink and vanish between reads. The ground truth of
"idle for at least s" is then exact, page by page.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.engines.clear_refs.engine import ReferencedBytesEngine
from exporter.model.errors import ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.parsers import SmapsEntry
from exporter.engines.page_idle.ops_simulated import VirtualClock
from exporter.summary import Policy, summarize
from exporter.summary.stat import idle_at_least

PAGE = 4096
MiB = 1 << 20
REF = ProcessRef(1)


class SimSmaps:
    """Pages of one process: {mapping start: [last access time per page]}; -inf = never."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.maps: dict[int, list[float]] = {}
        self.cleared_at = -1.0
        self.clears = 0
        self.gone = False
        #: {mapping start: page tables mapping each of its pages}, where more than one
        self.mappers: dict[int, int] = {}

    def add(self, start: int, pages: int) -> None:
        self.maps[start] = [self.clock()] * pages  # faulting a page in touches it

    def touch(self, start: int, lo: int, hi: int) -> None:
        t = self.clock()
        pages = self.maps[start]
        for i in range(lo, min(hi, len(pages))):
            pages[i] = t

    # -- SmapsSource -----------------------------------------------------------------------

    def clear(self, proc: ProcessRef) -> None:
        if self.gone:
            raise ProcessGone("gone")
        self.cleared_at = self.clock()
        self.clears += 1

    def read(self, proc: ProcessRef) -> list[SmapsEntry]:
        if self.gone:
            raise ProcessGone("gone")
        out = []
        for start, pages in sorted(self.maps.items()):
            ref = sum(1 for t in pages if t >= self.cleared_at)
            rss = len(pages) * PAGE
            n = self.mappers.get(start, 1)
            # shared by n: Pss counts each page 1/n, and none of them is private
            share = (rss // n, 0) if n > 1 else ()
            out.append(SmapsEntry(start, start + rss, rss, ref * PAGE, rss, *share))
        return out

    def probe(self, proc: ProcessRef) -> None:
        if self.gone:
            raise ProcessGone("gone")

    def forget(self, proc: ProcessRef) -> None:
        pass

    def frames(self, proc: ProcessRef, addrs: list[int]) -> list[int] | None:
        return None  # a simulation has no frames: identity unknown

    def maps_text(self, proc: ProcessRef) -> bytes | None:
        return None  # nor file mappings

    def activity(self, proc: ProcessRef) -> object | None:
        """The process runs exactly when it touches a page: the latest touch stands for its
        threads' run time (unchanged between two reads: it did not run in between)."""
        return max((max(pages) for pages in self.maps.values() if pages), default=None), len(self.maps)

    def close(self) -> None:
        pass

    # -- truth -----------------------------------------------------------------------------

    def idle_at_least(self, seconds: float, watched_since: float) -> int:
        """Bytes whose last access is at least ``seconds`` ago, as seen by an observer who
        started watching at ``watched_since`` (a page cannot be known idle for longer)."""
        now = self.clock()
        return PAGE * sum(1 for pages in self.maps.values() for t in pages if now - max(t, watched_since) >= seconds)


def make(horizons=(4.0, 8.0), aggr=1.0):
    clk = VirtualClock()
    src = SimSmaps(clk)
    eng = ReferencedBytesEngine(src, MonitoringAttrs(0.25, aggr, 10.0, 3, 10), clock=clk, wall_clock=clk, sleep=clk.sleep)
    eng.set_horizons(horizons)
    return clk, src, eng


def run(eng, src, seconds, workload=None):
    """Step the engine for ``seconds``, calling ``workload()`` every tick; yield aggregations."""
    end = src.clock() + seconds
    while src.clock() < end:
        if workload:
            workload()
        agg = eng.step()
        if agg is not None:
            yield agg


def test_steady_pattern_is_exact_once_a_period_has_passed():
    clk, src, eng = make()
    src.add(0x10000000, 512)  # 2 MiB "heap", one mapping
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)
    hot = lambda: src.touch(0x10000000, 0, 64)  # noqa: E731 - 64 pages hot, the rest cold
    aggs = list(run(eng, src, 30, hot))
    for agg in aggs[9:]:  # from the end of the first period on, every aggregation
        t = summarize(agg, policy).target("t")
        assert t.resident_bytes == 512 * PAGE
        assert t.working_set_bytes == 64 * PAGE
        assert t.cold_bytes == 448 * PAGE
    assert src.clears == 4  # once per 8 s period (30 s), not once per sample


def test_a_mapping_shared_by_four_counts_a_quarter_of_every_figure():
    """smaps counts a page four processes map whole in Rss and Referenced, and a quarter in
    Pss: the records count it by share, as every engine does. Every page of the mapping is
    shared alike, so the Pss/Rss scaling is exact: a quarter of the steady pattern's figures."""
    clk, src, eng = make()
    src.add(0x10000000, 512)
    src.mappers[0x10000000] = 4
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)
    hot = lambda: src.touch(0x10000000, 0, 64)  # noqa: E731
    aggs = list(run(eng, src, 30, hot))
    for agg in aggs[9:]:
        t = summarize(agg, policy).target("t")
        assert t.resident_bytes == 128 * PAGE
        assert t.working_set_bytes == 16 * PAGE
        assert t.cold_bytes == 112 * PAGE


def test_nothing_is_idle_longer_than_it_was_watched():
    clk, src, eng = make()
    src.add(0x10000000, 100)
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)
    for agg in run(eng, src, 7.9):
        t = summarize(agg, policy).target("t")
        assert t.cold_bytes == 0  # watched for less than cold_age: nothing is cold yet
    t = summarize(list(run(eng, src, 1.0))[-1], policy).target("t")
    assert t.cold_bytes == 100 * PAGE


def test_last_exact_figure_is_kept_between_points_and_says_how_old_it_is():
    clk, src, eng = make(horizons=(4.0, 8.0))
    src.add(0x10000000, 100)
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)
    list(run(eng, src, 8.0, lambda: src.touch(0x10000000, 0, 100)))  # first period: all hot
    # the hot set shrinks to 10 pages. Until 4 s into the new period nothing proves the
    # other 90 idle for 4 s: the published working set is the previous period's exact one,
    # measured ~4 s after its clear, and says so
    agg = list(run(eng, src, 2.0, lambda: src.touch(0x10000000, 0, 10)))[-1]
    t = summarize(agg, policy).target("t")
    assert t.working_set_bytes == 100 * PAGE
    assert t.aggregated_at - t.working_set_measured_at >= 4.0
    agg = list(run(eng, src, 3.0, lambda: src.touch(0x10000000, 0, 10)))[-1]
    t = summarize(agg, policy).target("t")
    assert t.working_set_bytes == 10 * PAGE  # exact for the new period
    assert t.aggregated_at - t.working_set_measured_at < 1.5


def test_a_growing_pattern_shows_at_once():
    """The other way round, what the current period already saw touched is in the working
    set at once: the previous period's figure is a bound, never a cap on what is seen."""
    clk, src, eng = make(horizons=(4.0, 8.0))
    src.add(0x10000000, 100)
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)
    list(run(eng, src, 8.3, lambda: src.touch(0x10000000, 0, 10)))
    agg = list(run(eng, src, 2.0, lambda: src.touch(0x10000000, 0, 100)))[-1]
    assert summarize(agg, policy).target("t").working_set_bytes == 100 * PAGE


def moving(src, start, pages, step):
    """A workload touching ``step`` new pages of ``pages`` at every tick, cyclically."""
    pos = [0]

    def touch() -> None:
        src.touch(start, pos[0], pos[0] + step)
        pos[0] = (pos[0] + step) % pages
    return touch


def test_a_foreign_clear_is_counted_per_target_every_time_and_is_no_error():
    """Another writer clears the bits every 3 s for a minute: every clear is counted (each
    read after one finds Referenced down by the ~600 pages touched since the read before),
    none reaches damon_sampler_errors_total, and we restart from a clear of our own."""
    clk, src, eng = make()
    src.add(0x10000000, 1000)
    eng.set_targets([TargetSpec("t", (REF,))])
    work = moving(src, 0x10000000, 1000, 50)
    aggs = list(run(eng, src, 2.6, work))
    ours = src.clears
    foreign = 0
    for _ in range(20):
        src.cleared_at = clk()  # someone else writes clear_refs
        foreign += 1
        aggs += list(run(eng, src, 3.0, work))
    assert aggs[-1].targets[0].accessed_bits_resets == foreign
    assert aggs[-1].stats.errors_total == ()
    assert src.clears - ours >= foreign  # a fresh, known start after each


def test_freed_memory_is_no_foreign_clear():
    """Referenced also drops where referenced pages leave the mapping (munmap, MADV_DONTNEED,
    reclaim), by no more than Rss drops: that is no one clearing the bits. A buffer that
    shrinks by 200 referenced pages, five times, counts no reset."""
    clk, src, eng = make()
    src.add(0x10000000, 2000)
    eng.set_targets([TargetSpec("t", (REF,))])
    aggs = list(run(eng, src, 2.6, lambda: src.touch(0x10000000, 0, 2000)))
    ours = src.clears
    for _ in range(5):
        del src.maps[0x10000000][-200:]  # the top 200 pages, all referenced, are freed
        aggs += list(run(eng, src, 1.0, lambda: src.touch(0x10000000, 0, 2000)))
    assert src.clears == ours  # no restart: nothing was taken for someone else's clear
    assert aggs[-1].targets[0].accessed_bits_resets == 0
    assert aggs[-1].targets[0].regions[0].resident_bytes == 1000 * PAGE


def test_after_a_foreign_clear_nothing_from_before_it_is_published_as_known():
    """What the erased bits said is unknown: until the restarted period reaches a horizon,
    the bytes it has not seen touched are in that figure's error, never called idle or
    outside the working set on the strength of the periods before the gap."""
    clk, src, eng = make(horizons=(4.0, 8.0))
    src.add(0x10000000, 1000)
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)
    list(run(eng, src, 20.0, lambda: src.touch(0x10000000, 0, 100)))  # 100 hot, 900 cold
    # 500 more touched, for an aggregation: the engine has read them when the bits go
    list(run(eng, src, 1.0, lambda: src.touch(0x10000000, 0, 600)))
    src.cleared_at = clk()  # someone else clears: that the 500 were touched is erased
    agg = list(run(eng, src, 1.0, lambda: src.touch(0x10000000, 0, 100)))[-1]
    t = summarize(agg, policy).target("t")
    assert agg.targets[0].accessed_bits_resets == 1
    truth_ws, truth_cold = 600 * PAGE, 400 * PAGE  # touched within 4 s; idle for 8 s
    assert t.working_set_bytes <= truth_ws <= t.working_set_bytes + t.working_set_error_bytes
    assert t.cold_bytes <= truth_cold <= t.cold_bytes + t.cold_error_bytes
    assert not t.cold_known
    # once the restarted period has reached both horizons the figures are right again, and
    # known: the errors are only what the reads cannot tell between clears (the 100 hot
    # pages were first touched before the window: touched within it, or not, the reads
    # cannot say; a steady pattern says they were)
    t = summarize(list(run(eng, src, 8.5, lambda: src.touch(0x10000000, 0, 100)))[-1], policy).target("t")
    assert (t.working_set_bytes, t.cold_bytes) == (100 * PAGE, 900 * PAGE)
    assert t.working_set_error_bytes <= 100 * PAGE and t.cold_error_bytes <= 100 * PAGE and t.cold_known


def test_exited_process_is_dropped_quietly():
    clk, src, eng = make()
    src.add(0x10000000, 10)
    eng.set_targets([TargetSpec("t", (REF,))])
    list(run(eng, src, 2.0))
    src.gone = True
    agg = list(run(eng, src, 1.0))[-1]
    assert agg.targets[0].pids == () and agg.targets[0].errors == ()
    assert agg.stats.errors_total == ()
    assert eng.live_processes(("t", ())) == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.sampled_from(["add", "grow", "shrink", "vanish", "touch", "wait"]), min_size=5, max_size=40))
def test_shapes_changing_keep_the_records_consistent_and_settle_exactly(seed, actions):
    """Whatever the mappings do between reads: every distribution is non-increasing and
    within the resident bytes, resident bytes are exact, working set and cold bytes stay
    within them. Once the shapes hold still, one clear period later the figures are exact
    again: the bytes a steady pattern touches are the working set, the rest is cold."""
    rnd = random.Random(seed)
    clk, src, eng = make(horizons=(2.0, 4.0), aggr=0.5)
    src.add(0x10000000, 64)
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=4.0, working_set_window=2.0)
    next_start = 0x20000000

    def check(agg) -> None:
        (t,) = agg.targets
        for r in t.regions:
            bytes_ = [b for _, b in r.idle_distribution]
            assert bytes_ == sorted(bytes_, reverse=True)
            assert all(0 <= b <= r.resident_bytes for b in bytes_)
        assert sum(r.resident_bytes for r in t.regions) == sum(len(p) for p in src.maps.values()) * PAGE
        s = summarize(agg, policy).target("t")
        assert 0 <= s.cold_bytes <= s.resident_bytes
        assert 0 <= s.working_set_bytes <= s.resident_bytes
        assert sum(idle_at_least(r, 0.0) for r in t.regions) == s.resident_bytes

    for a in actions:
        starts = sorted(src.maps)
        if a == "add" or not starts:
            src.add(next_start, rnd.randint(1, 64))
            next_start += 0x1000000
        elif a == "grow":
            s = rnd.choice(starts)
            src.maps[s] += [clk()] * rnd.randint(1, 16)
        elif a == "shrink":
            s = rnd.choice(starts)
            del src.maps[s][rnd.randint(1, len(src.maps[s])) :]
        elif a == "vanish":
            del src.maps[rnd.choice(starts)]
        elif a == "touch":
            s = rnd.choice(starts)
            lo = rnd.randrange(len(src.maps[s]))
            src.touch(s, lo, lo + rnd.randint(1, 16))
        for agg in run(eng, src, rnd.choice([0.25, 0.5, 1.0, 3.0])):
            check(agg)
    # hold still: one mapping's first 8 pages stay hot, everything else goes cold
    if not src.maps:
        src.add(next_start, 16)
    hot = min(src.maps)
    hot_pages = min(8, len(src.maps[hot]))
    for agg in run(eng, src, 12.0, lambda: src.touch(hot, 0, 8)):
        check(agg)
    t = summarize(agg, policy).target("t")
    assert t.working_set_bytes == hot_pages * PAGE
    assert t.cold_bytes == t.resident_bytes - hot_pages * PAGE


@pytest.mark.slow  # builds and folds 60,000 mappings
def test_sixty_thousand_mappings_fold_into_the_region_budget():
    """A process with 60,000 one-page mappings: at most max_regions curves and records, the
    totals exact (smaps counts add up), the hot quarter found."""
    clk = VirtualClock()
    src = SimSmaps(clk)
    eng = ReferencedBytesEngine(src, MonitoringAttrs(0.25, 1.0, 10.0, 10, 100), clock=clk, wall_clock=clk, sleep=clk.sleep)
    eng.set_horizons((4.0, 8.0))
    n = 60_000
    starts = [0x10000000 + 2 * i * PAGE for i in range(n)]  # one-page holes: no merging
    for s in starts:
        src.add(s, 1)
    hot = starts[-n // 4:]
    eng.set_targets([TargetSpec("t", (REF,))])
    policy = Policy(cold_age=8.0, working_set_window=4.0)

    def work():
        t = clk()
        for s in hot:
            src.maps[s][0] = t

    last = None
    for agg in run(eng, src, 20.0, work):
        (t,) = agg.targets
        assert len(t.regions) <= 100 and t.max_regions == 100
        assert sum(r.resident_bytes for r in t.regions) == n * PAGE
        last = agg
    s = summarize(last, policy).target("t")
    assert s.working_set_bytes == len(hot) * PAGE
    assert s.cold_bytes == (n - len(hot)) * PAGE


def test_idle_time_is_carried_past_one_clear_period():
    """A buffer whose cold part is never touched: after several 8 s periods its cold bytes
    are idle for at least the periods it went untouched, not capped at one period (a buffer
    idle for 630 s with cold_age 1m used to read as idle under a minute)."""
    clk, src, eng = make(horizons=(4.0, 8.0))
    src.add(0x10000000, 512)
    eng.set_targets([TargetSpec("t", (REF,))])
    hot = lambda: src.touch(0x10000000, 0, 64)  # noqa: E731
    last = None
    for agg in run(eng, src, 70.0, hot):
        last = agg
    t = summarize(last, Policy(cold_age=8.0, working_set_window=4.0)).target("t")
    buckets = dict(t.idle_age_histogram)
    total = 512 * PAGE
    # counts prove a lower bound: untouched through k more periods are at least rss minus
    # every count touched meanwhile (the same 64 hot pages count again in each period)
    assert buckets[10] == 2 * 64 * PAGE  # was all 512 pages: nothing idle past one period
    assert total - buckets[30] == (448 - 4 * 64) * PAGE  # proven idle 30 s and more
    assert total - buckets[60] == 0  # 70 s in: nothing is proven past 60 s
    (r,) = t.regions
    assert idle_at_least(r, 8.0) == 448 * PAGE  # within the current period: exact


# -- Rss to Pss: the scaling's error --------------------------------------------------------

MiB_ = 1 << 20


def test_share_scaling_error_is_zero_where_every_page_weighs_alike():
    from exporter.engines.clear_refs.curves import share_scaling_error

    assert share_scaling_error(100 * MiB_, 100 * MiB_, 100 * MiB_) == 0  # all private
    assert share_scaling_error(100 * MiB_, 0, 20 * MiB_) == 0  # all shared, five mappers
    assert share_scaling_error(100 * MiB_, -1, 60 * MiB_) == 0  # no Private: nothing known
    # those zeros are what the bound is everywhere made of, not a special case: with private
    # pages weighing 1 and shared ones w, the worst split is off by private * shared * (1 - w)
    # / rss (here 1 MiB shared by five beside 99 MiB private: 0.792 MiB), which is 0 exactly
    # where one of the two kinds is missing
    private, shared, w = 99 * MiB_, MiB_, 0.2
    worst = private * shared * (1 - w) / (private + shared)
    assert abs(share_scaling_error(private + shared, private, round(private + shared * w)) - worst) <= 1


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 1000), st.integers(0, 1000), st.integers(1, 8), st.integers(0, 1000))
def test_share_scaling_error_bounds_every_split_of_the_touched_pages(rss_pages, private_pages, mappers, touched_pages):
    """However the touched pages divide between private and shared ones, their true share
    lies within the error of ``touched * Pss / Rss``."""
    from exporter.engines.clear_refs.curves import share_scaling_error

    private = min(private_pages, rss_pages)
    shared = rss_pages - private
    touched = min(touched_pages, rss_pages)
    page = 4096
    pss = (private + shared / mappers) * page
    err = share_scaling_error(rss_pages * page, private * page, int(pss))
    est = touched * page * pss / (rss_pages * page)
    # smaps gives Pss in whole bytes: int() moves the estimate and each extreme of the split
    # by under a byte each, and the error is rounded to a byte (half a byte)
    slack = 2.5
    for touched_private in range(max(0, touched - shared), min(touched, private) + 1):
        truth = (touched_private + (touched - touched_private) / mappers) * page
        assert abs(truth - est) <= err + slack
    # and no looser than that: some split of the private or the shared pages' count of
    # touched pages is off by the whole error (the corners the bound is taken at)
    worst = max(abs((tp + (t - tp) / mappers) * page - t * page * pss / (rss_pages * page))
                for t in (private, shared) for tp in range(max(0, t - shared), min(t, private) + 1))
    assert abs(worst - err) <= slack


def test_the_summary_publishes_the_scaling_error():
    from exporter.model.records import RegionRecord, TargetRecords
    from exporter.summary import summarize_target

    r = RegionRecord(1, 0, 100 * MiB_, 60 * MiB_, idle_distribution=((10.0, 30 * MiB_),), share_error_bytes=20 * MiB_)
    t = summarize_target(TargetRecords("t", (1,), (r,), 0.0), Policy(cold_age=10.0, working_set_window=10.0))
    assert t.working_set_error_bytes >= 20 * MiB_ and t.cold_error_bytes >= 20 * MiB_


# -- smaps read in chunks --------------------------------------------------------------------


@pytest.mark.slow  # 200 hypothesis examples
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4000), min_size=1, max_size=40))
def test_smaps_in_chunks_parse_as_the_whole_file(cuts):
    """A real smaps (this process'), cut anywhere into chunks, parses to the same entries as
    the whole text: a process' smaps is read 1 MiB at a time, not held whole."""
    from exporter.procfs.parsers import iter_smaps, parse_smaps

    data = open("/proc/self/smaps", "rb").read()
    chunks, at = [], 0
    for c in cuts:
        chunks.append(data[at:at + c])
        at += c
    chunks.append(data[at:])
    assert iter_smaps(chunks) == parse_smaps(data)
    assert len(parse_smaps(data)) >= data.count(b"\nVmFlags:") - 1  # all but [vsyscall]


@pytest.mark.slow  # builds 70 MB of smaps text
def test_sixty_thousand_mappings_are_not_held_as_text(tmp_path):
    """The smaps of 60,000 one-page mappings (~70 MB) parsed from 1 MiB chunks: the parser
    keeps the entries and one chunk, never the text (tracemalloc's peak)."""
    import tracemalloc

    from exporter.procfs.parsers import iter_smaps

    entry = (b"%x-%x rw-p 00000000 00:00 0 \nSize:                  4 kB\nRss:                   4 kB\n"
             b"Pss:                   4 kB\nPrivate_Clean:         0 kB\nPrivate_Dirty:         4 kB\n"
             b"Referenced:            4 kB\nAnonymous:             4 kB\nVmFlags: rd wr mr mw me ac\n")
    base = 0x7F0000000000

    def chunks():
        buf = []
        size = 0
        for i in range(60_000):
            e = entry % (base + 2 * i * 4096, base + (2 * i + 1) * 4096)
            buf.append(e)
            size += len(e)
            if size >= 1 << 20:
                yield b"".join(buf)
                buf, size = [], 0
        yield b"".join(buf)

    tracemalloc.start()
    entries = iter_smaps(chunks())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(entries) == 60_000 and entries[-1].rss == 4096
    assert peak < 40 << 20, f"peak {peak >> 20} MiB"


def load_run(idle: float, hot: float, after: float, hot_pages: int = 256, pages: int = 1024, timer: float = 0.0,
             mappers: int = 1, src_hook=None):
    """The issue's load at the defaults (cold_age 2m, working_set_window 60s, 0.5 s / 10 s):
    a process idle for ``idle`` s, then ``hot_pages`` of its ``pages`` touched every tick for
    ``hot`` s, then idle; yields (seconds since the start, summary, true working set).
    ``timer``: after the load, the process still wakes every ``timer`` s and touches its
    last page (a server's housekeeping); ``mappers``: how many processes map its memory."""
    clk = VirtualClock()
    src = SimSmaps(clk)
    if src_hook:
        src_hook(src)
    eng = ReferencedBytesEngine(src, MonitoringAttrs(), clock=clk, wall_clock=clk, sleep=clk.sleep)
    policy = Policy()
    eng.set_horizons((policy.working_set_window, policy.cold_age), returns_after=policy.cold_age)
    src.add(0x10000000, pages)
    if mappers > 1:
        src.mappers[0x10000000] = mappers
    eng.set_targets([TargetSpec("t", (REF,))])
    t0 = clk()
    last_touch = last_tick = None
    while clk() - t0 < idle + hot + after:
        now = clk() - t0
        if idle <= now < idle + hot:
            src.touch(0x10000000, 0, hot_pages)
            last_touch = now
        elif timer and now >= idle + hot and (last_tick is None or now - last_tick >= timer):
            src.touch(0x10000000, pages - 1, pages)
            last_tick = now
        agg = eng.step()
        if agg is not None:
            now = clk() - t0
            window = policy.working_set_window
            touched = last_touch is not None and now - last_touch <= window
            ticked = last_tick is not None and now - last_tick <= window
            share = 1 / mappers
            yield now, summarize(agg, policy).target("t"), round((hot_pages * touched + ticked) * PAGE * share)


def test_at_the_defaults_a_load_that_starts_shows_within_one_aggregation_and_stays():
    """Idle 200 s, 64 of 256 "MiB" hot for 150 s: the working set reaches half the hot
    bytes within one window plus one aggregation of the start (here: at the first
    aggregation that follows it, 10 s), stays there while the load runs, and at every
    aggregation the published error brackets the truth."""
    start, hot = 200.0, 150.0
    seen = None
    for now, t, truth in load_run(start, hot, 300.0):
        assert t.working_set_bytes - t.working_set_error_bytes <= truth <= t.working_set_bytes + t.working_set_error_bytes, now
        if start <= now < start + hot and t.working_set_bytes >= 128 * PAGE and seen is None:
            seen = now
        if seen is not None and now < start + hot:
            assert t.working_set_bytes >= 128 * PAGE, now
    assert seen is not None and seen - start <= 10.0


def test_at_the_defaults_a_load_that_ends_in_a_process_that_stops_falls_within_a_window_and_an_aggregation():
    """The process stops running when its load ends (blocked, stopped, frozen): its threads'
    run time proves its private memory untouched since the first read that saw it stop, so
    the working set falls to 0 one window (plus the aggregation that reads it) after the
    end, whatever the phase of the clears; the error brackets the truth at every
    aggregation, and the cold bytes follow one cold_age after the end."""
    start, hot = 200.0, 150.0
    end = start + hot
    rows = list(load_run(start, hot, 300.0))
    for now, t, truth in rows:
        assert t.working_set_bytes - t.working_set_error_bytes <= truth <= t.working_set_bytes + t.working_set_error_bytes, now
    late = [(now, t.working_set_bytes, t.working_set_error_bytes) for now, t, _ in rows if now >= end + 60.0 + 10.0]
    assert late and all(ws == 0 and err == 0 for _, ws, err in late), late[:3]
    cold = [(now, t.cold_bytes, t.resident_bytes) for now, t, _ in rows if now >= end + 120.0 + 10.0]
    assert cold and all(c == r for _, c, r in cold), cold[:3]


@pytest.mark.xfail(strict=True, reason="clear_refs sees a load end in a process that keeps running only at its next "
                   "clear (every 4-6 min at the defaults, for cold_age and returns); docs/freshness.md says what a "
                   "shorter period would cost")
def test_at_the_defaults_a_load_that_ends_while_a_timer_runs_falls_within_a_window_and_an_aggregation():
    start, hot = 200.0, 150.0
    late = [(now, t.working_set_bytes) for now, t, _ in load_run(start, hot, 300.0, timer=1.0) if now >= start + hot + 70.0]
    assert late and all(ws < 128 * PAGE for _, ws in late), late[:3]


def test_a_load_that_ends_while_a_timer_runs_is_bracketed_until_the_next_clear():
    """What the xfail above leaves: a process that still runs proves nothing; the figure
    stays where Referenced says, and its error brackets the truth at every aggregation."""
    for now, t, truth in load_run(200.0, 150.0, 300.0, timer=1.0):
        assert t.working_set_bytes - t.working_set_error_bytes <= truth <= t.working_set_bytes + t.working_set_error_bytes, now


@pytest.mark.parametrize("case", ["shared", "unknown activity"])
def test_a_process_that_stops_proves_nothing_of_shared_memory_or_without_its_threads_run_time(case):
    """Another process' page tables reach shared memory, and without every thread's run time
    (too many threads, no schedstat) nothing is proven: the figure stays on Referenced's
    bounds until the next clear, bracketing the truth."""
    def no_activity(src):
        src.activity = lambda proc: None

    kw = {"mappers": 4} if case == "shared" else {"src_hook": no_activity}
    start, hot = 200.0, 150.0
    rows = list(load_run(start, hot, 300.0, **kw))
    for now, t, truth in rows:
        assert t.working_set_bytes - t.working_set_error_bytes <= truth <= t.working_set_bytes + t.working_set_error_bytes, now
    held = [t.working_set_bytes for now, t, _ in rows if start + hot + 70.0 <= now <= start + hot + 100.0]
    assert held and all(ws > 0 for ws in held), held
