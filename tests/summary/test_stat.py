"""Working set, cold bytes and their error estimates from hand-made records."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.model.records import RegionRecord, TargetRecords
from exporter.summary import Policy, summarize_target
from tests.support.sampling_model import unproven

MiB = 1 << 20
A = 0x1000_0000


def rec(start_mib: int, size_mib: int, acc: int = 0, checks: int = 20, idle: float = 0.0, seen: bool = True, pid: int = 1) -> RegionRecord:
    start = A + start_mib * MiB
    return RegionRecord(pid, start, start + size_mib * MiB, size_mib * MiB, nr_accesses=acc, nr_checks=checks,
                        idle_seconds=0.0 if acc else idle, seen_accessed=seen)


def summary(regions, cold_age=60.0, window=10.0, sample_interval=0.5):
    return summarize_target(TargetRecords("t", (1, 2), tuple(regions), 0.0), Policy(cold_age, window), sample_interval)


def test_edge_error_from_the_sampling_evidence():
    hot = rec(0, 8, acc=20)  # every sample a hit
    edge = rec(8, 4, acc=5)  # a quarter of them: three quarters of it likely idle
    cold = rec(12, 40, idle=99.5)  # 199 samples without a hit: 1/200 of it likely used
    t = summary([hot, edge, cold])
    assert t.working_set_bytes == 12 * MiB and t.cold_bytes == 40 * MiB
    # the hot side: the edge region's likely idle share, or what the two regions' samples
    # leave unproven (20 hits in 20 prove 86% of a region used per interval, 5 in 20 8%),
    # whichever is larger (they are doubts about the same bytes); the cold side adds its own
    inside = max(0.75 * 4 * MiB, unproven((8, 20, 20), (4, 5, 20)))
    assert inside > 0.75 * 4 * MiB
    expected = inside + 40 * MiB / 200
    assert t.working_set_error_bytes == round(expected)
    assert t.cold_error_bytes == round(expected)  # the same edge, seen from cold_age
    # a longer sample interval (the budget's) means fewer samples behind the idle region
    assert summary([hot, edge, cold], sample_interval=5.0).working_set_error_bytes == round(inside + 40 * MiB * 5 / 104.5)


def test_a_member_by_an_earlier_hit_only_beside_one_in_use_may_be_all_idle():
    """A region straddling the hot edge that a sample caught 2 s ago is in the working set for
    the window, though it reads idle now while its neighbour reads in use at every sample:
    all of it may be idle, and the error says so (it used to say nothing: 11 MiB of such a
    region flipped the working set by 17% with 0.2 MiB of published error)."""
    hot = rec(0, 64, acc=20)
    straddler = rec(64, 11, idle=2.0)
    cold = rec(75, 437, idle=500.0)
    t = summary([hot, straddler, cold], window=4.0)
    assert t.working_set_bytes == 75 * MiB
    assert t.working_set_error_bytes >= 11 * MiB


def test_alike_neighbours_and_gaps_are_no_error():
    # hot next to hot at the same frequency: the edge to cold is exactly at a boundary
    # (what is left is what the hot regions' samples do not prove used: half the checks
    # hitting proves 30% of a region's pages used per interval, not all of them)
    t = summary([rec(0, 8, acc=10), rec(8, 8, acc=10), rec(16, 8, idle=1e9)])
    assert t.working_set_error_bytes == round(unproven((8, 10, 20), (8, 10, 20)) + 8 * MiB * 0.5 / (1e9 + 0.5))
    # not contiguous (a gap), or another process: no edge at all
    t = summary([rec(0, 8, acc=10), rec(9, 8, idle=100.0), rec(17, 8, idle=100.0, pid=2)])
    assert t.working_set_error_bytes == t.cold_error_bytes == round(unproven((8, 10, 20)))


def test_memory_never_seen_accessed_is_in_neither_figure_until_watched_long_enough():
    fresh = rec(0, 2, idle=3.0, seen=False)  # watched 3 s, never seen accessed
    t = summary([fresh, rec(100, 8, acc=10)])
    assert t.working_set_bytes == 8 * MiB  # not invented into the working set
    assert t.cold_bytes == 0  # nor cold
    # and the estimate says it is unknown (beside what the used region's samples leave open)
    assert t.working_set_error_bytes == round(2 * MiB + unproven((8, 10, 20)))
    # watched a whole window without a hit: known to be outside the working set
    t = summary([rec(0, 2, idle=10.0, seen=False)])
    assert (t.working_set_bytes, t.working_set_error_bytes, t.cold_bytes) == (0, 0, 0)
    # watched cold_age without a hit: cold (a lower bound: since we began watching)
    t = summary([rec(0, 2, idle=60.0, seen=False)])
    assert t.cold_bytes == 2 * MiB
    # seen accessed 3 s ago: in the working set
    assert summary([rec(0, 2, idle=3.0)]).working_set_bytes == 2 * MiB


def test_unknown_memory_at_an_edge_counts_once():
    fresh = rec(8, 2, idle=1.0, seen=False)
    t = summary([rec(0, 8, acc=20), fresh])
    assert t.working_set_error_bytes == round(2 * MiB + unproven((8, 20, 20)))


def test_error_is_the_sum_of_its_parts_up_to_resident():
    """Unknown memory, edge doubt and the Rss-to-Pss scaling add up; past the resident bytes
    the error says only "anything", so it stops there."""
    used, fresh = rec(0, 1, acc=20), rec(1, 1, idle=0.0, seen=False)
    t = summary([replace(used, share_error_bytes=MiB // 4), fresh])
    # the fresh MiB is unknown at both horizons: neither in the working set nor cold yet
    both = round(MiB + unproven((1, 20, 20))) + MiB // 4
    assert (t.working_set_error_bytes, t.cold_error_bytes) == (both, both)
    t = summary([replace(used, share_error_bytes=5 * MiB), fresh])
    assert t.working_set_error_bytes == t.cold_error_bytes == t.resident_bytes == 2 * MiB
    assert t.to_dict()["working_set_error_bytes"] == t.working_set_error_bytes


@pytest.mark.parametrize("seen", [True, False])
def test_regions_accessed_this_aggregation_are_in_the_working_set(seen):
    assert summary([rec(0, 4, acc=1, seen=seen)]).working_set_bytes == 4 * MiB
