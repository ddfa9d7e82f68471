"""The clear_refs engine on real processes of this host (its kernel has clear_refs).

The workload (``tests/workloads/heap.c``) has the layout real programs have: one 512 MiB
buffer that the kernel keeps as ONE mapping, 64 MiB of it written continuously. Truth:
64 MiB working set, 448 MiB cold. Checked with 4 KiB pages, with THP, and with a buffer
made of 8 MAP_PRIVATE mmaps that the kernel merged; through the engine, through
``damon-exporter snapshot`` and through a running exporter's ``/metrics``.
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import subprocess
import time
from dataclasses import dataclass

import pytest

from exporter.engines.clear_refs.curves import period_length
from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.engines.clear_refs.engine import ReferencedBytesEngine
from exporter.engines.clear_refs.smaps import ProcSmaps
from exporter.model.errors import AccessDenied, ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import check_same_process
from exporter.summary import Policy, summarize
from tests.support.exporter import run_snapshot
from tests.ops.fakekernel import FakeKernel, FakeKernelIO
from tests.support.exporter import comm_target, fast_config
from tests.support.workloads import build_workload

MiB = 1 << 20
NOBODY = 65534
SIZE, HOT = 512, 64
WINDOW, COLD = 3.0, 6.0
#: the process' own code, stack and libc pages are resident and in use too
OVERHEAD = 4 * MiB


@dataclass
class Heap:
    proc: subprocess.Popen
    start: int
    end: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ref(self) -> ProcessRef:
        return ProcessRef(self.pid, check_same_process(PosixIO(), "/proc", ProcessRef(self.pid), "").start_time)


@pytest.fixture(scope="module")
def heap_bin(tmp_path_factory) -> str:
    return build_workload("heap.c", tmp_path_factory.mktemp("heap"), f"dxheap{os.getpid() % 100000}")


@pytest.fixture
def heap(heap_bin):
    started: list[Heap] = []

    def start(size: int = SIZE, hot: int = HOT, thp: int = 0, chunks: int = 1, move_ms: int = 0) -> Heap:
        p = subprocess.Popen([heap_bin, str(size), str(hot), str(thp), str(chunks), str(move_ms)], stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline().split()
        assert line and line[0] == "ready", f"heap workload failed: exit {p.poll()}"
        h = Heap(p, int(line[1], 16), int(line[2], 16))
        started.append(h)
        return h

    yield start
    for h in started:
        h.proc.kill()
        h.proc.wait()
        h.proc.stdout.close()


def engine() -> ReferencedBytesEngine:
    e = ReferencedBytesEngine(attrs=MonitoringAttrs(0.1, 1.0, 5.0, 3, 10))
    e.set_horizons((WINDOW, COLD))
    return e


def run_engine(e: ReferencedBytesEngine, seconds: float, policy=Policy(cold_age=COLD, working_set_window=WINDOW)):
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        agg = e.step()
        if agg is not None:
            out.append((agg, summarize(agg, policy)))
    return out


def within(value: int, truth: int, slack: int = 0) -> bool:
    return abs(value - truth) <= truth // 10 + slack


@pytest.mark.slow
@pytest.mark.parametrize("thp,chunks", [(0, 1), (1, 1), (0, 8)], ids=["4k-one-mapping", "thp", "merged-private-chunks"])
def test_one_big_mapping_is_measured_page_exactly(heap, thp, chunks):
    h = heap(thp=thp, chunks=chunks)
    e = engine()
    e.set_targets([TargetSpec("t", (h.ref,))])
    results = run_engine(e, COLD + 4.5)
    e.close()
    # every aggregation once cold_age has passed since the first clear
    late = [s.target("t") for agg, s in results if agg.taken_at - results[0][0].taken_at >= COLD]
    assert len(late) >= 3
    for t in late:
        assert within(t.resident_bytes, SIZE * MiB, OVERHEAD)
        assert within(t.working_set_bytes, HOT * MiB, OVERHEAD), t.working_set_bytes / MiB
        assert within(t.cold_bytes, (SIZE - HOT) * MiB), t.cold_bytes / MiB
    # the heap is one record (one mapping), coloured by its referenced fraction
    (big,) = [r for r in late[-1].regions if r.start <= h.start and r.end >= h.end]
    assert big.frequency == pytest.approx(HOT / SIZE, abs=0.02)
    assert results[-1][0].stats.errors_total == ()


@pytest.mark.slow
def test_a_moving_hot_set_gives_the_union_over_the_window(heap):
    """64 MiB hot, moving by 64 MiB every 1.5 s: within a 3 s window the hot set visits 2
    or 3 positions, so the working set is 128..192 MiB; within 6 s, 4..5 positions."""
    h = heap(move_ms=1500)
    e = engine()
    e.set_targets([TargetSpec("t", (h.ref,))])
    results = run_engine(e, COLD + 4.5)
    e.close()
    late = [s.target("t") for agg, s in results if agg.taken_at - results[0][0].taken_at >= COLD]
    for t in late:
        assert 2 * HOT * MiB * 9 // 10 <= t.working_set_bytes <= 3 * HOT * MiB * 11 // 10 + OVERHEAD
        assert (SIZE - 5 * HOT) * MiB * 9 // 10 <= t.cold_bytes <= (SIZE - 4 * HOT) * MiB * 11 // 10


@pytest.mark.slow
def test_a_second_clear_refs_writer_is_counted_for_as_long_as_it_writes(heap):
    """Another writer clears the process' bits after every fourth aggregation, 8 times: each
    clear is counted in damon_target_accessed_bits_reset_total, none in the sampler's
    errors. The workload touches a new 16 MiB every 300 ms, so the read after a clear
    (at most 1 s of moves: <= 5 positions, 80 MiB) finds Referenced far lower than the read
    before it (3 s since the engine's own restart: >= 10 positions, 160 MiB): tens of MiB
    above the 256 KiB the engine calls noise, so no clear can go unseen."""
    h = heap(size=512, hot=16, move_ms=300)
    e = engine()
    e.set_targets([TargetSpec("t", (h.ref,))])
    run_engine(e, 2.5)
    counts = []
    for _ in range(8):
        with open(f"/proc/{h.pid}/clear_refs", "w") as f:  # another tool, mid-period
            f.write("1")
        aggs = []
        while len(aggs) < 4:
            agg = e.step()
            if agg is not None:
                aggs.append(agg)
        counts.append(aggs[-1].targets[0].accessed_bits_resets)
        assert aggs[-1].stats.errors_total == ()
    e.close()
    assert counts == list(range(1, 9))


def test_exit_is_dropped_quietly_and_exec_is_gone(heap):
    h = heap(size=8, hot=1)
    e = engine()
    spec = TargetSpec("t", (h.ref,))
    e.set_targets([spec])
    run_engine(e, 1.2)
    h.proc.kill()
    h.proc.wait()
    (agg, _), *_ = run_engine(e, 1.1)
    assert agg.targets[0].pids == () and agg.targets[0].errors == () and agg.stats.errors_total == ()
    assert e.live_processes(spec.key) == 0
    e.close()

    p = subprocess.Popen(["/bin/sh", "-c", "read x; exec sleep 30"], stdin=subprocess.PIPE)
    try:
        ref = ProcessRef(p.pid, check_same_process(PosixIO(), "/proc", ProcessRef(p.pid), "").start_time)
        src = ProcSmaps()
        src.clear(ref)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        deadline = time.monotonic() + 10
        while open(f"/proc/{p.pid}/comm").read().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(ProcessGone, match=f"process {p.pid} exited or exec'ed"):
            src.read(ref)
        src.close()
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
            ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: own /proc files
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
def test_other_users_process_is_access_denied_and_own_works(heap):
    h = heap(size=8, hot=1)  # runs as root
    ref = h.ref

    kind, (name, msg) = _as_nobody(lambda: ProcSmaps().read(ref))
    assert (kind, name) == ("error", "AccessDenied")
    assert msg == (
        f"cannot access /proc/{h.pid}/pagemap: Permission denied; clear_refs needs ptrace "
        "access to the process (same uid, or CAP_SYS_PTRACE)"
    )

    def own() -> object:
        src = ProcSmaps()
        me = ProcessRef(os.getpid())
        src.clear(me)
        smaps = src.read(me)
        return len(smaps), sum(m.referenced for m in smaps)

    kind, (nmaps, referenced) = _as_nobody(own)
    assert kind == "ok"
    assert nmaps > 5 and referenced > 0  # python itself touched its own code and stack


def test_denied_smaps_and_clear_refs_on_a_fake_tree(tmp_path):
    k = FakeKernel(tmp_path, page_idle=False)
    k.add_process(77, [(0x1000, 0x3000)])
    d = k.proc / "77"
    (d / "clear_refs").write_bytes(b"")
    (d / "smaps").write_text("1000-3000 rw-p 00000000 00:00 0\nRss:  8 kB\nReferenced:  4 kB\nAnonymous:  8 kB\n")
    io = FakeKernelIO(k)
    src = ProcSmaps(proc_root=k.proc_root, io=io)
    ref = ProcessRef(77, 4242)
    src.clear(ref)
    assert (d / "clear_refs").read_bytes() == b"1"
    (m,) = src.read(ref)
    assert (m.start, m.end, m.rss, m.referenced, m.anonymous) == (0x1000, 0x3000, 8192, 4096, 8192)
    io.deny.add(f"{k.proc_root}/77/smaps")
    with pytest.raises(AccessDenied) as e:
        src.read(ref)
    assert str(e.value) == (
        f"cannot access {k.proc_root}/77/smaps: Permission denied; clear_refs needs ptrace access "
        "to the process (same uid, or CAP_SYS_PTRACE)"
    )
    src.forget(ref)
    io.deny.add(f"{k.proc_root}/77/clear_refs")
    with pytest.raises(AccessDenied, match="cannot access .*/77/clear_refs: Permission denied; clear_refs needs ptrace"):
        src.clear(ref)
    with pytest.raises(ProcessGone, match="process 77 exited \\(pid reused\\)"):
        ProcSmaps(proc_root=k.proc_root, io=io).clear(ProcessRef(77, 1))


@pytest.mark.slow
def test_snapshot_command_is_page_exact_on_one_big_mapping(heap):
    h = heap()
    r = run_snapshot("--pid", str(h.pid), "--backend", "clear_refs", "--duration", "10s",
                     "--aggregation-interval", "1s", "--working-set-window", "3s", "--cold-age", "6s", "--format", "json")
    assert r.returncode == 0, r.stderr
    (t,) = json.loads(r.stdout)["targets"]
    assert within(t["working_set_bytes"], HOT * MiB, OVERHEAD), t["working_set_bytes"] / MiB
    assert within(t["cold_bytes"], (SIZE - HOT) * MiB), t["cold_bytes"] / MiB


@pytest.mark.slow
def test_exporter_metrics_are_page_exact_at_every_scrape(heap, heap_bin, exporter):
    heap()
    comm = os.path.basename(heap_bin)[:15]
    e = exporter("backend: clear_refs\n" + fast_config(comm_target("heap", comm), cold_age="6s", window="3s",
                                                        sample="100ms", aggregation="1s", update="1s"))
    e.wait_ready()
    ready = time.time()
    # once the cold figure is measured in the second clear period, every figure is exact (the
    # first period begins while the heap may still be settling, and its figure stays
    # published for a whole period, which is now 2-3 cold_age long)
    second = ready + period_length(max(WINDOW, 2 * COLD), 1) + COLD - 1
    e.wait_for(lambda s: (s.get("damon_cold_measured_timestamp_seconds", target="heap") or 0) >= second,
               timeout=6 * COLD, what="the cold figure of the second clear period")
    for _ in range(8):
        s = e.scrape()
        assert within(int(s.get("damon_working_set_bytes", target="heap")), HOT * MiB, OVERHEAD), s.get("damon_working_set_bytes", target="heap") / MiB
        assert within(int(s.get("damon_cold_bytes", target="heap")), (SIZE - HOT) * MiB), (
            s.get("damon_cold_bytes", target="heap") / MiB, e.logs()[-3000:])
        # each figure is at most one clear period old: 2 to 3 cold_age (long enough past
        # cold_age to prove cold memory coming back), plus the wait for the tick before an
        # aggregation that a clear makes (under one aggregation), the aggregation that
        # publishes it, and a second for the sampler's ticks slipping on a busy machine
        now = time.time()
        assert now - s.get("damon_working_set_measured_timestamp_seconds", target="heap") <= 3 * COLD + 2 * 1 + 1
        assert now - s.get("damon_cold_measured_timestamp_seconds", target="heap") <= 3 * COLD + 2 * 1 + 1
        time.sleep(0.5)  # pacing the scrapes, as Prometheus would
