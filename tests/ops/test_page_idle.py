"""PageIdleOps against a fake /proc + /sys tree with kernel page_idle semantics emulated."""

from __future__ import annotations

import random

import pytest

from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from tests.support.simulation import SummarizingMonitor
from exporter.model.errors import AccessDenied, BackendUnavailable, ProcessGone
from exporter.model.process import ProcessRef
from exporter.engines.page_idle.ops_page_idle import PageIdleOps
from exporter.procfs.io import PosixIO
from exporter.engines.page_idle.ops_simulated import VirtualClock

from .fakekernel import PAGE, FakeKernel, FakeKernelIO

PID = 321
A = 0x10000000  # a 1 MiB mapping
B = 0x20000000  # a 4 MiB mapping (2 MiB aligned: room for one THP)
HIGH = 0x7FF000000000


@pytest.fixture
def kernel(tmp_path):
    k = FakeKernel(tmp_path)
    k.add_process(PID, [(A, A + (1 << 20)), (B, B + (4 << 20)), (HIGH, HIGH + 0x21000), (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, "--xp")])
    return k


def make_ops(k: FakeKernel, io: FakeKernelIO | None = None) -> tuple[PageIdleOps, FakeKernelIO]:
    io = io or FakeKernelIO(k)
    return PageIdleOps(proc_root=k.proc_root, sys_root=k.sys_root, io=io, rng=random.Random(1)), io


REF = ProcessRef(PID, 4242)


# -- availability ----------------------------------------------------------------------


def test_available_on_a_full_tree(kernel):
    ok, why = PageIdleOps.available(proc_root=kernel.proc_root, sys_root=kernel.sys_root)
    assert ok, why
    assert why == f"{kernel.sys_root}/kernel/mm/page_idle/bitmap is writable and pagemap gives PFNs"


def test_unavailable_without_bitmap(tmp_path):
    k = FakeKernel(tmp_path, page_idle=False)
    ok, why = PageIdleOps.available(proc_root=k.proc_root, sys_root=k.sys_root)
    assert not ok
    assert why == (
        f"{k.sys_root}/kernel/mm/page_idle/bitmap does not exist "
        "(kernel built without CONFIG_IDLE_PAGE_TRACKING)"
    )
    with pytest.raises(BackendUnavailable) as e:
        PageIdleOps(proc_root=k.proc_root, sys_root=k.sys_root)
    assert str(e.value) == why


def test_unavailable_without_cap_sys_admin(tmp_path):
    k = FakeKernel(tmp_path, cap_sys_admin=False)
    ok, why = PageIdleOps.available(proc_root=k.proc_root, sys_root=k.sys_root)
    assert (ok, why) == (
        False,
        "page_idle needs CAP_SYS_ADMIN to read PFNs from /proc/PID/pagemap (the kernel reports them as 0 without it)",
    )


def test_unavailable_when_bitmap_not_writable(kernel):
    io = FakeKernelIO(kernel)
    io.deny.add(io.bitmap_path)
    ok, why = PageIdleOps.available(proc_root=kernel.proc_root, sys_root=kernel.sys_root, io=io)
    assert (ok, why) == (False, f"cannot open {io.bitmap_path} read-write: Permission denied (needs root)")
    with pytest.raises(AccessDenied) as e:
        make_ops(kernel, io)
    assert str(e.value) == (
        f"cannot open {io.bitmap_path}: Permission denied; page_idle needs root "
        "(CAP_SYS_ADMIN, and CAP_SYS_PTRACE for other users' processes)"
    )


# -- mappings and process identity -----------------------------------------------------


def test_mappings_drop_vsyscall_and_kernel_addresses(kernel):
    ops, _ = make_ops(kernel)
    assert list(ops.mappings(REF)) == [(A, A + (1 << 20)), (B, B + (4 << 20)), (HIGH, HIGH + 0x21000)]


def test_pid_reuse_is_process_gone(kernel):
    ops, _ = make_ops(kernel)
    with pytest.raises(ProcessGone, match=f"process {PID} exited \\(pid reused\\)"):
        ops.mappings(ProcessRef(PID, 1111))
    ops.mappings(ProcessRef(PID, 0))  # 0 = unknown start time: no check


def test_missing_process_is_process_gone(kernel):
    ops, _ = make_ops(kernel)
    with pytest.raises(ProcessGone, match="process 999 exited"):
        ops.prepare_access_checks(ProcessRef(999), [A])


def test_exit_between_prepare_and_check(kernel):
    kernel.map(PID, A, 100)
    ops, _ = make_ops(kernel)
    ops.prepare_access_checks(REF, [A])
    kernel.exit(PID)
    with pytest.raises(ProcessGone, match=f"process {PID} exited or exec'ed"):
        ops.check_accesses(REF, [A])


def test_exec_between_prepare_and_check(kernel):
    kernel.map(PID, A, 100)
    ops, _ = make_ops(kernel)
    ops.prepare_access_checks(REF, [A])
    kernel.exec(PID)  # same pid, same start time, new address space
    with pytest.raises(ProcessGone, match=f"process {PID} exited or exec'ed"):
        ops.check_accesses(REF, [A])
    ops.forget(REF)
    ops.prepare_access_checks(REF, [A])  # a fresh open sees the new image


def test_denied_pagemap_names_the_privilege(kernel):
    io = FakeKernelIO(kernel)
    io.deny.add(f"{kernel.proc_root}/{PID}/pagemap")
    ops, _ = make_ops(kernel, io)
    with pytest.raises(AccessDenied) as e:
        ops.prepare_access_checks(REF, [A])
    assert str(e.value) == (
        f"cannot access {kernel.proc_root}/{PID}/pagemap: Permission denied; page_idle needs root "
        "(CAP_SYS_ADMIN, and CAP_SYS_PTRACE for other users' processes)"
    )


def test_zeroed_pfns_are_access_denied_not_absent(tmp_path):
    k = FakeKernel(tmp_path, cap_sys_admin=False)
    k.add_process(PID, [(A, A + (1 << 20))])
    k.map(PID, A, 100)
    ops, _ = make_ops(k)
    with pytest.raises(AccessDenied) as e:
        ops.prepare_access_checks(REF, [A + PAGE, A])  # first address not present: no error by itself
    assert str(e.value) == (
        f"page_idle needs CAP_SYS_ADMIN to read PFNs from /proc/{PID}/pagemap (the kernel reports "
        "them as 0 without it); run the exporter as root or use the clear_refs backend"
    )


# -- access checks ---------------------------------------------------------------------


def test_idle_and_accessed_small_pages(kernel):
    addrs = [A, A + 10 * PAGE, B + 3 * PAGE]
    for i, a in enumerate(addrs):
        kernel.map(PID, a, 1000 + 70 * i)  # three different bitmap words
        kernel.access(PID, a)  # everything was accessed before we prepare
    ops, io = make_ops(kernel)
    ops.prepare_access_checks(REF, addrs)
    assert [kernel.pages[1000 + 70 * i].idle for i in range(3)] == [True, True, True]
    kernel.access(PID, A + 10 * PAGE)
    assert ops.check_accesses(REF, addrs) == [False, True, False]
    # the next round starts afresh
    ops.prepare_access_checks(REF, addrs)
    kernel.access(PID, A)
    kernel.access(PID, B + 3 * PAGE)
    assert ops.check_accesses(REF, addrs) == [True, False, True]


def test_neighbouring_addresses_share_reads(kernel):
    addrs = [A + i * PAGE for i in range(0, 40, 4)]
    for i, a in enumerate(addrs):
        kernel.map(PID, a, 2000 + i)  # all in one bitmap word
    ops, io = make_ops(kernel)
    ops.prepare_access_checks(REF, addrs)
    assert io.calls["pread:pagemap"] == 1
    assert io.calls["pwrite:bitmap"] == 1
    assert io.calls["pread:bitmap"] == 1
    kernel.access(PID, addrs[3])
    assert ops.check_accesses(REF, addrs) == [i == 3 for i in range(10)]
    assert io.calls["pread:pagemap"] == 2
    assert io.calls["pread:bitmap"] == 2


def test_not_present_swapped_and_faulted_in(kernel):
    present_then_gone = A
    swapped_then_gone = A + PAGE
    absent_both = A + 2 * PAGE
    faulted_in = A + 3 * PAGE
    kernel.map(PID, present_then_gone, 300)
    kernel.map(PID, swapped_then_gone, 301)
    ops, _ = make_ops(kernel)
    addrs = [present_then_gone, swapped_then_gone, absent_both, faulted_in]
    ops.prepare_access_checks(REF, addrs)
    kernel.unmap(PID, present_then_gone)
    kernel.unmap(PID, swapped_then_gone, swap=True)
    kernel.map(PID, faulted_in, 302)
    assert ops.check_accesses(REF, addrs) == [None, None, None, True]


def test_pfn_change_is_discarded_not_a_hit(kernel):
    kernel.map(PID, A, 400)
    kernel.map(PID, A + PAGE, 401)
    ops, _ = make_ops(kernel)
    ops.prepare_access_checks(REF, [A, A + PAGE])
    kernel.migrate(PID, A, 4000)  # the new frame's idle bit is clear: a naive read says "hit"
    assert ops.check_accesses(REF, [A, A + PAGE]) == [None, False]


def test_non_lru_page_refusing_the_mark_is_discarded(kernel):
    kernel.map(PID, A, 500, lru=False)  # e.g. the zero page, or a page under migration
    kernel.map(PID, A + PAGE, 501)
    ops, _ = make_ops(kernel)
    ops.prepare_access_checks(REF, [A, A + PAGE])
    assert kernel.pages[500].idle is False
    assert ops.check_accesses(REF, [A, A + PAGE]) == [None, False]


def test_access_racing_with_the_mark_is_a_hit(kernel):
    kernel.map(PID, A, 600)
    kernel.map(PID, A + PAGE, 601)
    io = FakeKernelIO(kernel)
    io.after_bitmap_write = lambda: kernel.access(PID, A)  # accessed right after marking
    ops, _ = make_ops(kernel, io)
    ops.prepare_access_checks(REF, [A, A + PAGE])
    io.after_bitmap_write = None
    assert ops.check_accesses(REF, [A, A + PAGE]) == [True, False]


def test_thp_tail_pages_are_checked_on_the_head(kernel):
    kernel.map_thp(PID, B, 8192)
    ops, io = make_ops(kernel)
    tail1, tail2 = B + 7 * PAGE, B + 300 * PAGE
    ops.prepare_access_checks(REF, [tail1, tail2])
    assert kernel.pages[8192].idle is True
    assert not kernel.pages[8192 + 7].idle  # tails are never marked
    # one kpageflags read for the two tails' own flags, one for the 2 MiB block: the
    # second tail reuses the first tail's head lookup
    assert io.calls["pread:kpageflags"] == 2
    assert ops.check_accesses(REF, [tail1, tail2]) == [False, False]  # not 100% hot
    ops.prepare_access_checks(REF, [tail1, tail2])
    kernel.access(PID, B + 511 * PAGE)  # any subpage access makes the folio not idle
    assert ops.check_accesses(REF, [tail1, tail2]) == [True, True]


def test_thp_head_address(kernel):
    kernel.map_thp(PID, B, 8192)
    ops, _ = make_ops(kernel)
    ops.prepare_access_checks(REF, [B])
    assert ops.check_accesses(REF, [B]) == [False]


def test_check_without_prepare_is_no_sample(kernel):
    kernel.map(PID, A, 700)
    ops, _ = make_ops(kernel)
    assert ops.check_accesses(REF, [A]) == [None]
    ops.prepare_access_checks(REF, [A])
    assert ops.check_accesses(REF, [A, A + PAGE]) == [None, None]  # not the prepared addresses


# -- resident bytes --------------------------------------------------------------------


def test_resident_bytes_exact_for_small_ranges(kernel):
    kernel.map_range(PID, A, A + 37 * PAGE, 1000)
    ops, io = make_ops(kernel)
    assert [r.bytes for r in ops.resident_bytes(REF, [(A, A + 256 * PAGE), (A + 10 * PAGE, A + 20 * PAGE), (A + 100 * PAGE, A + 200 * PAGE)])] == [
        37 * PAGE,
        10 * PAGE,
        0,
    ]
    assert io.calls["pread:pagemap"] == 3


def test_resident_bytes_sampled_for_large_ranges(kernel):
    # 4 MiB = 1024 pages, the first 300 and pages 700..799 resident: two contiguous runs
    kernel.map_range(PID, B, B + 300 * PAGE, 10000)
    kernel.map_range(PID, B + 700 * PAGE, B + 800 * PAGE, 20000)
    ops, io = make_ops(kernel)
    truth = 400 * PAGE
    for _ in range(20):
        ((est, _),) = [(r.bytes, r.shared) for r in ops.resident_bytes(REF, [(B, B + 1024 * PAGE)])]
        # at most the strata holding a run boundary can err: 3 boundaries x 1/16 of the range
        assert abs(est - truth) <= 3 * 64 * PAGE
    assert io.calls["pread:pagemap"] == 20 * 16
    kernel.map_range(PID, B + 300 * PAGE, B + 700 * PAGE, 30000)
    kernel.map_range(PID, B + 800 * PAGE, B + 1024 * PAGE, 40000)
    assert [r.bytes for r in ops.resident_bytes(REF, [(B, B + 1024 * PAGE)])] == [1024 * PAGE]


# -- interference ----------------------------------------------------------------------


def test_interference_reports_kdamond_and_numa_balancing(kernel):
    ops, _ = make_ops(kernel)
    assert ops.interference() == []
    kernel.set_kdamond_state(0, "off")
    kernel.set_kdamond_state(1, "on")
    (kernel.proc / "sys/kernel/numa_balancing").write_text("1\n")
    assert ops.interference() == [
        "kernel DAMON is running (kdamond 1): it sets and tests the same page idle flags, so "
        "access checks of pages it also monitors are unreliable",
        f"NUMA balancing is enabled ({kernel.proc_root}/sys/kernel/numa_balancing = 1): page "
        "migrations change PFNs, which discards those samples",
    ]


def test_plain_posix_io_reads_the_fake_tree(kernel):
    """The production I/O object reads the crafted pagemap/kpageflags files as the kernel's."""
    kernel.map_thp(PID, B, 8192)
    kernel.map(PID, A, 77)
    ops = PageIdleOps(proc_root=kernel.proc_root, sys_root=kernel.sys_root, io=PosixIO())
    assert [r.bytes for r in ops.resident_bytes(REF, [(A, A + 4 * PAGE), (B, B + 2 * 512 * PAGE)])] == [PAGE, 512 * PAGE]
    assert ops._heads([8192 + 5, 77, 8192]) == [8192, 77, 8192]
    ops.close()


# -- the real monitor on the fake kernel ----------------------------------------------


def test_monitor_finds_the_hot_megabyte(kernel):
    """DAMON's loop over PageIdleOps: 1 MiB of 5 MiB resident is hot, the rest cold."""
    kernel.map_range(PID, A, A + (1 << 20), 1000)  # hot
    kernel.map_range(PID, B, B + (4 << 20), 3000)  # cold
    ops, _ = make_ops(kernel)
    clock = VirtualClock()

    def sleep(s: float) -> None:
        for a in range(A, A + (1 << 20), PAGE):
            kernel.access(PID, a)
        clock.sleep(s)

    attrs = MonitoringAttrs(sample_interval=0.1, aggregation_interval=1.0, update_interval=5.0, min_regions=10, max_regions=100)
    mon = SummarizingMonitor(ops, attrs, cold_age=5.0, working_set_window=2.0, rng=random.Random(3), clock=clock, wall_clock=clock, sleep=sleep)
    mon.set_targets([TargetSpec("fake", (REF,))])
    snap = None
    for _ in range(200):
        snap = mon.step() or snap
    t = snap.target("fake")
    assert t.resident_bytes == 5 << 20
    assert abs(t.working_set_bytes - (1 << 20)) <= (1 << 20) // 10
    assert abs(t.cold_bytes - (4 << 20)) <= (4 << 20) // 10
    assert snap.stats.discarded_total > 0  # samples in unmapped gaps / the high mapping


def test_tail_without_head_in_its_block_is_discarded(kernel):
    """A tail whose head lies below its 2 MiB block (a gigantic hugetlb folio): no head to
    check, and never a false hit."""
    kernel.map(PID, A, 9000 + 5)
    page = kernel.pages[9005]
    page.head = 8000  # head in another block
    kernel._write_flags(9005)
    kernel.map(PID, A + PAGE, 9100)
    ops, _ = make_ops(kernel)
    ops.prepare_access_checks(REF, [A, A + PAGE])
    assert ops.check_accesses(REF, [A, A + PAGE]) == [None, False]


# -- page windows ----------------------------------------------------------------------


def test_a_window_reports_pages_used_since_it_opened(kernel):
    pages = [A + i * PAGE for i in range(4)]
    for i, a in enumerate(pages):
        kernel.map(PID, a, 5000 + 70 * i)
        kernel.access(PID, a)  # used before the window: not in it
    ops, _ = make_ops(kernel)
    w = ops.open_window(REF, pages)
    kernel.access(PID, pages[1])
    kernel.unmap(PID, pages[2])  # gone: cannot tell
    kernel.map(PID, A + 9 * PAGE, 5900)  # not a window page
    assert ops.read_window(w) == [(False, 1.0), (True, 1.0), (None, 0.0), (False, 1.0)]
    ops.close_window(w)


def test_a_sample_marking_a_watched_page_keeps_what_the_window_saw(kernel):
    kernel.map(PID, A, 6000)
    kernel.map(PID, A + PAGE, 6001)
    ops, io = make_ops(kernel)
    w = ops.open_window(REF, [A, A + PAGE])
    kernel.access(PID, A)
    # the monitor's samples land on both pages: their marks would erase the access
    ops.prepare_access_checks(REF, [A, A + PAGE])
    assert ops.check_accesses(REF, [A, A + PAGE]) == [False, False]
    # a second window opened on the same pages starts afresh and erases nothing
    w2 = ops.open_window(REF, [A, A + PAGE])
    assert ops.read_window(w) == [(True, 1.0), (False, 1.0)]
    assert ops.read_window(w2) == [(False, 1.0), (False, 1.0)]
    ops.close_window(w)
    ops.close_window(w2)
    # nothing is watched any more: a mark reads nothing first
    before = io.calls["pread:bitmap"]
    ops.prepare_access_checks(REF, [A])
    assert io.calls["pread:bitmap"] == before + 1  # the read-back of the mark only


def test_a_window_weighs_a_shared_page_by_its_share_and_sees_any_mapper(kernel):
    kernel.add_process(PID + 1, [(A, A + (1 << 20))])
    kernel.map(PID, A, 7000)
    kernel.map(PID + 1, A, 7000)  # one frame, two page tables
    kernel.map(PID, A + PAGE, 7001)
    ops, _ = make_ops(kernel)
    w = ops.open_window(REF, [A, A + PAGE, A + 2 * PAGE])
    kernel.access(PID + 1, A)  # the other process used it
    kernel.map(PID, A + 2 * PAGE, 7002)  # faulted in since the mark: used
    assert ops.read_window(w) == [(True, 0.5), (False, 1.0), (True, 1.0)]


def test_forgetting_a_process_stops_its_windows(kernel):
    kernel.map(PID, A, 8000)
    ops, io = make_ops(kernel)
    ops.open_window(REF, [A])
    ops.forget(REF)
    before = io.calls["pread:bitmap"]
    ops.prepare_access_checks(REF, [A])
    assert io.calls["pread:bitmap"] == before + 1


def test_a_window_draws_only_present_pages(kernel, monkeypatch):
    present = [A + i * PAGE for i in (3, 10, 11, 200, 255)]
    for i, a in enumerate(present):
        kernel.map(PID, a, 9000 + i)
    ops, _ = make_ops(kernel)
    rng = random.Random(4)
    got, count = ops.present_pages(REF, A, A + (1 << 20), 3, rng)
    assert count == 5
    assert len(got) == 3 and len(set(got)) == 3 and set(got) <= set(present) and got == sorted(got)
    assert ops.present_pages(REF, A, A + (1 << 20), 10, rng) == (present, 5)  # fewer than asked: all
    assert ops.present_pages(REF, B, B + (1 << 20), 4, rng) == ([], 0)
    # above the scan limit, runs at random places are read, and only present pages come back
    import exporter.engines.page_idle.ops_page_idle as mod
    monkeypatch.setattr(mod, "PRESENT_SCAN_PAGES", 128)
    monkeypatch.setattr(mod, "PRESENT_RUN", 64)
    spread = {B + i * PAGE for i in range(0, 1024, 4)}  # every run holds present pages
    for i, a in enumerate(sorted(spread)):
        kernel.map(PID, a, 12000 + i)
    seen = set()
    for _ in range(20):
        got, count = ops.present_pages(REF, B, B + 1024 * PAGE, 8, rng)
        assert len(got) == 8 and set(got) <= spread
        assert count == 256  # two runs of 64 read, each a quarter present: scaled to 1024 pages
        seen |= set(got)
    assert len(seen) > 64  # not the same runs every time


def test_a_window_reads_at_most_the_scan_bound_of_a_huge_region(kernel):
    """A region of 4 GiB of virtual space (a JVM's reservation, a sparse mapping) costs a
    window at most PRESENT_SCAN_PAGES pagemap entries (512 KiB), not its 8 MiB of
    pagemap; the present pages of the runs read still stand for the whole region."""
    from exporter.engines.page_idle.ops_page_idle import PRESENT_RUN, PRESENT_SCAN_PAGES
    base = 0x100000000
    pages = 1 << 20  # 4 GiB
    kernel.add_process(PID + 7, [(base, base + pages * PAGE)])
    for i in range(0, pages, PRESENT_RUN):  # one present page at the start of every run
        kernel.map(PID + 7, base + i * PAGE, 100000 + i // PRESENT_RUN)
    ops, io = make_ops(kernel)
    ref = ProcessRef(PID + 7, 4242)
    before = io.read_bytes["pagemap"]
    got, count = ops.present_pages(ref, base, base + pages * PAGE, 16, random.Random(2))
    assert io.read_bytes["pagemap"] - before == PRESENT_SCAN_PAGES * 8
    assert len(got) == 16 and all((a - base) // PAGE % PRESENT_RUN == 0 for a in got)
    assert count == pages // PRESENT_RUN  # one present page per run, scaled from the runs read
