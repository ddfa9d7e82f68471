"""Checks of the page_idle backend that run *inside* the test VM (see test_vm_page_idle.py).

Run as ``python -m tests.vm.guest_checks --workload BIN --out FILE [CHECK ...]`` in the
guest. Each check starts workloads with a known access pattern (tests/workloads/workload.c),
monitors them with the real :class:`~exporter.engines.page_idle.monitor.Monitor` over
:class:`~exporter.engines.page_idle.ops_page_idle.PageIdleOps`, and records *measurements and the truth*, not
verdicts: the host-side tests assert, so a failure shows the numbers. Results are written
to ``--out`` after every check, so that a guest that dies half-way still reports the checks
it finished. A check that raises is recorded with its traceback.

Attributes are chosen for speed under emulation: 100 ms samples, 1 s aggregations (10
samples per region each), and a cold age / working-set window of 4 s, so a steady state is
reached ~10 s after a workload becomes ready.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from tests.support.simulation import SummarizingMonitor
from exporter.summary import Policy, Summary, TargetSummary, summarize
from exporter.summary.promotion import PromotionTracker
from exporter.summary.stat import seen_within
from exporter.model.errors import OpsError
from exporter.engines.damon_sysfs.tree import BUSY_PAUSE, BUSY_RETRIES
from exporter.model.process import ProcessRef
from exporter.engines.page_idle.ops_page_idle import PageIdleOps
from tests.support.wait import wait_for

MiB = 1 << 20
ATTRS = MonitoringAttrs(
    sample_interval=0.1, aggregation_interval=1.0, update_interval=2.0, min_regions=10, max_regions=200
)
#: Kernel DAMON gets the same attributes as page_idle: the table compares backends, not
#: intervals. (At 5 ms, under TCG, a hot pass of the workload takes longer than a sample, a
#: hot page is seen accessed in only some of the 200 samples, and DAMON's merge threshold, a
#: tenth of the samples, then lets cold neighbours of the hot/cold boundary have their age
#: restarted. The 5 ms defaults are exercised by the lifecycle check and measured by
#: bench/kernel_damon_compare.py.)
DAMON_SYSFS_ATTRS = ATTRS
COLD_AGE = 4.0
WORKING_SET_WINDOW = 4.0
#: A hot/cold boundary settles once a split lands close to it (regions next to it have
#: their age restarted until then), in a few aggregations from the first three regions:
#: the tests judge the last 5 aggregations of 20.
ACCURACY_SECONDS = 20
#: checks at the backends' own default attributes (page_idle: 500 ms samples, 10 s
#: aggregations), with a cold age and working-set window a check this long can see
DEFAULTS_SECONDS = 95
DEFAULTS_POLICY = Policy(cold_age=30.0, working_set_window=20.0)
#: the promotion check: 20 s steady, then a chunk back every 8 s (five of them)
PROMOTION_SECONDS = 62
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
PAGE_IDLE_BITMAP = "/sys/kernel/mm/page_idle/bitmap"
MONITOR_CPU = 0
WORKLOAD_CPU = 1 if (os.cpu_count() or 1) > 1 else 0


# -- workloads -----------------------------------------------------------------------------


class Workload:
    """One workload process (and its children); parses its READY/MOVED lines."""

    def __init__(self, binary: str, *args: str, nready: int = 1, timeout: float = 120) -> None:
        # the workload gets vCPU 1 to itself and the monitor stays on vCPU 0 (see main()):
        # sharing one emulated CPU, the workload would stall while the monitor runs
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=lambda: os.sched_setaffinity(0, {WORKLOAD_CPU}))
        self._buf = b""
        self.events: list[tuple[str, dict]] = []
        self.ready: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(self.ready) < nready:
            if not self._poll(deadline - time.monotonic()):
                self.stop()
                raise RuntimeError(f"workload {args} not ready after {timeout}s (got {self.ready})")

    def _poll(self, timeout: float) -> bool:
        """Read what is available (waiting up to ``timeout``); False on timeout or EOF."""
        if timeout <= 0:
            return False
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return False
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return False
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            kind, _, payload = line.decode().partition(" ")
            ev = json.loads(payload)
            self.events.append((kind, ev))
            if kind == "READY":
                self.ready.append(ev)
        return True

    def drain(self) -> None:
        while self._poll(0.001):
            pass

    @property
    def pids(self) -> list[int]:
        return [r["pid"] for r in self.ready]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def start_time_of(pid: int) -> int:
    data = open(f"/proc/{pid}/stat", "rb").read()
    return int(data[data.rfind(b")") + 1 :].split()[19])


def refs(pids: list[int]) -> tuple[ProcessRef, ...]:
    return tuple(ProcessRef(p, start_time_of(p)) for p in pids)


def smaps_of(pid: int, addr: int) -> dict[str, int]:
    """The smaps fields (bytes) of the VMA starting at ``addr``."""
    out: dict[str, int] = {}
    cur = False
    for line in open(f"/proc/{pid}/smaps"):
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            cur = int(m[1], 16) == addr
            continue
        if cur:
            k, _, v = line.partition(":")
            v = v.strip()
            if v.endswith(" kB"):
                out[k] = int(v[:-3]) * 1024
    return out


def rss_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- monitoring ------------------------------------------------------------------------------


def accessed_overlap(t: TargetSummary, start: int, end: int, pid: int | None = None) -> int:
    """Bytes of [start, end) covered by regions that saw an access in this aggregation."""
    total = 0
    for r in t.regions:
        if r.nr_accesses > 0 and (pid is None or r.pid == pid):
            total += max(0, min(r.end, end) - max(r.start, start))
    return total


def summary(t: TargetSummary, t0: float, snap: Summary) -> dict:
    return {
        "t": round(time.monotonic() - t0, 3),
        "pids": list(t.pids),
        "working_set": t.working_set_bytes,
        "working_set_error": t.working_set_error_bytes,
        "cold": t.cold_bytes,
        "cold_error": t.cold_error_bytes,
        "resident": t.resident_bytes,
        "nr_regions": t.nr_regions,
        "errors": list(t.errors),
        # returns from idleness (cumulative): the promotion counter, its error, every return
        "promoted": t.promotions.promoted_bytes if t.promotions else 0.0,
        "promoted_error": t.promotions.promoted_error_bytes if t.promotions else 0.0,
        "returned": t.promotions.count if t.promotions else 0.0,
        "checks_total": snap.stats.checks_total,
        "discarded_total": snap.stats.discarded_total,
        "errors_total": dict(snap.stats.errors_total),
    }


@dataclass
class Run:
    series: list[dict] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    other_rss: int = 0


Known = list[tuple[int, int, int]]  # (start, end, pid): memory whose truth we know


def known_bytes(t: TargetSummary, known: Known) -> tuple[int, int]:
    """(working set, cold) bytes *inside the known ranges*: the workload's buffers, fully
    resident, whose truth we know exactly. The target's totals also hold the processes' own
    code, stack and libc (~1 MiB each), whose truth nobody knows."""
    ws = cold = 0
    for x in t.regions:
        in_ws = seen_within(x, WORKING_SET_WINDOW)
        in_cold = x.idle_seconds >= COLD_AGE
        if not (in_ws or in_cold):
            continue
        ov = sum(max(0, min(x.end, e) - max(x.start, s)) for s, e, pid in known if pid == x.pid)
        ws += ov if in_ws else 0
        cold += ov if in_cold else 0
    return ws, cold


def other_rss(pids: list[int], known: Known) -> int:
    """Resident bytes of the processes outside the known ranges (their code, stack, libc)."""
    return sum(rss_of(p) for p in pids) - sum(e - s for s, e, _ in known)


def monitor(
    engine: "Summarizing",
    pids: list[int],
    seconds: float,
    known: Known,
    *,
    extra: Callable[[TargetSummary], dict] | None = None,
    during: Callable[[float], None] | None = None,
) -> Run:
    """Monitor ``pids`` as one target for ``seconds``; one summary per aggregation. The
    engine is closed at the end (kernel DAMON's kdamond is given back)."""
    m = engine
    m.set_targets([TargetSpec("workload", refs(pids))])
    run = Run(other_rss=other_rss(pids, known))
    t0 = time.monotonic()
    c0 = time.process_time()
    try:
        while (now := time.monotonic()) - t0 < seconds:
            if during is not None:
                during(now - t0)
            snap = m.step()
            if snap is None:
                continue
            t = snap.target("workload")
            s = summary(t, t0, snap)
            s["working_set_known"], s["cold_known"] = known_bytes(t, known)
            if extra is not None:
                s.update(extra(t))
            run.series.append(s)
    finally:
        m.close()
    run.cpu_seconds = time.process_time() - c0
    run.wall_seconds = time.monotonic() - t0
    return run


def hot_cold_overlap(r: dict) -> Callable[[TargetSummary], dict]:
    """Per aggregation: bytes of the hot part and of the rest of the buffer that lie in
    regions seen accessed (the first should be the hot size, the second zero)."""
    hot = (r["hot_addr"], r["hot_addr"] + r["hot_size"])
    buf = (r["addr"], r["addr"] + r["size"])

    def extra(t: TargetSummary) -> dict:
        acc_hot = accessed_overlap(t, *hot, pid=r["pid"])
        # the buffer's regions, in KiB from the buffer start: (offset, size, nr_accesses, age)
        regions = [((x.start - buf[0]) >> 10, x.size >> 10, x.nr_accesses, x.age)
                   for x in t.regions if x.pid == r["pid"] and x.end > buf[0] and x.start < buf[1]]
        return {"accessed_hot": acc_hot, "accessed_cold_part": accessed_overlap(t, *buf, pid=r["pid"]) - acc_hot,
                "buffer_regions": regions}

    return extra


def result(run: Run, truth: dict, **more: object) -> dict:
    return {"truth": truth, "series": run.series, "cpu_seconds": run.cpu_seconds,
            "wall_seconds": run.wall_seconds, "other_rss": run.other_rss, **more}


def buffer_of(r: dict) -> Known:
    return [(r["addr"], r["addr"] + r["size"], r["pid"])]


# -- checks ----------------------------------------------------------------------------------


def check_accuracy_4k(ctx: "Ctx") -> dict:
    """128 MiB resident, 32 MiB hot, 4 KiB pages."""
    w = Workload(ctx.binary, "--size", "128", "--hot", "32")
    try:
        r = w.ready[0]
        smaps = smaps_of(r["pid"], r["addr"])
        run = monitor(ctx.engine(), w.pids, ACCURACY_SECONDS, buffer_of(r), extra=hot_cold_overlap(r))
    finally:
        w.stop()
    return result(run, {"working_set": r["hot_size"], "cold": r["size"] - r["hot_size"], "buffer": r["size"]},
                  anon_huge_bytes=smaps.get("AnonHugePages", 0), buffer_rss=smaps.get("Rss", 0))


def _thp(ctx: "Ctx", map_tail_to_head: bool, seconds: float) -> dict:
    w = Workload(ctx.binary, "--size", "128", "--hot", "32", "--thp")
    try:
        r = w.ready[0]
        smaps = smaps_of(r["pid"], r["addr"])
        # without the tail-to-head mapping the sampled (tail) page itself is marked and
        # tested, as by a backend unaware of compound pages; page_idle ignores tail pages,
        # so such samples read "not idle", i.e. accessed
        run = monitor(ctx.engine(map_tail_to_head=map_tail_to_head), w.pids, seconds, buffer_of(r), extra=hot_cold_overlap(r))
    finally:
        w.stop()
    return result(run, {"working_set": r["hot_size"], "cold": r["size"] - r["hot_size"], "buffer": r["size"]},
                  anon_huge_bytes=smaps.get("AnonHugePages", 0), buffer_rss=smaps.get("Rss", 0),
                  thp_enabled=open(THP_ENABLED).read().strip())


def check_accuracy_thp(ctx: "Ctx") -> dict:
    """The same on a 2 MiB-aligned MADV_HUGEPAGE buffer: samples mostly hit tail pages."""
    return _thp(ctx, True, ACCURACY_SECONDS)


def check_thp_without_tail_mapping(ctx: "Ctx") -> dict:
    return _thp(ctx, False, 10)


def check_moving_hot_set(ctx: "Ctx") -> dict:
    """32 MiB hot at offset 0 of 128 MiB; on SIGUSR1 (after 8 s) it moves to offset 96 MiB.
    Per aggregation: bytes of the old and the new place in regions seen accessed."""
    w = Workload(ctx.binary, "--size", "128", "--hot", "32", "--hot-offset", "0", "--move-to", "96")
    r = w.ready[0]
    pid, hot = r["pid"], r["hot_size"]
    old = (r["hot_addr"], r["hot_addr"] + hot)
    new = (r["addr"] + 96 * MiB, r["addr"] + 96 * MiB + hot)
    buf = (r["addr"], r["addr"] + r["size"])
    moved_at: list[float] = []

    def during(t: float) -> None:
        if not moved_at and t >= 8.0:
            os.kill(pid, signal.SIGUSR1)
            moved_at.append(t)

    def extra(t: TargetSummary) -> dict:
        acc_buf = accessed_overlap(t, *buf)
        acc_old = accessed_overlap(t, *old)
        acc_new = accessed_overlap(t, *new)
        return {"accessed_old": acc_old, "accessed_new": acc_new, "accessed_elsewhere_in_buffer": acc_buf - acc_old - acc_new}

    try:
        run = monitor(ctx.engine(), w.pids, 24, buffer_of(r), extra=extra, during=during)
        w.drain()
    finally:
        w.stop()
    moved = [e for k, e in w.events if k == "MOVED"]
    return result(run, {"hot_size": hot, "old": old, "new": new, "buffer": r["size"]},
                  moved_at=moved_at[0] if moved_at else None, moved_event=moved[0] if moved else None)


def check_zero_page(ctx: "Ctx") -> dict:
    """64 MiB buffer with 16 MiB hot, plus 64 MiB read once (the shared zero page, which is
    on no LRU and refuses the idle mark: if refused marks were read back as "accessed",
    those 64 MiB would look hot)."""
    # the hot part sits at the top of the buffer (the workload's default), away from the
    # zero region mapped right below the buffer: a region straddling the zero region and a
    # hot part would count as accessed for reasons that have nothing to do with the zero page
    w = Workload(ctx.binary, "--size", "64", "--hot", "16", "--hot-offset", "48", "--zero", "64")
    r = w.ready[0]
    zero = (r["zero_addr"], r["zero_addr"] + r["zero_size"])

    regions = hot_cold_overlap(r)

    def extra(t: TargetSummary) -> dict:
        return {"accessed_zero": accessed_overlap(t, *zero), **regions(t)}

    try:
        run = monitor(ctx.engine(), w.pids, ACCURACY_SECONDS, buffer_of(r), extra=extra)
        rss = rss_of(r["pid"])  # the kernel does not count zero-page mappings in RSS
    finally:
        w.stop()
    return result(run, {"working_set": r["hot_size"], "cold": r["size"] - r["hot_size"],
                        "zero_size": r["zero_size"], "buffer": r["size"]},
                  process_rss=rss)


def check_exit_mid_run(ctx: "Ctx") -> dict:
    """Two processes in one target; one exits after 4 s. The monitor must carry on with the
    survivor, without an exception and without reporting an error."""
    # 64 MiB each: the process' own code, stack and libc add ~1 MiB to any working set,
    # which must stay small next to the hot part
    keep = Workload(ctx.binary, "--size", "64", "--hot", "16")
    leave = Workload(ctx.binary, "--size", "64", "--hot", "16", "--exit-after", "4")
    exc = None
    run = Run()
    try:
        known = buffer_of(keep.ready[0]) + buffer_of(leave.ready[0])
        run = monitor(ctx.engine(), keep.pids + leave.pids, ACCURACY_SECONDS, known, extra=hot_cold_overlap(keep.ready[0]))
    except Exception:  # recorded: the host test asserts there was none
        exc = traceback.format_exc()
    finally:
        leave_rc = leave.proc.wait(timeout=30)
        keep.stop()
    return result(run, {"working_set": keep.ready[0]["hot_size"], "cold": keep.ready[0]["size"] - keep.ready[0]["hot_size"]},
                  survivor=keep.pids[0], leaver=leave.pids[0], leaver_exit_code=leave_rc, exception=exc)


def check_multi_process(ctx: "Ctx") -> dict:
    """Three forked children with 32 MiB each, 8 MiB of it hot: one target of three."""
    w = Workload(ctx.binary, "--procs", "3", "--size", "32", "--hot", "8", nready=3)
    try:
        run = monitor(ctx.engine(), w.pids, ACCURACY_SECONDS, [k for r in w.ready for k in buffer_of(r)])
    finally:
        w.stop()
    hot = sum(r["hot_size"] for r in w.ready)
    size = sum(r["size"] for r in w.ready)
    return result(run, {"working_set": hot, "cold": size - hot, "buffer": size}, children=w.pids)


def pss_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


#: issue 19's workload at kernel DAMON's own defaults: what a damon_sysfs user gets
KERNEL_DEFAULTS_POLICY = Policy(cold_age=8.0, working_set_window=3.0)
#: long enough for the kernel to split its way to the hot edge from its first 10 regions
#: (at most one split per region per aggregation, and merges undo some) before the last
#: 30 s that are judged
KERNEL_DEFAULTS_SECONDS = 90


def check_accuracy_defaults(ctx: "Ctx") -> dict:
    """512 MiB resident, 64 MiB hot, at the backend's own default attributes (no
    ``monitoring:`` section), cold_age 8 s and working_set_window 3 s."""
    w = Workload(ctx.binary, "--size", "512", "--hot", "64")
    try:
        r = w.ready[0]
        engine = ctx.engine(default_attrs=True, policy=KERNEL_DEFAULTS_POLICY)
        run = monitor(engine, w.pids, KERNEL_DEFAULTS_SECONDS, buffer_of(r), extra=hot_cold_overlap(r))
    finally:
        w.stop()
    return result(run, {"working_set": r["hot_size"], "cold": r["size"] - r["hot_size"], "buffer": r["size"]})


#: issue 28: a load that starts and ends, at the backend's own default attributes, with a
#: window and cold age a check this short can see (the logic is the same at any scale)
FOLLOW_POLICY = Policy(cold_age=20.0, working_set_window=10.0)
#: seconds idle, hot, idle: each phase longer than a window plus page_idle's default
#: aggregation (10 s), so that each holds aggregations past the lag the test allows
FOLLOW_PHASES = (25.0, 55.0, 45.0)


def check_follow_load(ctx: "Ctx") -> dict:
    """256 MiB resident, stopped (SIGSTOP: nothing accessed), then running with 64 MiB of it
    written every pass, then stopped again; at the backend's default attributes. Records
    when the load really started and ended (the first step after each phase boundary)."""
    w = Workload(ctx.binary, "--size", "256", "--hot", "64")
    pid = w.pids[0]
    changes: list[tuple[float, bool]] = []  # (t, running) where the load started or ended
    idle, hot, _ = FOLLOW_PHASES

    def during(t: float) -> None:
        running = idle <= t < idle + hot
        if (changes[-1][1] if changes else True) != running:
            os.kill(pid, signal.SIGCONT if running else signal.SIGSTOP)
            changes.append((round(t, 3), running))

    try:
        r = w.ready[0]
        engine = ctx.engine(default_attrs=True, policy=FOLLOW_POLICY)
        run = monitor(engine, w.pids, sum(FOLLOW_PHASES), buffer_of(r), during=during)
    finally:
        w.stop()
    return result(run, {"working_set": r["hot_size"], "cold": r["size"] - r["hot_size"], "buffer": r["size"]},
                  changes=changes, window=FOLLOW_POLICY.working_set_window)


def monitor_shared(engine: "Summarizing", pids: list[int], seconds: float) -> tuple["Run", int, int]:
    """``pids`` as one target for ``seconds``, each aggregation noting the shared bytes of
    its regions; then the processes' summed Pss and Rss, read at the end (the truth of
    resident bytes, and the proof that the pages were shared)."""
    run = monitor(engine, pids, seconds, [], extra=lambda t: {"regions_shared": sum(r.shared_bytes for r in t.regions)})
    return run, sum(pss_of(p) for p in pids), sum(rss_of(p) for p in pids)


def check_shared_readers(ctx: "Ctx", defaults: bool = False) -> dict:
    """A parent writes 128 MiB and forks 4 children that only *read* its top 16 MiB: the
    five share every page copy-on-write. One target of five: resident 128 MiB (each page
    once), working set 16, cold 112, not five times that. ``pss`` is what the kernel says
    the five hold (their code, stack and libc included), read at the end. ``defaults``: at
    the attributes a user gets with no ``monitoring:`` section (the backend's own), for
    DEFAULTS_SECONDS."""
    w = Workload(ctx.binary, "--readers", "4", "--size", "128", "--hot", "16", nready=5)
    try:
        shared = next(r for r in w.ready if r["kind"] == "shared")
        engine = ctx.engine(default_attrs=True) if defaults else ctx.engine()
        run, pss, rss = monitor_shared(engine, w.pids, DEFAULTS_SECONDS if defaults else ACCURACY_SECONDS)
    finally:
        w.stop()
    return result(run, {"working_set": shared["hot_size"], "cold": shared["size"] - shared["hot_size"],
                        "buffer": shared["size"]}, pss=pss, rss=rss, pids=w.pids)


def check_two_trees(ctx: "Ctx") -> dict:
    """Two unrelated trees of the workload started with ASLR off (``setarch -R``), so at one
    address: each a parent with 128 MiB that forked 4 readers; one tree's readers read its
    top 16 MiB, the other's read nothing. One target of ten: resident 256 MiB, working set
    16, cold 240. The same addresses hold different frames in the two trees."""
    trees = []
    try:
        for hot in ("16", "0"):
            trees.append(Workload("setarch", "-R", ctx.binary, "--readers", "4", "--size", "128", "--hot", hot, nready=5))
        addrs = sorted({r["addr"] for w in trees for r in w.ready if r["kind"] == "shared"})
        pids = [p for w in trees for p in w.pids]
        run, pss, rss = monitor_shared(ctx.engine(), pids, ACCURACY_SECONDS)
    finally:
        for w in trees:
            w.stop()
    return result(run, {"working_set": 16 * MiB, "cold": 240 * MiB, "buffer": 256 * MiB},
                  pss=pss, rss=rss, pids=pids, addrs=addrs)


def check_cow_broken(ctx: "Ctx") -> dict:
    """A parent writes 128 MiB, forks 4 readers of its top 16 MiB, then writes every page of
    its buffer once more (``--rewrite``): its pages are new frames of its own, idle since,
    and the readers share the old ones at the same addresses. One target of five: resident
    256 MiB, working set 16, cold 240."""
    w = Workload(ctx.binary, "--readers", "4", "--size", "128", "--hot", "16", "--rewrite", nready=5)
    try:
        run, pss, rss = monitor_shared(ctx.engine(), w.pids, ACCURACY_SECONDS)
    finally:
        w.stop()
    return result(run, {"working_set": 16 * MiB, "cold": 240 * MiB, "buffer": 256 * MiB}, pss=pss, rss=rss, pids=w.pids)


def check_file_two_programs(ctx: "Ctx") -> dict:
    """Two unrelated programs map one 64 MiB file (shared, read-only) wherever their own
    address space puts it and read it whole once; then one reads its first 16 MiB on every
    pass, the other nothing. One target of two: resident 64 MiB, working set 16, cold 48.
    Matched by address, a per-mapping check (kernel DAMON's) counts the pages the reader
    uses half used: the other program's view of them is idle."""
    import tempfile

    binary = os.path.join(os.path.dirname(ctx.binary), "filetouch")
    top = tempfile.mkdtemp(prefix="dxfile")
    path = os.path.join(top, "file")
    with open(path, "wb") as f:
        f.write(os.urandom(MiB) * 64)
    procs = [subprocess.Popen([binary, path, "0", "64", period, hot], stdout=subprocess.PIPE, text=True)
             for hot, period in (("16", "5"), ("0", "100000000"))]
    try:
        for p in procs:
            assert p.stdout.readline().startswith("ready"), f"filetouch failed: exit {p.poll()}"
        pids = [p.pid for p in procs]
        bases = sorted({line.split()[0] for pid in pids for line in open(f"/proc/{pid}/maps")
                        if line.rstrip().endswith(path)})
        run, pss, rss = monitor_shared(ctx.engine(), pids, ACCURACY_SECONDS)
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()
        shutil.rmtree(top, ignore_errors=True)
    return result(run, {"working_set": 16 * MiB, "cold": 48 * MiB, "buffer": 64 * MiB},
                  pss=pss, rss=rss, pids=pids, bases=bases)


def check_promotion(ctx: "Ctx") -> dict:
    """Cold memory that comes back: 256 MiB, 32 MiB hot; after 20 s, 8 MiB chunks of the cold
    part (idle since they were written) are used for 5 s every 8 s. The REVIVED lines say
    when each began, as seen by the monitor (seconds into its run)."""
    w = Workload(ctx.binary, "--size", "256", "--hot", "32", "--revive", "8", "--revive-after", "20",
                 "--revive-every", "8", "--revive-for", "5")
    revived: list[float] = []
    t0 = time.monotonic()

    def during(elapsed: float) -> None:
        before = len(w.events)
        w.drain()
        revived.extend(elapsed for kind, _ in w.events[before:] if kind == "REVIVED")

    try:
        r = w.ready[0]
        run = monitor(ctx.engine(), w.pids, PROMOTION_SECONDS, buffer_of(r), during=during)
    finally:
        w.stop()
    return result(run, {"chunk": 8 * MiB, "cold_age": COLD_AGE}, revived=revived, started=t0)


def check_many_mappings(ctx: "Ctx") -> dict:
    """128 mappings of 256 KiB separated by one-page holes; the last 48 are hot."""
    w = Workload(ctx.binary, "--maps", "128", "--map-kib", "256", "--hot-maps", "48")
    try:
        r = w.ready[0]
        nr_vmas = sum(1 for _ in open(f"/proc/{r['pid']}/maps"))
        known = [(r["addr"] + i * r["stride"], r["addr"] + i * r["stride"] + r["map_size"], r["pid"])
                 for i in range(r["maps"])]
        first_hot = r["addr"] + (r["maps"] - r["hot_maps"]) * r["stride"]
        area = {"pid": r["pid"], "addr": r["addr"], "size": r["maps"] * r["stride"],
                "hot_addr": first_hot, "hot_size": r["hot_maps"] * r["stride"]}
        run = monitor(ctx.engine(), w.pids, ACCURACY_SECONDS, known, extra=hot_cold_overlap(area))
    finally:
        w.stop()
    return result(run, {"working_set": r["hot_maps"] * r["map_size"],
                        "cold": (r["maps"] - r["hot_maps"]) * r["map_size"],
                        "buffer": r["maps"] * r["map_size"]}, nr_vmas=nr_vmas)


def check_overlapping_ranges(ctx: "Ctx") -> dict:
    """Two forked children whose buffers have the *same* virtual address, as two targets:
    child 0 has 8 MiB hot, child 1 has 32 MiB. Regions attributed to the wrong process would
    mix the two truths."""
    w = Workload(ctx.binary, "--procs", "2", "--size", "64", "--hot", "8", "--hot-step", "24", nready=2)
    by_hot = sorted(w.ready, key=lambda r: r["hot_size"])
    names = ("small", "large")
    m = ctx.engine()
    out: dict = {"same_addr": by_hot[0]["addr"] == by_hot[1]["addr"]}
    runs = {n: Run(other_rss=other_rss([r["pid"]], buffer_of(r))) for n, r in zip(names, by_hot)}
    try:
        m.set_targets([TargetSpec(n, refs([r["pid"]])) for n, r in zip(names, by_hot)])
        t0 = time.monotonic()
        while time.monotonic() - t0 < ACCURACY_SECONDS:
            snap = m.step()
            if snap is None:
                continue
            for n, r in zip(names, by_hot):
                t = snap.target(n)
                s = summary(t, t0, snap)
                s["working_set_known"], s["cold_known"] = known_bytes(t, buffer_of(r))
                runs[n].series.append(s)
    finally:
        m.close()
        w.stop()
    for n, r in zip(names, by_hot):
        out[n] = result(runs[n], {"working_set": r["hot_size"], "cold": r["size"] - r["hot_size"], "buffer": r["size"]},
                        pid=r["pid"])
    return out


# -- kernel DAMON ownership: the exporter's own processes -----------------------------------

DAMON_ADMIN = "/sys/kernel/mm/damon/admin/kdamonds"
STATE_DIR = "/run/damon-exporter"


def _damon_state() -> dict:
    """The kdamond as a reader sees it. ``state`` and ``pid`` answer EBUSY while anyone
    holds the DAMON sysfs lock (the exporter's commands take it), so a busy read is tried
    again as the engine itself does (tree.py: BUSY_RETRIES, BUSY_PAUSE)."""
    def rd(p: str) -> str:
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return open(p).read().strip()
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == BUSY_RETRIES:
                    return f"<{e.strerror}>"
                time.sleep(BUSY_PAUSE)
        raise AssertionError("unreachable")

    nr = rd(f"{DAMON_ADMIN}/nr_kdamonds")
    st = {"nr_kdamonds": nr, "marker": os.path.exists(f"{STATE_DIR}/damon_sysfs.json")}
    if nr not in ("0", "") and os.path.isdir(f"{DAMON_ADMIN}/0"):
        st["state"] = rd(f"{DAMON_ADMIN}/0/state")
        st["pid"] = rd(f"{DAMON_ADMIN}/0/pid")
    return st


def _wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    """Whether ``pred`` came true within ``timeout`` (the guest records, the host asserts)."""
    try:
        return bool(wait_for(pred, timeout, interval=0.2))
    except AssertionError:
        return False


def _exporter(cfg: str, log: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", cfg, "--web.listen-address", "127.0.0.1:10177",
         "--log.level", "debug"], stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def check_damon_sysfs_lifecycle(ctx: "Ctx") -> dict:
    """No kdamond is left behind: after ``snapshot`` ends; after the exporter is SIGKILLed,
    once the next exporter has started (it reclaims the leftover) and got SIGTERM. The exporter runs with no monitoring section, so the backend's
    kernel-class defaults (5 ms samples) apply."""
    out: dict = {"before": _damon_state(), "run_writable": os.access("/run", os.W_OK)}
    w = Workload(ctx.binary, "--size", "16", "--hot", "4")
    tmp = os.path.dirname(os.path.abspath(ctx.out)) if ctx.out else "/tmp"
    cfg = os.path.join(tmp, "lifecycle.yaml")
    log = os.path.join(tmp, "lifecycle.log")
    comm = open(f"/proc/{w.pids[0]}/comm").read().strip()
    with open(cfg, "w") as f:
        f.write("backend: damon_sysfs\ncold_age: 4s\nworking_set_window: 4s\ntargets:\n"
                f"  - name: wl\n    match:\n      comm: [{comm}]\n")
    try:
        snap = subprocess.run(
            [sys.executable, "-m", "exporter", "snapshot", "--backend", "damon_sysfs", "--pid", str(w.pids[0]),
             "--duration", "4s", "--format", "json"], capture_output=True, text=True, timeout=300)
        out["snapshot"] = {"rc": snap.returncode, "stderr": snap.stderr[-2000:], "after": _damon_state()}
        try:
            j = json.loads(snap.stdout)
            out["snapshot"]["backend"] = j.get("backend")
            out["snapshot"]["sample_interval"] = j.get("attrs", {}).get("sample_interval_seconds")
            out["snapshot"]["working_set"] = j["targets"][0]["working_set_bytes"]
        except (ValueError, KeyError, IndexError):
            out["snapshot"]["stdout"] = snap.stdout[-2000:]
        running = lambda: _damon_state().get("state") == "on"  # noqa: E731
        # SIGKILL, then a restart reclaims the leftover
        e = _exporter(cfg, log)
        out["kill"] = {"started": _wait_for(running, 120), "during": _damon_state()}
        e.kill()
        e.wait()
        out["kill"]["after_kill"] = _damon_state()
        e = _exporter(cfg, log)
        first_pid = out["kill"]["during"].get("pid")
        out["kill"]["restarted"] = _wait_for(lambda: running() and _damon_state().get("pid") != first_pid, 120)
        out["kill"]["after_restart"] = _damon_state()
        e.send_signal(signal.SIGTERM)
        out["kill"]["rc"] = e.wait(timeout=120)
        out["kill"]["after"] = _damon_state()
    finally:
        w.stop()
    out["log"] = [line for line in open(log).read().splitlines() if "damon" in line or "kdamond" in line][-30:]
    return out


class someone_elses_kdamond:
    """A kdamond configured by "someone else" (nr_kdamonds 1, never turned on), for the
    duration of a ``with``: kernel DAMON is then not free."""

    def __enter__(self) -> None:
        with open(f"{DAMON_ADMIN}/nr_kdamonds", "w") as f:
            f.write("1")

    def __exit__(self, *exc: object) -> None:
        with open(f"{DAMON_ADMIN}/nr_kdamonds", "w") as f:
            f.write("0")


def check_auto_selection(ctx: "Ctx") -> dict:
    """auto picks kernel DAMON where it is free, page_idle where a kdamond is someone else's."""
    from exporter.engines.registry import create_engine

    out = {}
    e = create_engine("auto")
    try:
        out["free"] = {"name": e.name, "reason": e.selection_reason, "state": _damon_state()}
    finally:
        e.close()
    out["after_close"] = _damon_state()
    with someone_elses_kdamond():
        e = create_engine("auto")
        try:
            out["busy"] = {"name": e.name, "reason": e.selection_reason, "state": _damon_state()}
        finally:
            e.close()
    return out


NOCAP = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"]


def check_without_cap_sys_admin(ctx: "Ctx") -> dict:
    """Root without CAP_SYS_ADMIN: pagemap PFNs read as zero. The backend must say so."""
    w = Workload(ctx.binary, "--size", "16", "--hot", "4")
    try:
        r = w.ready[0]
        # kernel DAMON needs no CAP_SYS_ADMIN (its sysfs files are root's, pagemap present
        # bits need no capability): with it free, auto would pick it; occupied, the
        # fallback to clear_refs is what this check is about
        with someone_elses_kdamond():
            res = subprocess.run(
                [*NOCAP, sys.executable, "-m", "tests.vm.guest_checks", "--nocap-child", str(r["pid"]), str(r["addr"])],
                capture_output=True, text=True, timeout=300,
            )
    finally:
        w.stop()
    out = {"child_exit_code": res.returncode, "child_stderr": res.stderr[-4000:]}
    try:
        out.update(json.loads(res.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        out["child_stdout"] = res.stdout[-4000:]
    return out


def nocap_child(pid: int, addr: int) -> dict:
    """Runs under setpriv without CAP_SYS_ADMIN (see check_without_cap_sys_admin)."""
    from exporter.engines.registry import create_engine

    out: dict = {"pid": pid}
    status = open("/proc/self/status").read()
    out["cap_eff"] = re.search(r"^CapEff:\s*(\S+)", status, re.M)[1]
    out["available"] = list(PageIdleOps.available())
    try:
        ops = create_engine("auto")
        out["auto"] = {"name": ops.name, "reason": ops.selection_reason}
        ops.close()
    except OpsError as e:
        out["auto"] = {"error": type(e).__name__, "message": str(e)}
    try:
        create_engine("page_idle").close()
        out["page_idle"] = {"error": None}
    except OpsError as e:
        out["page_idle"] = {"error": type(e).__name__, "message": str(e)}
    # The backend constructed directly (opening the bitmap only needs file permissions):
    # the first access check must raise AccessDenied, not treat PFN 0 as "not present".
    ops = PageIdleOps()
    ref = ProcessRef(pid, start_time_of(pid))
    try:
        ops.prepare_access_checks(ref, [addr, addr + 4096])
        out["direct"] = {"error": None}
    except OpsError as e:
        out["direct"] = {"error": type(e).__name__, "message": str(e)}
    # and through the monitor: the target carries the message, nothing raises
    m = SummarizingMonitor(ops, ATTRS, cold_age=COLD_AGE, working_set_window=WORKING_SET_WINDOW)
    m.set_targets([TargetSpec("workload", (ref,))])
    snap = None
    while snap is None:
        snap = m.step()
    t = snap.target("workload")
    out["monitor"] = {"errors": list(t.errors), "pids": list(t.pids), "errors_total": dict(snap.stats.errors_total)}
    ops.close()
    return out


CHECKS: dict[str, Callable[["Ctx"], dict]] = {
    "accuracy_4k": check_accuracy_4k,
    "accuracy_thp": check_accuracy_thp,
    "thp_without_tail_mapping": check_thp_without_tail_mapping,
    "moving_hot_set": check_moving_hot_set,
    "zero_page": check_zero_page,
    "exit_mid_run": check_exit_mid_run,
    "multi_process": check_multi_process,
    "shared_readers": check_shared_readers,
    "two_trees": check_two_trees,
    "file_two_programs": check_file_two_programs,
    "cow_broken": check_cow_broken,
    "promotion": check_promotion,
    "follow_load": check_follow_load,
    "many_mappings": check_many_mappings,
    "auto_selection": check_auto_selection,
    "without_cap_sys_admin": check_without_cap_sys_admin,
}


def _on(backend: str, fn: Callable[["Ctx"], dict]) -> Callable[["Ctx"], dict]:
    return lambda ctx: fn(dataclasses.replace(ctx, backend=backend))


#: the accuracy table's damon_sysfs column: the same workloads through kernel DAMON
CHECKS.update({
    "damon_sysfs/accuracy_4k": _on("damon_sysfs", check_accuracy_4k),
    "damon_sysfs/accuracy_thp": _on("damon_sysfs", check_accuracy_thp),
    "damon_sysfs/moving_hot_set": _on("damon_sysfs", check_moving_hot_set),
    "damon_sysfs/multi_process": _on("damon_sysfs", check_multi_process),
    "damon_sysfs/shared_readers": _on("damon_sysfs", check_shared_readers),
    "damon_sysfs/two_trees": _on("damon_sysfs", check_two_trees),
    "damon_sysfs/file_two_programs": _on("damon_sysfs", check_file_two_programs),
    "damon_sysfs/cow_broken": _on("damon_sysfs", check_cow_broken),
    "damon_sysfs/promotion": _on("damon_sysfs", check_promotion),
    "damon_sysfs/shared_readers_defaults": _on("damon_sysfs", lambda ctx: check_shared_readers(ctx, defaults=True)),
    "damon_sysfs/accuracy_defaults": _on("damon_sysfs", check_accuracy_defaults),
    "damon_sysfs/follow_load": _on("damon_sysfs", check_follow_load),
    "damon_sysfs/exit_mid_run": _on("damon_sysfs", check_exit_mid_run),
    "damon_sysfs/overlapping_ranges": _on("damon_sysfs", check_overlapping_ranges),
    "damon_sysfs/lifecycle": check_damon_sysfs_lifecycle,
})


class SummarizingDamonSysfs:
    """The damon_sysfs engine, summarized per aggregation like SummarizingMonitor. Its
    kdamond is pinned to the monitor's vCPU, away from the workload's (as the workload and
    the monitor are: on a shared emulated CPU the workload would stall)."""

    def __init__(self, attrs: MonitoringAttrs, policy: Policy | None = None) -> None:
        from exporter.engines.damon_sysfs.engine import DamonSysfsEngine

        self.engine = DamonSysfsEngine(attrs)
        self.policy = policy or Policy(cold_age=COLD_AGE, working_set_window=WORKING_SET_WINDOW)
        self.tracker = PromotionTracker()  # as the sampler keeps one
        self._pinned = -1

    def set_targets(self, specs: list[TargetSpec]) -> None:
        self.engine.set_targets(specs)

    def step(self) -> Summary | None:
        agg = self.engine.step()
        kpid = self.engine.kdamond_pid
        if kpid > 0 and kpid != self._pinned and len(os.sched_getaffinity(0)) >= 1:
            try:
                os.sched_setaffinity(kpid, {MONITOR_CPU})
            except OSError:
                pass
            self._pinned = kpid
        return None if agg is None else summarize(agg, self.policy, self.tracker)

    def close(self) -> None:
        self.engine.close()


Summarizing = SummarizingMonitor | SummarizingDamonSysfs


@dataclass
class Ctx:
    binary: str
    backend: str = "page_idle"
    out: str = ""

    def ops(self, **kwargs: bool) -> PageIdleOps:
        return PageIdleOps(**kwargs)

    def engine(self, default_attrs: bool = False, policy: Policy | None = None, **kwargs: bool) -> Summarizing:
        """The engine under test: page_idle (user-space DAMON) or kernel DAMON; at the
        checks' fast attributes, or (``default_attrs``) at those a user gets with no
        ``monitoring:`` section (cold_age and working_set_window shortened to what a check
        of DEFAULTS_SECONDS can see: DEFAULTS_POLICY)."""
        from exporter.engines.registry import monitoring_attrs

        if self.backend == "damon_sysfs":
            if default_attrs:
                return SummarizingDamonSysfs(monitoring_attrs("damon_sysfs", MonitoringAttrs(), ()), policy or DEFAULTS_POLICY)
            return SummarizingDamonSysfs(DAMON_SYSFS_ATTRS)
        if default_attrs:
            return SummarizingMonitor(self.ops(**kwargs), MonitoringAttrs(), cold_age=DEFAULTS_POLICY.cold_age,
                                      working_set_window=DEFAULTS_POLICY.working_set_window, windows=True)
        # the fast attributes judge DAMON's regions alone: page windows every second of a
        # 4 s horizon, with pagemap reads of every region under emulation, stretch the
        # 1 s aggregations to 2-3 s (CI saw 11 of the 15 a check needs); the checks at
        # the default attributes and through the service run them
        return SummarizingMonitor(self.ops(**kwargs), ATTRS, cold_age=COLD_AGE, working_set_window=WORKING_SET_WINDOW)


def require_test_guest() -> None:
    """These checks write the page_idle bitmap and THP settings: only in the test VM."""
    if not os.path.exists(PAGE_IDLE_BITMAP) or "virtme" not in open("/proc/cmdline").read():
        sys.exit("guest_checks: refusing to run outside the virtme-ng test VM "
                 f"(needs {PAGE_IDLE_BITMAP} and a virtme kernel command line)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload")
    ap.add_argument("--out")
    ap.add_argument("--nocap-child", nargs=2, type=int, metavar=("PID", "ADDR"))
    ap.add_argument("checks", nargs="*")
    args = ap.parse_args(argv)
    require_test_guest()
    if args.nocap_child:
        print(json.dumps(nocap_child(*args.nocap_child)))
        return 0
    if not args.workload or not args.out:
        ap.error("--workload and --out are required")
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        ap.error(f"unknown checks: {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    run_checks(CHECKS, args.checks or list(CHECKS), Ctx(args.workload, out=args.out), args.out)
    return 0


def run_checks(checks: dict[str, Callable], names: list[str], ctx: object, out: str) -> None:
    """Run the named checks in order, in this guest; the results file is rewritten after
    each, so that a guest that dies half-way still reports the checks it finished."""
    # madvise: buffers get huge pages only where the workload asks (the kernel default here
    # is "always", which would make the 4 KiB checks THP checks)
    with open(THP_ENABLED, "w") as f:
        f.write("madvise")
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {MONITOR_CPU})
    results: dict[str, dict] = {}
    for name in names:
        t0 = time.monotonic()
        try:
            res = checks[name](ctx)
        except Exception:
            res = {"error": traceback.format_exc()}
        res["check_seconds"] = round(time.monotonic() - t0, 1)
        results[name] = res
        print(f"check {name}: {res['check_seconds']}s{' ERROR' if 'error' in res else ''}", flush=True)
        with open(out + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    sys.exit(main())
