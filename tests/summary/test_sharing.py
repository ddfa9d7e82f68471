"""Each page counted once: shared memory by share, and as used as its most recent user.

Hand-made records of the layouts real servers have (a parent that forked workers, a buffer
every backend maps, pages shared with a process outside the target), and the user-space
engine on simulated memory with that sharing, against an exact truth."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataclasses import replace

from exporter.model.records import RegionRecord, TargetRecords
from exporter.summary import Policy, summarize_target
from exporter.summary.sampling import rate_lower
from exporter.summary.sharing import share_access

MiB = 1 << 20
A = 0x7F00_0000_0000


def point(pid, start_mib, size_mib, resident_mib, shared_mib, *, acc=0, idle=0.0, checks=20, seen=True):
    s = A + start_mib * MiB
    return RegionRecord(pid, s, s + size_mib * MiB, int(resident_mib * MiB), nr_accesses=acc, nr_checks=checks,
                        idle_seconds=0.0 if acc else idle, seen_accessed=seen, shared_bytes=int(shared_mib * MiB))


def summary(regions, cold_age=60.0, window=10.0, access_per_page=False):
    return summarize_target(TargetRecords("t", tuple(sorted({r.pid for r in regions})), tuple(regions), 0.0),
                            Policy(cold_age, window), 0.5, access_per_page)


def shared_view(regions, cold_age=60.0, window=10.0):
    """share_access with the summary's own predicates."""
    from exporter.summary.stat import idle_at_least, in_working_set

    return share_access(regions, lambda r: in_working_set(r, window) / r.resident_bytes if r.resident_bytes else 0.0,
                        lambda r: idle_at_least(r, cold_age) / r.resident_bytes if r.resident_bytes else 0.0)


def forked(n_children=4, heap=256, hot=32, mappers=None, pid0=100):
    """A parent with ``heap`` MiB resident and children sharing all of it copy-on-write;
    the children read the first ``hot`` MiB, the parent reads nothing (per-mapping access,
    as kernel DAMON's vaddr checks and clear_refs see it)."""
    m = mappers or n_children + 1
    share = lambda mib: mib / m  # noqa: E731
    regions = [point(pid0, 0, heap, share(heap), share(heap), idle=600.0)]
    for c in range(1, n_children + 1):
        regions += [point(pid0 + c, 0, hot, share(hot), share(hot), acc=20),
                    point(pid0 + c, hot, heap - hot, share(heap - hot), share(heap - hot), idle=600.0)]
    return regions


def unproven(mib, hits, checks):
    """At most what one region's samples leave unproven of ``mib`` MiB counted whole: hit
    ``hits`` times in ``checks``, a share of at least ``rate_lower(checks, hits)`` of its
    pages was used per interval (exporter.summary.sampling); pieces of shared memory that
    carry that region's samples are one draw with it."""
    return mib * MiB * (1 - rate_lower(checks, hits)) + 4096


def close(value, truth_mib, tol=0.001):
    return abs(value - truth_mib * MiB) <= tol * truth_mib * MiB + 4096


def test_forked_workers_count_each_page_once_and_as_hot_as_its_users():
    t = summary(forked())
    assert close(t.resident_bytes, 256)
    assert close(t.working_set_bytes, 32)
    assert close(t.cold_bytes, 224)
    assert t.working_set_bytes + t.cold_bytes == t.resident_bytes


def test_a_parent_that_reads_nothing_is_no_doubt_about_its_workers_pages():
    """Per-mapping access: the parent's view of the workers' hot pages is idle because it
    never reads them, not because they might be idle; the figures are exact, and the error
    is what the workers' samples leave unproven of the pages they use, no more (before: 32 MiB
    of working-set error for 32 MiB of working set, every scrape)."""
    t = summary(forked())
    assert close(t.working_set_bytes, 32) and close(t.cold_bytes, 224)
    assert t.working_set_error_bytes <= unproven(32, 20, 20) and t.cold_error_bytes <= unproven(32, 20, 20)
    # every process' piece of the hot pages carries one worker's samples: one draw, not five
    assert t.working_set_error_bytes >= unproven(32, 20, 20) - 3 * 4096


def test_a_straddling_view_brings_its_doubt_with_it():
    """Kernel DAMON in a guest boot: one of four readers held a 49 MiB region with 0.6 MiB
    of the hot part in it, 5 accesses in 400 samples beside hot regions with 360, for a whole
    run. Its view makes the 48 MiB of cold memory used for every process; the error, from
    that reader's own evidence, must say so."""
    regions = []
    for i in range(4):
        pid = 101 + i
        if i == 0:
            regions += [point(pid, 0, 63, 63 / 5, 63 / 5, idle=600.0, checks=400),
                        point(pid, 63, 49, 49 / 5, 49 / 5, acc=5, checks=400),
                        point(pid, 112, 16, 16 / 5, 16 / 5, acc=360, checks=400)]
        else:
            regions += [point(pid, 0, 112, 112 / 5, 112 / 5, idle=600.0, checks=400),
                        point(pid, 112, 16, 16 / 5, 16 / 5, acc=360, checks=400)]
    regions.append(point(100, 0, 128, 128 / 5, 128 / 5, idle=600.0, checks=400))  # the parent
    t = summary(regions)
    assert close(t.working_set_bytes, 16 + 49)
    assert t.working_set_bytes - t.working_set_error_bytes <= 16 * MiB + 4096
    # that region (its 5 hits prove next to nothing), the hot part's unproven share, and a
    # sliver of doubt at the cold edges
    assert t.working_set_error_bytes <= 49.5 * MiB + unproven(16, 360, 400)
    assert t.cold_bytes + t.cold_error_bytes >= 112 * MiB - 4096


def parent_and_readers() -> list[RegionRecord]:
    """Kernel DAMON's view of forked readers, 400 samples an aggregation: a parent (100) that
    reads nothing of the shared 128 MiB, and three readers (102-104) hot over its top 16 MiB
    at 300 hits; the fourth reader (101) is each test's own."""
    regions = [point(100, 0, 128, 128 / 5, 128 / 5, idle=600.0, checks=400)]
    for pid in (102, 103, 104):
        regions += [point(pid, 0, 112, 112 / 5, 112 / 5, idle=600.0, checks=400),
                    point(pid, 112, 16, 16 / 5, 16 / 5, acc=300, checks=400)]
    return regions


def test_a_worker_that_paused_does_not_make_the_shared_memory_used():
    """Kernel DAMON in a guest boot: a reader whose use of the hot 16 MiB dipped for an
    aggregation had its regions merged into one of the whole 128 MiB with 5 hits in 400
    samples, at every other aggregation; through the union of views the target read 128 MiB
    of working set for 16 and no cold memory. Its hits are what the others' hot 16 MiB gives
    a region of 128 at their rate (300 in 400 x 16/128 = 37): no evidence of use elsewhere."""
    regions = [point(101, 0, 128, 128 / 5, 128 / 5, acc=5, checks=400)] + parent_and_readers()  # 101 paused
    t = summary(regions)
    assert close(t.working_set_bytes, 16) and close(t.cold_bytes, 112)
    # no doubt from the paused view: what the readers' 300 hits in 400 leave unproven only
    assert t.working_set_error_bytes <= 1 * MiB + unproven(16, 300, 400)
    assert t.cold_error_bytes <= 1 * MiB + unproven(16, 300, 400)


def test_a_worker_using_more_than_the_others_keeps_its_own_memory_used():
    """The same rule must not take away memory one worker alone uses: a reader hot over
    28 MiB sees its full rate there, far above what the others' 16 MiB would give it."""
    regions = [point(101, 0, 100, 100 / 5, 100 / 5, idle=600.0, checks=400),
               point(101, 100, 28, 28 / 5, 28 / 5, acc=300, checks=400)] + parent_and_readers()
    t = summary(regions)
    assert close(t.working_set_bytes, 28) and close(t.cold_bytes, 100)


def test_two_readers_reaching_over_the_hot_edge_at_once_do_not_make_the_cold_memory_used():
    """Kernel DAMON in a guest boot (and a CI run, at 4 of the last 10 aggregations): two
    readers' cold regions of 112 MiB each reached 0.3-0.5 MiB over the hot edge and caught
    one hit in 400 samples at the same aggregation. With one such view the rule dropped it;
    with two, the union of views made all 128 MiB used (129 MiB of working set, no cold
    memory, 112 MiB of error). Each is explained by the hot regions of the other readers."""
    regions = [point(100, 0, 128, 128 / 5, 128 / 5, idle=600.0, checks=400),
               point(101, 0, 112, 112 / 5, 112 / 5, idle=600.0, checks=400),
               point(101, 112, 16, 16 / 5, 16 / 5, acc=324, checks=400),
               point(102, 0, 112.5, 112.5 / 5, 112.5 / 5, acc=1, checks=400),
               point(102, 112.5, 15.5, 15.5 / 5, 15.5 / 5, acc=325, checks=400),
               point(103, 0, 112, 112 / 5, 112 / 5, idle=600.0, checks=400),
               point(103, 112, 16, 16 / 5, 16 / 5, acc=323, checks=400),
               point(104, 0, 112.3, 112.3 / 5, 112.3 / 5, acc=1, checks=400),
               point(104, 112.3, 15.7, 15.7 / 5, 15.7 / 5, acc=331, checks=400)]
    t = summary(regions)
    assert close(t.working_set_bytes, 16) and close(t.cold_bytes, 112)
    assert t.working_set_error_bytes <= 1 * MiB + unproven(16, 323, 400)
    assert t.cold_error_bytes <= 1 * MiB + unproven(16, 323, 400)


def test_two_readers_merged_over_the_whole_buffer_at_once_are_explained_by_a_third():
    """Two readers' regions merged over the whole 128 MiB at the same aggregation: neither
    explains the other (equally cool), the other readers' hot regions explain both."""
    regions = [point(101, 0, 128, 128 / 5, 128 / 5, acc=5, checks=400),
               point(102, 0, 128, 128 / 5, 128 / 5, acc=4, checks=400)]
    regions += [r for r in parent_and_readers() if r.pid != 102]
    t = summary(regions)
    assert close(t.working_set_bytes, 16) and close(t.cold_bytes, 112)


def test_readers_hot_at_every_sample_are_never_explained_away():
    """Regions hit at every sample are evidence of their own, however much of them the
    others' regions cover: four readers hot over the same 32 MiB, cut at different places."""
    cuts = {101: (0, 6.4, 32), 102: (0, 15.7, 22.4, 32), 103: (0, 1.9, 6.4, 32), 104: (0, 9, 12.9, 32)}
    regions = [point(100, 0, 256, 256 / 5, 256 / 5, idle=600.0, checks=20)]
    for pid, cut in cuts.items():
        regions += [point(pid, a, b - a, (b - a) / 5, (b - a) / 5, acc=20, checks=20) for a, b in zip(cut, cut[1:])]
        regions.append(point(pid, 32, 224, 224 / 5, 224 / 5, idle=600.0, checks=20))
    t = summary(regions)
    assert close(t.working_set_bytes, 32) and close(t.cold_bytes, 224)


def test_many_workers_cut_differently_give_pieces_in_proportion_to_their_regions():
    """64 forked readers, each with 20 regions cut at its own places over a shared 1 GiB (as
    kernel DAMON leaves them): every stretch between two cuts is covered by all 64, and one
    record per process per stretch was ~80,000 records (17 s a summary at 256 workers).
    Stretches of one region that take the same view are one piece: a few per region."""
    import random

    rng = random.Random(1)
    n = 64
    regions = [point(100, 0, 1024, 1024 / (n + 1), 1024 / (n + 1), idle=600.0, checks=400)]
    for pid in range(101, 101 + n):
        cuts = sorted({0, 1024, 256} | {rng.randrange(1, 1024) for _ in range(18)})
        for a, b in zip(cuts, cuts[1:]):
            hot = b <= 256
            regions.append(point(pid, a, b - a, (b - a) / (n + 1), (b - a) / (n + 1),
                                 acc=rng.randrange(250, 350) if hot else 0, idle=600.0, checks=400))
    out, _, _ = share_access(regions, lambda r: 1.0 if r.nr_accesses else 0.0, lambda r: 0.0 if r.nr_accesses else 1.0,
                             doubt=(lambda r: 0.0, lambda r: 0.0))
    assert len(out) <= 4 * len(regions), len(out)
    t = summary(regions)
    assert close(t.resident_bytes, 1024, 0.01) and close(t.working_set_bytes, 256, 0.01) and close(t.cold_bytes, 768, 0.01)


def test_an_overshooting_straddler_is_cut_back_to_what_the_others_use():
    """A reader's region across the hot edge, 20 MiB with 16 of them hot, reads 16/20 of the
    others' rate: the 4 MiB beyond the edge are not its own use."""
    regions = [point(101, 0, 108, 108 / 5, 108 / 5, idle=600.0, checks=400),
               point(101, 108, 20, 20 / 5, 20 / 5, acc=240, checks=400)] + parent_and_readers()
    t = summary(regions)
    assert close(t.working_set_bytes, 16) and close(t.cold_bytes, 112)


def straddlers():
    """Five processes that all use the top 16 MiB of a shared 128 MiB: each one's regions
    straddle the edge at 112 MiB a little differently (from 108 to 112)."""
    regions = []
    for i, edge in enumerate((110, 111, 109, 112, 108)):
        regions += [point(100 + i, 0, edge, edge / 5, edge / 5, idle=600.0),
                    point(100 + i, edge, 128 - edge, (128 - edge) / 5, (128 - edge) / 5, acc=20)]
    return regions


def test_where_processes_disagree_the_error_says_so():
    """Per-mapping access: the most recent view wins, and the bytes the views disagree on
    are in the published error, so the truth (16 MiB) lies within it."""
    t = summary(straddlers())
    # at most the widest straddler's view (these records read every sample accessed, so the
    # others' use explains a straddler only where they cover all but a sliver of it)
    assert 16 * MiB - 4096 <= t.working_set_bytes <= 20 * MiB + 4096
    slack = 4096  # shares round to bytes
    assert t.working_set_bytes - t.working_set_error_bytes - slack <= 16 * MiB <= t.working_set_bytes + t.working_set_error_bytes + slack
    assert t.cold_bytes - t.cold_error_bytes - slack <= (128 - 16) * MiB <= t.cold_bytes + t.cold_error_bytes + slack


def per_page_straddlers(checks=20):
    """:func:`straddlers` as page_idle reads them: every process sees every access to the
    shared pages, so a region across the edge reads the hot share of it (a region of 20 MiB
    with 16 hot hits 16 samples in 20)."""
    regions = []
    for i, edge in enumerate((110, 111, 109, 112, 108)):
        hits = round(checks * 16 / (128 - edge))
        regions += [point(100 + i, 0, edge, edge / 5, edge / 5, idle=600.0, checks=checks),
                    point(100 + i, edge, 128 - edge, (128 - edge) / 5, (128 - edge) / 5, acc=hits, checks=checks)]
    return regions


def test_per_page_each_frame_is_the_mean_of_its_mappers_views():
    """page_idle sees every access from every process, so each process' regions are a
    complete estimate of the frames it maps, and counted by share the target's working set
    is the mean of the five processes' own estimates (here their straddlers' overshoots, 16
    to 20 MiB: 18). The truth lies between the least and the most of them, and that spread
    is in the error (with each process' own edge error): 18 ± 4.1 MiB for the true 16."""
    regions = per_page_straddlers()
    t = summary(regions, access_per_page=True)
    alone = [summary([replace(r, resident_bytes=r.resident_bytes * 5, shared_bytes=0) for r in regions if r.pid == pid])
             for pid in range(100, 105)]
    assert [round(a.working_set_bytes / MiB) for a in alone] == [18, 17, 19, 16, 20]
    slack = 5 * 4096  # shares round to bytes
    for key in ("working_set_bytes", "cold_bytes"):
        assert abs(getattr(t, key) - sum(getattr(a, key) for a in alone) / 5) <= slack, key
    spread = 4 * MiB  # the views' working set runs from 16 to 20 MiB over the same frames
    own = sum(a.working_set_error_bytes for a in alone) / 5
    # the spread is in the error; each process' own doubt (its edge, and what its samples
    # leave unproven of its straddler) is about the same frames as the spread, so the error
    # lies between the spread and their sum
    assert spread <= t.working_set_error_bytes <= spread + own + slack
    assert abs(t.working_set_bytes - 16 * MiB) <= t.working_set_error_bytes
    assert abs(t.cold_bytes - 112 * MiB) <= t.cold_error_bytes
    assert close(t.working_set_bytes, 18) and close(t.resident_bytes, 128)


def two_trees(per_page):
    """Two unrelated process trees started with ASLR off, so at the same addresses: each a
    parent with 256 MiB that forked 4 children sharing it copy-on-write; tree A's children
    read the first 32 MiB, tree B's read nothing. Per physical page (``per_page``) every
    process of tree A sees its children's accesses, and tree B's processes see none: their
    frames at the same addresses are other frames."""
    regions = forked(heap=256, hot=32, pid0=100)
    if per_page:
        regions = [point(r.pid, 0, 32, 32 / 5, 32 / 5, acc=20) if r.start == A else r for r in regions if r.pid != 100]
        regions += [point(100, 0, 32, 32 / 5, 32 / 5, acc=20), point(100, 32, 224, 224 / 5, 224 / 5, idle=600.0)]
    regions += [point(200 + i, 0, 256, 256 / 5, 256 / 5, idle=600.0) for i in range(5)]
    return regions


def test_per_page_unrelated_trees_at_one_address_keep_their_own_frames():
    """Address is not identity: tree B's idle frames at tree A's hot addresses stay idle, and
    tree A's hot frames stay hot. Each page counted once: 32 MiB used, 480 cold."""
    t = summary(two_trees(per_page=True), access_per_page=True)
    assert close(t.working_set_bytes, 32) and close(t.cold_bytes, 480) and close(t.resident_bytes, 512)


def test_per_page_access_of_a_parent_that_reads_nothing_is_its_workers_access():
    """The parent's own regions are evidence too: with page_idle it sees the workers'
    accesses to the pages it shares with them, so its regions agree with theirs, and no
    error but the edge's own (a single process' after 1,200 silent samples) and what the
    samples leave unproven is left: at most what one process alone leaves (five processes'
    checks of the same frames are five independent draws of their use, not one)."""
    regions = []
    for pid in range(100, 105):
        regions += [point(pid, 0, 32, 32 / 5, 32 / 5, acc=20), point(pid, 32, 224, 224 / 5, 224 / 5, idle=600.0)]
    t = summary(regions, access_per_page=True)
    assert close(t.working_set_bytes, 32) and close(t.cold_bytes, 224)
    alone = summary([point(100, 0, 32, 32, 32, acc=20), point(100, 32, 224, 224, 224, idle=600.0)])
    assert alone.working_set_error_bytes > 0
    edge = 224 * MiB * 0.5 / (600.0 + 0.5)
    assert edge < t.working_set_error_bytes <= alone.working_set_error_bytes + 4096
    assert edge < t.cold_error_bytes <= alone.cold_error_bytes + 4096


def test_without_the_rule_the_parent_would_call_its_share_of_hot_pages_cold():
    """What share_access corrects: per-process shares alone put the parent's fifth of the
    workers' hot pages in the cold figure."""
    regions = forked()
    naive_ws = sum(r.resident_bytes for r in regions if r.nr_accesses)
    assert close(naive_ws, 32 * 4 / 5)
    assert close(summary(regions).working_set_bytes, 32)


def test_pages_also_mapped_outside_the_target_count_in_proportion():
    """Parent and one child in the target, three more mappers elsewhere: the target holds
    two fifths of each page."""
    regions = [r for r in forked(mappers=5) if r.pid in (100, 101)]
    t = summary(regions)
    assert close(t.resident_bytes, 256 * 2 / 5)
    assert close(t.working_set_bytes, 32 * 2 / 5)
    assert close(t.cold_bytes, 224 * 2 / 5)


def test_targets_never_add_up_to_more_than_the_machine_holds():
    """The same five processes split over two targets: the two add up to the pages once."""
    regions = forked()
    a = summary([r for r in regions if r.pid in (100, 101)])
    b = summary([r for r in regions if r.pid not in (100, 101)])
    assert close(a.resident_bytes + b.resident_bytes, 256)
    assert close(a.working_set_bytes + b.working_set_bytes, 32)


def test_private_memory_is_untouched():
    regions = [point(1, 0, 64, 64, 0, acc=20), point(1, 64, 64, 64, 0, idle=600.0),
               point(2, 0, 64, 64, 0, idle=600.0)]
    assert shared_view(regions) == (tuple(regions), 0, 0)
    t = summary(regions)
    assert (t.resident_bytes, t.working_set_bytes, t.cold_bytes) == (192 * MiB, 64 * MiB, 128 * MiB)


def test_shared_memory_at_other_addresses_keeps_each_process_view():
    """Two unrelated processes mapping one file at different addresses: nothing says their
    pages are the same, so each keeps its own access (still counted by share)."""
    regions = [point(1, 0, 64, 32, 32, acc=20), point(2, 1000, 64, 32, 32, idle=600.0)]
    assert shared_view(regions) == (tuple(regions), 0, 0)
    t = summary(regions)
    assert (t.resident_bytes, t.working_set_bytes, t.cold_bytes) == (64 * MiB, 32 * MiB, 32 * MiB)


def test_memory_never_seen_accessed_stays_unknown_unless_someone_used_it():
    regions = [point(1, 0, 16, 8, 8, idle=3.0, seen=False), point(2, 0, 16, 8, 8, idle=3.0, seen=False)]
    t = summary(regions)
    assert t.working_set_bytes == 0 and t.cold_bytes == 0 and t.working_set_error_bytes == 16 * MiB


def dist(pid, start_mib, size_mib, resident_mib, shared_mib, untouched):
    """A clear_refs record: ``untouched`` = [(seconds, MiB untouched within them)]."""
    s = A + start_mib * MiB
    return RegionRecord(pid, s, s + size_mib * MiB, int(resident_mib * MiB), shared_bytes=int(shared_mib * MiB),
                        idle_distribution=tuple((sec, int(mib * MiB)) for sec, mib in untouched),
                        accessed_bytes=0)


def test_referenced_bytes_curves_of_forked_workers():
    """clear_refs: each process' Referenced is its own; the shared heap's curves combine by
    the most used of them at every point (here the workers' 32 of 256 MiB)."""
    f = 1 / 5
    regions = [dist(100, 0, 256, 256 * f, 256 * f, [(10.0, 256 * f), (60.0, 256 * f)])]
    for c in range(1, 5):
        regions.append(dist(100 + c, 0, 256, 256 * f, 256 * f, [(10.0, 224 * f), (60.0, 224 * f)]))
    t = summary(regions, cold_age=60.0, window=10.0)
    assert close(t.resident_bytes, 256)
    assert close(t.working_set_bytes, 32, tol=0.01)
    assert close(t.cold_bytes, 224, tol=0.01)


records = st.lists(
    st.tuples(st.integers(1, 4), st.integers(0, 60), st.integers(1, 40), st.floats(0, 1), st.floats(0, 1),
              st.booleans(), st.floats(0, 1000)),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_resident_bytes_are_kept_and_figures_stay_within_them(rs):
    regions, taken = [], set()
    for pid, start, size, res_f, shared_f, hot, idle in rs:
        if any(p == pid and not (start + size <= s or s + z <= start) for p, s, z in taken):
            continue  # regions of one process never overlap
        taken.add((pid, start, size))
        resident = int(size * MiB * res_f) // 4096 * 4096
        regions.append(RegionRecord(pid, A + start * MiB, A + (start + size) * MiB, resident,
                                    nr_accesses=20 if hot else 0, nr_checks=20, idle_seconds=0.0 if hot else idle,
                                    shared_bytes=int(resident * shared_f)))
    out, ws_err, cold_err = shared_view(regions)
    assert sum(r.resident_bytes for r in out) == sum(r.resident_bytes for r in regions)
    assert 0 <= ws_err <= sum(r.shared_bytes for r in regions) and 0 <= cold_err <= sum(r.shared_bytes for r in regions)
    assert all(0 <= r.shared_bytes <= r.resident_bytes for r in out)
    t = summary(regions)
    assert t.working_set_bytes + t.cold_bytes <= t.resident_bytes
    # where every covering region agrees, nothing changes
    if all(r.nr_accesses == 0 and r.idle_seconds >= 60.0 for r in regions):
        naive = summarize_target(TargetRecords("t", (), tuple(replace(r, shared_bytes=0) for r in regions), 0.0), Policy(60.0, 10.0), 0.5)
        assert (t.working_set_bytes, t.cold_bytes) == (naive.working_set_bytes, naive.cold_bytes)


# -- the user-space engine on simulated forked workers -------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_user_space_engine_on_forked_workers(seed):
    from exporter.engines.page_idle.ops_simulated import HotRange, SimulatedProcess
    from tests.support.simulation import BASE, aggregations, make_monitor

    heap, hot = 256 * MiB, 32 * MiB
    mappers = 5
    procs = {100: SimulatedProcess(mappings=[(BASE, BASE + heap)], shared=[(BASE, BASE + heap, mappers)])}
    for c in range(1, mappers):
        procs[100 + c] = SimulatedProcess(mappings=[(BASE, BASE + heap)], hot=[HotRange(BASE, BASE + hot)],
                                          shared=[(BASE, BASE + heap, mappers)])
    mon, _, _ = make_monitor(procs, seed=seed, cold_age=8.0, working_set_window=4.0)
    good = 0
    for i, snap in enumerate(aggregations(mon, 40), start=1):
        t = snap.target("t")
        assert abs(t.resident_bytes - heap) <= 5 * 4096  # each page once (rounding per process)
        if i > 20:
            good += abs(t.working_set_bytes - hot) <= 0.1 * hot and abs(t.cold_bytes - (heap - hot)) <= 0.1 * (heap - hot)
    assert good >= 16, good


def framed(regions, tree):
    """``regions`` as an engine that reads PFNs gives them: the frames at each region's
    grid addresses, tree ``tree``'s own (one frame per page and tree)."""
    from exporter.engines.identity import frame_grid

    return [replace(r, frames=tuple((a, (tree << 40) | (a >> 12)) for a in frame_grid(r.start, r.end))) for r in regions]


def test_two_trees_at_one_address_are_two_memories_where_frames_say_so():
    """Two unrelated trees of one program at one address (ASLR off): one tree's readers use
    32 MiB, the other's nothing. Matched by address, the idle tree took the busy tree's use
    (working set 64 MiB); matched by frame, each tree is its own memory, exactly."""
    busy = forked(pid0=100)
    idle = [replace(r, nr_accesses=0, idle_seconds=600.0) for r in forked(pid0=200)]
    by_address = summary(busy + idle)
    assert close(by_address.working_set_bytes, 64)
    t = summary(framed(busy, 1) + framed(idle, 2))
    assert close(t.resident_bytes, 512) and close(t.working_set_bytes, 32) and close(t.cold_bytes, 480)
    assert t.working_set_error_bytes <= unproven(32, 20, 20) and t.cold_error_bytes <= unproven(32, 20, 20)


def test_one_tree_read_by_frame_is_counted_as_by_address():
    t = summary(framed(forked(), 1))
    assert close(t.working_set_bytes, 32) and close(t.cold_bytes, 224)


def test_copy_on_write_broken_by_a_write_is_the_writer_own_memory():
    """The parent wrote every page after forking: its pages are new frames, private (no
    shared bytes), and its readers share the old frames among themselves."""
    readers = [r for r in forked() if r.pid != 100]
    parent = point(100, 0, 256, 256, 0, acc=20)
    t = summary([parent] + framed(readers, 1))
    assert close(t.resident_bytes, 256 + 256 * 4 / 5)
    assert close(t.working_set_bytes, 256 + 32 * 4 / 5)


def test_frames_read_at_no_common_address_leave_identity_to_the_addresses():
    from exporter.summary.sharing import same_memory

    a, b = point(1, 0, 64, 32, 32), point(2, 0, 64, 32, 32)
    assert same_memory(replace(a, frames=((A, 7),)), replace(b, frames=((A + 4096, 7),))) is None
    assert same_memory(replace(a, frames=((A, 7),)), b) is None
    assert same_memory(replace(a, frames=((A, 7),)), replace(b, frames=((A, 8),))) is False
    assert same_memory(replace(a, frames=((A, 7), (A + 4096, 9))), replace(b, frames=((A, 8), (A + 4096, 9)))) is True


@given(st.integers(0, 1 << 30), st.integers(1, 1 << 16), st.integers(0, 1 << 16), st.integers(1, 1 << 16))
def test_regions_over_common_addresses_read_common_addresses(a_page, a_pages, b_off, b_pages):
    """The grids of two overlapping regions share an address wherever the overlap holds a
    multiple of the coarser stride: in particular two regions over the same range always."""
    from exporter.engines.identity import FRAMES_PER_REGION, frame_grid

    P = 4096
    a = (a_page * P, (a_page + a_pages) * P)
    b = (a[0] + b_off * P, a[0] + (b_off + b_pages) * P)
    ga, gb = frame_grid(*a), frame_grid(*b)
    assert 0 < len(ga) <= FRAMES_PER_REGION + 1 and all(a[0] <= x < a[1] for x in ga)
    assert frame_grid(*a) == ga  # the same range, the same addresses
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    stride = max(ga[1] - ga[0] if len(ga) > 1 else P, gb[1] - gb[0] if len(gb) > 1 else P)
    if hi - lo >= 2 * stride:
        assert set(ga) & set(gb)


def test_frames_that_cannot_be_read_leave_identity_unknown():
    """Every engine hands with_frames a reader that may raise (the process left since its
    records were taken) or return None (no CAP_SYS_ADMIN): those regions keep no frames and
    are matched by address; the others get the frames read at their grid."""
    from exporter.engines.identity import frame_grid, with_frames
    from exporter.model.errors import ProcessGone

    records = [point(100, 0, 64, 32, 32, acc=20), point(101, 0, 64, 32, 32, acc=20), point(102, 0, 64, 32, 32)]

    def read(pid, addrs):
        if pid == 101:
            raise ProcessGone("process 101 exited")
        return None if pid == 102 else [a >> 12 for a in addrs]

    out = with_frames(records, read)
    assert out[0].frames == tuple((a, a >> 12) for a in frame_grid(out[0].start, out[0].end))
    assert out[1].frames is None and out[2].frames is None
