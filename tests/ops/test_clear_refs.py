"""ClearRefsOps against real child processes on this machine (and a fake tree for errors)."""

from __future__ import annotations

import ctypes
import os
import pickle
import random
import subprocess
import time

import pytest

from exporter.core.attrs import MonitoringAttrs
from exporter.core.engine import TargetSpec
from tests.core.sim import SummarizingMonitor
from exporter.ops.base import AccessDenied, ProcessGone, ProcessRef
from exporter.ops.clear_refs import ClearRefsOps
from exporter.ops.procfs import PosixIO, check_same_process

from .fakekernel import FakeKernel, FakeKernelIO

MiB = 1 << 20
NOBODY = 65534


class Toucher:
    """``tests/workloads/mappings.c``: N mappings of SIZE MiB, the first HOT written continuously."""

    def __init__(self, path: str, n: int, size_mib: int, hot: int, exit_after_ms: int = 0) -> None:
        self.proc = subprocess.Popen([path, str(n), str(size_mib), str(hot), str(exit_after_ms)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "ready", line
        self.addrs = [int(a, 16) for a in line[1:]]
        self.size = size_mib * MiB
        self.pid = self.proc.pid
        self.ref = ProcessRef(self.pid, check_same_process(PosixIO(), "/proc", ProcessRef(self.pid), "").start_time)

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no Rss in smaps_rollup")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def children(toucher):
    started: list[Toucher] = []

    def start(*args: int) -> Toucher:
        t = Toucher(toucher, *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def test_mappings_checks_and_resident_bytes(children):
    t = children(8, 16, 2)
    ops = ClearRefsOps()
    maps = list(ops.mappings(t.ref))
    for a in t.addrs:  # each 16 MiB mapping is its own range; guard pages are left out
        assert (a, a + t.size) in maps
    assert all(b <= 0x800000000000 for _, b in maps)
    ops.prepare_access_checks(t.ref, t.addrs)
    time.sleep(0.3)
    assert ops.check_accesses(t.ref, t.addrs) == [True, True] + [False] * 6
    assert ops.resident_bytes(t.ref, [(a, a + t.size) for a in t.addrs]) == [16 * MiB] * 8
    a = t.addrs[3]
    assert ops.resident_bytes(t.ref, [(a, a + 4 * MiB), (a - 4096, a)]) == [4 * MiB, 0]
    ops.close()


@pytest.mark.slow
def test_monitor_measures_working_set_and_cold_memory(children):
    """The real Monitor over ClearRefsOps: 2 of 8 x 16 MiB hot, 6 cold, for ~6 s."""
    t = children(8, 16, 2)
    ops = ClearRefsOps()
    attrs = MonitoringAttrs(sample_interval=0.2, aggregation_interval=1.0, update_interval=1.0, min_regions=3, max_regions=200)
    mon = SummarizingMonitor(ops, attrs, cold_age=3.0, working_set_window=2.0, rng=random.Random(5))
    mon.set_targets([TargetSpec("toucher", (t.ref,))])
    snaps = []
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:
        s = mon.step()
        if s is not None:
            snaps.append(s)
    snap = snaps[-1].target("toucher")
    truth_rss = t.rss()
    hot, cold = 2 * 16 * MiB, 6 * 16 * MiB
    assert abs(snap.resident_bytes - truth_rss) <= truth_rss // 10
    assert hot <= snap.working_set_bytes <= hot * 11 // 10  # + code/stack pages the loop uses
    assert abs(snap.cold_bytes - cold) <= cold // 10
    assert snap.pids == (t.pid,)
    # the 16 MiB regions are the mappings themselves: never split or merged
    regions = {(r.start, r.end): r for r in snap.regions}
    for i, a in enumerate(t.addrs):
        r = regions[(a, a + t.size)]
        assert r.resident_bytes == 16 * MiB
        assert (r.idle_seconds == 0) == (i < 2)
    assert snaps[-1].stats.errors_total == ()
    assert snaps[-1].backend == "clear_refs"
    ops.close()


def test_process_exiting_mid_run_is_dropped(children):
    stays = children(1, 2, 1)
    leaves = children(1, 2, 1, 600)
    ops = ClearRefsOps()
    attrs = MonitoringAttrs(sample_interval=0.1, aggregation_interval=0.5, update_interval=0.5, min_regions=3, max_regions=50)
    mon = SummarizingMonitor(ops, attrs, cold_age=3.0, working_set_window=2.0)
    mon.set_targets([TargetSpec("both", (stays.ref, leaves.ref))])
    first = last = None
    deadline = time.monotonic() + 1.8
    while time.monotonic() < deadline:
        s = mon.step()
        if s is not None:
            first = first or s
            last = s
    assert leaves.proc.poll() == 0  # it did exit during the run
    assert first.target("both").pids == tuple(sorted((stays.pid, leaves.pid)))
    assert last.target("both").pids == (stays.pid,)
    assert last.target("both").errors == ()
    assert last.stats.errors_total == ()  # an exit is not an error
    ops.close()


def test_zombie_and_reaped_process_are_gone(children):
    t = children(1, 1, 0, 1)
    ops = ClearRefsOps()
    try:
        ops.mappings(t.ref)
    except ProcessGone:
        pass  # it may already have exited: fine, the point is below
    deadline = time.monotonic() + 10
    while open(f"/proc/{t.pid}/stat").read().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(ProcessGone, match=f"process {t.pid} exited"):
        ops.prepare_access_checks(t.ref, t.addrs)
    with pytest.raises(ProcessGone, match=f"process {t.pid} exited"):
        ops.mappings(t.ref)  # a fresh ops: the zombie is seen as gone too
    t.proc.wait()
    ops.forget(t.ref)
    with pytest.raises(ProcessGone, match=f"process {t.pid} exited"):
        ops.mappings(t.ref)


def test_exec_is_process_gone():
    p = subprocess.Popen(["/bin/sh", "-c", "read x; exec sleep 30"], stdin=subprocess.PIPE)
    try:
        ref = ProcessRef(p.pid, check_same_process(PosixIO(), "/proc", ProcessRef(p.pid), "").start_time)
        ops = ClearRefsOps()
        maps = list(ops.mappings(ref))
        ops.prepare_access_checks(ref, [maps[0][0]])
        p.stdin.write(b"go\n")
        p.stdin.flush()
        deadline = time.monotonic() + 10
        while open(f"/proc/{p.pid}/comm").read().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(ProcessGone, match=f"process {p.pid} exited or exec'ed"):
            ops.check_accesses(ref, [maps[0][0]])
    finally:
        p.kill()
        p.wait()


def _as_nobody(fn) -> object:
    """Run ``fn()`` in a forked child that dropped root for uid/gid nobody; return its
    result or the (type name, message) of the error it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            # setuid made us non-dumpable, which makes our own /proc files root's
            ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            try:
                out = ("ok", fn())
            except Exception as e:  # noqa: BLE001 - reported to the parent
                out = ("error", (type(e).__name__, str(e)))
            os.write(w, pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_other_users_process_is_access_denied_and_own_works(children):
    t = children(1, 1, 0)  # runs as root

    def other() -> object:
        ClearRefsOps().mappings(t.ref)

    kind, (name, msg) = _as_nobody(other)
    assert (kind, name) == ("error", "AccessDenied")
    assert msg == (
        f"cannot access /proc/{t.pid}/pagemap: Permission denied; clear_refs needs ptrace "
        "access to the process (same uid, or CAP_SYS_PTRACE)"
    )

    def own() -> object:
        ops = ClearRefsOps()
        ref = ProcessRef(os.getpid())
        maps = list(ops.mappings(ref))
        ops.prepare_access_checks(ref, [a for a, _ in maps])
        res = ops.check_accesses(ref, [a for a, _ in maps])
        return len(maps), sum(1 for x in res if x)

    kind, (nmaps, hits) = _as_nobody(own)
    assert kind == "ok"
    assert nmaps > 5 and hits >= 1  # python itself touched its own code and stack


def test_denied_smaps_and_clear_refs_on_a_fake_tree(tmp_path):
    k = FakeKernel(tmp_path, page_idle=False)
    k.add_process(77, [(0x1000, 0x3000)])
    d = k.proc / "77"
    (d / "clear_refs").write_bytes(b"")
    (d / "smaps").write_text("1000-3000 rw-p 00000000 00:00 0\nRss:  8 kB\nReferenced:  4 kB\n")
    io = FakeKernelIO(k)
    ops = ClearRefsOps(proc_root=k.proc_root, io=io)
    ref = ProcessRef(77, 4242)
    assert list(ops.mappings(ref)) == [(0x1000, 0x3000)]
    ops.prepare_access_checks(ref, [0x1000])
    assert (d / "clear_refs").read_bytes() == b"1"
    assert ops.check_accesses(ref, [0x1000, 0x5000]) == [True, None]
    assert ops.resident_bytes(ref, [(0x1000, 0x3000), (0x2000, 0x3000)]) == [8192, 4096]
    io.deny.add(f"{k.proc_root}/77/smaps")
    with pytest.raises(AccessDenied) as e:
        ops.check_accesses(ref, [0x1000])
    assert str(e.value) == (
        f"cannot access {k.proc_root}/77/smaps: Permission denied; clear_refs needs ptrace access "
        "to the process (same uid, or CAP_SYS_PTRACE)"
    )
    ops.forget(ref)
    io.deny.add(f"{k.proc_root}/77/clear_refs")
    with pytest.raises(AccessDenied, match="cannot access .*/77/clear_refs: Permission denied; clear_refs needs ptrace"):
        ops.prepare_access_checks(ref, [0x1000])
    with pytest.raises(ProcessGone, match="process 77 exited \\(pid reused\\)"):
        ops.mappings(ProcessRef(77, 1))
