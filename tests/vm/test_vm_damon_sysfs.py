"""The damon_sysfs engine against the real kernel DAMON, in the QEMU guest: the accuracy
table's damon_sysfs column (the same workloads and attributes as page_idle's; the 5 ms
defaults run in the lifecycle check), attribution of overlapping address ranges, and ownership: no kdamond is
left behind after a normal exit, SIGTERM, or SIGKILL followed by a restart.

The checks run in the session's one guest boot (tests/vm/conftest.py)."""

from __future__ import annotations

import statistics

import pytest

from .test_vm_page_idle import (
    MiB,
    assert_accurate,
    assert_close,
    assert_follows_load,
    assert_promotion,
    assert_shared_accurate,
    check,
    trace,
)
from .tolerance import allowed_misses, error_confined

pytestmark = [pytest.mark.vm, pytest.mark.slow]

NR = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds"
FREE = {"nr_kdamonds": "0", "marker": False}


def test_working_set_and_cold_bytes_4k_pages(checks: dict) -> None:
    res = check(checks, "damon_sysfs/accuracy_4k")
    assert res["anon_huge_bytes"] == 0 and res["buffer_rss"] == res["truth"]["buffer"]
    assert_accurate(res)


def test_working_set_and_cold_bytes_thp(checks: dict) -> None:
    res = check(checks, "damon_sysfs/accuracy_thp")
    assert res["anon_huge_bytes"] >= 0.9 * res["truth"]["buffer"], res["anon_huge_bytes"]
    assert_accurate(res)


def test_moving_hot_set_is_followed(checks: dict) -> None:
    res = check(checks, "damon_sysfs/moving_hot_set")
    assert res["moved_event"] is not None
    hot = res["truth"]["hot_size"]
    after = [s for s in res["series"] if s["t"] > res["moved_at"]]
    followed = [i for i, s in enumerate(after, 1) if s["accessed_new"] >= 0.9 * hot and s["accessed_old"] <= 0.1 * hot]
    assert followed and followed[0] <= 3, [(s["accessed_old"] // MiB, s["accessed_new"] // MiB) for s in after]
    tail = [s for s in after if s["t"] >= res["moved_at"] + 12]
    assert len(tail) >= 4, [s["t"] for s in after]
    ws = statistics.median(s["working_set_known"] for s in tail[-4:])
    assert_close(ws, hot, 0.10, f"working set after the move (MiB: {trace(res['series'], 'working_set_known')})")


def test_several_processes_in_one_target(checks: dict) -> None:
    res = check(checks, "damon_sysfs/multi_process")
    assert res["series"][-1]["pids"] == sorted(res["children"])
    assert_accurate(res)


def test_forked_readers_count_each_page_once(checks: dict) -> None:
    assert_shared_accurate(check(checks, "damon_sysfs/shared_readers"))


def test_two_trees_at_one_address_are_not_one_memory(checks: dict) -> None:
    """Kernel DAMON's checks are per mapping, so shared regions are matched across processes
    by the frames read at a few addresses of each: the idle tree's frames at the busy
    tree's hot addresses are other frames, and stay idle."""
    res = check(checks, "damon_sysfs/two_trees")
    assert len(res["addrs"]) == 1, f"the trees' buffers are not at one address: {res['addrs']}"
    assert_shared_accurate(res)


def test_copy_on_write_broken_by_a_write_is_the_writer_own_memory(checks: dict) -> None:
    """Per mapping, the parent's rewritten pages and the readers' shared ones sit at the
    same addresses; frames tell them apart, so the readers' use is not the parent's."""
    res = check(checks, "damon_sysfs/cow_broken")
    assert_shared_accurate(res, mappers=2)


def test_two_programs_mapping_one_file_at_their_own_addresses(checks: dict) -> None:
    """Kernel DAMON's checks are per mapping: the program that only maps the file sees its
    pages idle. Matched by file offset, a page either program used is used (by address the
    working set read half the truth)."""
    res = check(checks, "damon_sysfs/file_two_programs")
    assert len(res["bases"]) == 2, f"the programs map the file at one address: {res['bases']}"
    assert_shared_accurate(res, mappers=2)


def test_process_exiting_mid_run(checks: dict) -> None:
    res = check(checks, "damon_sysfs/exit_mid_run")
    assert res["exception"] is None and res["leaver_exit_code"] == 0
    series = res["series"]
    assert series[0]["pids"] == sorted([res["survivor"], res["leaver"]])
    assert series[-1]["pids"] == [res["survivor"]]
    assert all(s["errors"] == [] for s in series), [s["errors"] for s in series]
    assert_accurate(res)


def test_overlapping_address_ranges_are_attributed_to_their_process(checks: dict) -> None:
    res = check(checks, "damon_sysfs/overlapping_ranges")
    assert res["same_addr"], "the two children's buffers should share one virtual address"
    small, large = res["small"], res["large"]
    assert (small["truth"]["working_set"], large["truth"]["working_set"]) == (8 * MiB, 32 * MiB)
    for r in (small, large):
        assert r["series"][-1]["pids"] == [r["pid"]]
        assert_accurate(r)


def test_no_kdamond_left_behind(checks: dict) -> None:
    res = check(checks, "damon_sysfs/lifecycle")
    assert res["before"] == FREE
    snap = res["snapshot"]
    assert snap["rc"] == 0, snap["stderr"]
    assert snap["backend"] == "damon_sysfs" and snap["sample_interval"] == 0.005
    assert snap["working_set"] > 0
    assert snap["after"] == FREE
    # SIGKILL leaves the kdamond running (nobody can clean up after SIGKILL) ...
    kill = res["kill"]
    assert kill["started"], kill
    assert kill["after_kill"] == {**kill["during"], "marker": True}, kill
    assert kill["after_kill"]["state"] == "on"
    # ... and the next exporter reclaims it (its marker names a dead exporter) and, on
    # SIGTERM, gives it back: turned off, nr_kdamonds 0, marker removed
    assert kill["restarted"], (kill, res["log"])
    assert kill["after_restart"]["pid"] != kill["during"]["pid"]
    assert any("reclaiming a kdamond left behind" in line for line in res["log"]), res["log"]
    assert kill["rc"] == 0 and kill["after"] == FREE, kill
    assert any("kernel DAMON given back: kdamond off, nr_kdamonds 0" in line for line in res["log"]), res["log"]


def test_cold_memory_that_comes_back(checks: dict) -> None:
    assert_promotion(check(checks, "damon_sysfs/promotion"))


def test_steady_memory_promotes_nothing(checks: dict) -> None:
    for name in ("damon_sysfs/accuracy_4k", "damon_sysfs/shared_readers"):
        end = check(checks, name)["series"][-1]
        assert end["promoted"] <= end["promoted_error"] + 1 * MiB, (name, end["promoted"] / MiB, end["promoted_error"] / MiB)


def test_forked_readers_at_the_default_attributes_count_each_page_once(checks: dict) -> None:
    """Kernel DAMON at its own defaults (5 ms samples, 2 s aggregations, 10..100 regions),
    forked readers: resident by share, working set and cold bytes within 10% at all but the
    misses tests/vm/tolerance.py allows among the last ten aggregations, and the published
    error small. Five processes share the region cap, so the engine gives the kernel room
    to split every one of them (REGIONS_PER_PROCESS); a reader whose view merged over the
    whole buffer is judged against the others (exporter/summary/sharing.py)."""
    res = check(checks, "damon_sysfs/shared_readers_defaults")
    series, truth = res["series"], res["truth"]
    print(f"damon_sysfs defaults, forked readers: working set {trace(series, 'working_set')} "
          f"± {trace(series, 'working_set_error')}, cold {trace(series, 'cold')} MiB")
    assert_shared_accurate(res, last=10)
    other = res["pss"] - truth["buffer"]
    last = series[-10:]
    off = [s for s in last if not 0.9 * truth["working_set"] <= s["working_set"] <= 1.1 * truth["working_set"] + other
           or abs(s["cold"] - truth["cold"]) > 0.1 * truth["cold"]]
    assert len(off) <= allowed_misses(len(last)), f"{trace(series, 'working_set')} / {trace(series, 'cold')}"
    # the error confined to what the samples leave unproven of the memory counted used
    # (tests/vm/tolerance.py: error_confined), at the median: a reader the scheduler pauses
    # for a few samples disagrees with the others about the hot part for an aggregation, and
    # its doubt is published whole; the median holds unless most of the ten do
    over = sorted(s["working_set_error"] - s["working_set"] for s in last)
    assert over[len(over) // 2] <= 0.25 * truth["working_set"], trace(series, "working_set_error")


def test_one_process_at_the_default_attributes_within_ten_percent(checks: dict) -> None:
    """Issue 19's workload (512 MiB, 64 hot) at kernel DAMON's own defaults, cold_age 8 s,
    working_set_window 3 s, for 90 s: the aggregations of the last 30 s within 10% of the
    truth or the error published with it, and that error confined to what the samples leave
    unproven of the memory counted used (error_confined), at all but the misses
    tests/vm/tolerance.py allows."""
    res = check(checks, "damon_sysfs/accuracy_defaults")
    truth = res["truth"]
    judged = [s for s in res["series"] if s["t"] >= res["series"][-1]["t"] - 30]
    print(f"damon_sysfs defaults, one process: working set {trace(judged, 'working_set')}, cold {trace(judged, 'cold')} MiB")
    assert len(judged) >= 10, len(judged)
    off = [s for s in judged
           if abs(s["working_set"] - truth["working_set"]) > 0.10 * truth["working_set"] + s["working_set_error"]
           or abs(s["cold"] - truth["cold"]) > 0.10 * truth["cold"] + s["cold_error"]]
    k = allowed_misses(len(judged))
    assert len(off) <= k, f"beyond 10% and the published error: {trace(judged, 'working_set')} / {trace(judged, 'cold')}"
    wide = [s for s in judged if not error_confined(s, truth["working_set"])]
    assert len(wide) <= k, trace(judged, "working_set_error")


def test_a_load_that_starts_and_ends_shows_within_a_window_and_an_aggregation(checks: dict) -> None:
    assert_follows_load(check(checks, "damon_sysfs/follow_load"))
