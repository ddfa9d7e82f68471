"""Accuracy of the whole algorithm against an exact ground truth (simulated memory)."""

import pytest

from exporter.engines.page_idle.ops_simulated import HotRange

from tests.support.simulation import BASE, GiB, MiB, STACK, TEXT, aggregations, make_monitor, process_with_buffer

WINDOW = 4.0  # working_set_window: two aggregations
COLD = 8.0  # cold_age: four aggregations


def within(value, truth, tolerance=0.10):
    return abs(value - truth) <= tolerance * truth


@pytest.mark.parametrize("seed", range(5))
def test_ten_percent_hot_set_in_one_gib_is_found(seed):
    hot = HotRange(BASE + 300 * MiB, BASE + 400 * MiB)
    proc = process_with_buffer(GiB, [hot])
    mon, _, _ = make_monitor({1: proc}, seed=seed, cold_age=COLD, working_set_window=WINDOW)
    resident = GiB + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    truth_ws, truth_cold = 100 * MiB, resident - 100 * MiB
    found_at = None
    tail_ok = 0
    for i, snap in enumerate(aggregations(mon, 60), start=1):
        t = snap.target("t")
        assert t.resident_bytes == resident  # exact: the simulation's residency is exact
        ok = within(t.working_set_bytes, truth_ws) and within(t.cold_bytes, truth_cold)
        if ok and found_at is None:
            found_at = i
        if i > 40:
            tail_ok += ok
    # found within a bounded number of aggregations, and it stays found
    assert found_at is not None and found_at <= 30, found_at
    assert tail_ok >= 16, tail_ok  # at least 80% of the last 20 aggregations


def test_moving_hot_set_is_followed():
    move_at = 1000.0 + 60.0  # virtual clock starts at 1000
    a = HotRange(BASE + 100 * MiB, BASE + 200 * MiB, active_until=move_at)
    b = HotRange(BASE + 700 * MiB, BASE + 800 * MiB, active_from=move_at)
    mon, _, clk = make_monitor({1: process_with_buffer(GiB, [a, b])}, seed=7, cold_age=COLD, working_set_window=WINDOW)
    list(aggregations(mon, 30))  # 60 s: converged on the first hot set
    followed_after = None
    for i, snap in enumerate(aggregations(mon, 40), start=1):
        t = snap.target("t")
        in_b = sum(r.resident_bytes for r in t.regions if r.idle_seconds < WINDOW and r.start >= BASE + 690 * MiB and r.end <= BASE + 810 * MiB)
        in_a = sum(r.resident_bytes for r in t.regions if r.idle_seconds < WINDOW and r.end <= BASE + 210 * MiB and r.start >= BASE + 90 * MiB)
        if within(t.working_set_bytes, 100 * MiB) and in_b >= 90 * MiB and in_a == 0:
            followed_after = i
            break
    assert followed_after is not None and followed_after <= 25, followed_after


def test_all_cold_target():
    mon, _, _ = make_monitor({1: process_with_buffer(GiB)}, seed=1, cold_age=COLD, working_set_window=WINDOW)
    snaps = list(aggregations(mon, 10))
    t = snaps[-1].target("t")
    assert t.working_set_bytes == 0
    assert t.cold_bytes == t.resident_bytes > GiB
    assert t.cold_ratio == 1.0
    # before cold_age has passed nothing may be called cold: we have not watched long enough
    first = snaps[0].target("t")
    assert first.cold_bytes == 0 and first.regions[0].idle_seconds == pytest.approx(2.0)
    # nor in the working set: nothing was seen accessed, and the window is not over yet;
    # the error estimate says so (every byte is unknown)
    assert first.working_set_bytes == 0
    assert first.working_set_error_bytes == first.resident_bytes
    assert t.working_set_error_bytes == 0 and t.cold_error_bytes == 0


def test_all_hot_target():
    hot = [HotRange(a, b) for a, b in (TEXT, (BASE, BASE + GiB), STACK)]
    mon, _, _ = make_monitor({1: process_with_buffer(GiB, hot)}, seed=2, cold_age=COLD, working_set_window=WINDOW)
    t = list(aggregations(mon, 10))[-1].target("t")
    assert t.cold_bytes == 0
    assert t.working_set_bytes == t.resident_bytes
    assert all(r.frequency == 1.0 for r in t.regions)
    assert t.frequency_histogram[0] == (0, 0)  # no byte at frequency 0
    assert t.frequency_histogram[-2] == (1, t.resident_bytes)


def test_non_resident_memory_is_neither_hot_nor_cold():
    # 1 GiB mapped, only the first 256 MiB resident, of which 64 MiB hot
    proc = process_with_buffer(
        GiB,
        [HotRange(BASE, BASE + 64 * MiB)],
        resident=[TEXT, (BASE, BASE + 256 * MiB), STACK],
    )
    mon, _, _ = make_monitor({1: proc}, seed=3, cold_age=COLD, working_set_window=WINDOW)
    resident = 256 * MiB + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    t = list(aggregations(mon, 40))[-1].target("t")
    assert t.resident_bytes == resident
    assert within(t.working_set_bytes, 64 * MiB)
    assert within(t.cold_bytes, resident - 64 * MiB)
    assert t.cold_bytes + t.working_set_bytes <= t.resident_bytes
    assert t.idle_age_histogram[-1][1] == t.resident_bytes  # +Inf bucket = resident, not mapped


def test_nothing_resident_gives_zero_ratio():
    proc = process_with_buffer(GiB, resident=[])
    mon, _, _ = make_monitor({1: proc}, seed=4, cold_age=COLD, working_set_window=WINDOW)
    t = list(aggregations(mon, 6))[-1].target("t")
    assert (t.resident_bytes, t.cold_bytes, t.working_set_bytes, t.cold_ratio) == (0, 0, 0, 0.0)


def test_multi_process_target_adds_up():
    procs = {
        pid: process_with_buffer(256 * MiB, [HotRange(BASE, BASE + (pid * 16) * MiB)])
        for pid in (1, 2, 3)
    }
    mon, _, _ = make_monitor(procs, seed=5, cold_age=COLD, working_set_window=WINDOW)
    t = list(aggregations(mon, 40))[-1].target("t")
    assert t.pids == (1, 2, 3)
    per_proc = 256 * MiB + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    assert t.resident_bytes == 3 * per_proc
    assert within(t.working_set_bytes, (16 + 32 + 48) * MiB)
    assert {r.pid for r in t.regions} == {1, 2, 3}


def test_each_process_of_a_target_keeps_min_regions_of_its_own():
    """Five alike processes in one target (forked readers): no region grows past a tenth
    of its process (min_regions 10), so the hot edge of each lies in a region of at most
    that size, where the kernel's context-wide limit would allow half a process."""
    procs = {pid: process_with_buffer(128 * MiB, [HotRange(BASE, BASE + 16 * MiB)]) for pid in range(1, 6)}
    mon, _, _ = make_monitor(procs, seed=7, cold_age=COLD, working_set_window=WINDOW)
    per_proc = 128 * MiB + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    for snap in aggregations(mon, 30):
        t = snap.target("t")
        assert max(r.end - r.start for r in t.regions) <= -(-per_proc // 10), snap.taken_at
        for pid in procs:
            assert sum(1 for r in t.regions if r.pid == pid) >= 10
    assert within(t.working_set_bytes, 5 * 16 * MiB)


def test_idle_age_distribution_sums_to_resident():
    hot = HotRange(BASE, BASE + 100 * MiB)
    mon, _, _ = make_monitor({1: process_with_buffer(GiB, [hot])}, seed=6, cold_age=COLD, working_set_window=WINDOW)
    for snap in aggregations(mon, 15):
        t = snap.target("t")
        buckets = [v for _, v in t.idle_age_histogram]
        assert buckets == sorted(buckets)  # cumulative
        assert buckets[-1] == t.resident_bytes
        fb = [v for _, v in t.frequency_histogram]
        assert fb == sorted(fb) and fb[-1] == t.resident_bytes
        assert t.idle_age_histogram[0][1] == sum(r.resident_bytes for r in t.regions if r.idle_seconds == 0)
