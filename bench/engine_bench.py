#!/usr/bin/env python3
"""What one access check costs, and what the engine adds: figures behind the defaults.

Not a test: prints markdown tables, every figure next to a baseline measured in the same run
(the same system calls made from C by ``bench/floor.c``, the backend's own time inside the
engine, a full pagemap scan next to region sampling). See bench/README.md.

    python bench/engine_bench.py            # ~1-2 minutes
    python bench/engine_bench.py --quick    # ~20 seconds, fewer sizes and repeats

Needs gcc and root (pagemap PFNs and /proc/kpageflags). Writes nothing under /sys: the
page_idle bitmap, absent on kernels without CONFIG_IDLE_PAGE_TRACKING, is replaced by a
sparse file in a temp dir, so the page_idle figures are the Python and pagemap/kpageflags
part of the backend without the kernel's rmap walk behind a real bitmap.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.model.attrs import MonitoringAttrs  # noqa: E402
from exporter.model.engine import TargetSpec  # noqa: E402
from exporter.engines.page_idle.monitor import Monitor  # noqa: E402
from exporter.model.process import ProcessRef  # noqa: E402
from exporter.engines.clear_refs.smaps import ProcSmaps  # noqa: E402
from exporter.engines.page_idle.ops_page_idle import PageIdleOps  # noqa: E402
from exporter.procfs.pagemap import Pagemap, resident_bytes_pagemap
from exporter.procfs.io import PosixIO  # noqa: E402
from exporter.engines.page_idle.ops_simulated import HotRange, SimulatedOps, SimulatedProcess, VirtualClock  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096
REGIONS = 200  # the default max_regions: the per-sample work of a big target


def fmt_t(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def timed(fn: Callable[[], object], budget: float, min_iters: int = 3) -> float:
    """Median seconds per call of ``fn`` over about ``budget`` seconds (at least
    ``min_iters`` calls). The median resists the noise of other work on a shared box."""
    fn()  # warm up (opens fds, fills caches)
    samples = []
    end = time.perf_counter() + budget
    while len(samples) < min_iters or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


# -- the C side ------------------------------------------------------------------------------


def build_floor(tmp: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit("engine_bench: gcc is needed to build bench/floor.c")
    out = tmp / "floor"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(REPO / "bench" / "floor.c")], check=True)
    return out


class Holder:
    """A ``floor hold`` process: ``mapped`` bytes mapped, one page touched every ``stride``."""

    def __init__(self, floor: Path, mapped: int, stride: int) -> None:
        self.proc = subprocess.Popen(
            [str(floor), "hold", str(mapped // MIB), str(stride // 1024)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            raise RuntimeError(f"floor hold failed: {line!r}")
        self.pid = self.proc.pid
        self.start = int(line.split()[1], 16)
        self.end = self.start + mapped
        self.ref = ProcessRef(self.pid)

    def spread(self, n: int, rng: random.Random) -> list[int]:
        """One random page address in each of ``n`` equal slices of the mapping."""
        pages = (self.end - self.start) // PAGE
        return [self.start + (pages * i // n + rng.randrange(max(1, pages // n))) * PAGE for i in range(n)]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()


def floor_run(floor: Path, *args: object) -> tuple[float, int]:
    out = subprocess.run([str(floor), *map(str, args)], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]) * 1e-9, int(out[1])


def paired(py: Callable[[], object], floor: Path, args: Callable[[int], list[object]], budget: float, rounds: int = 5) -> tuple[float, float, int]:
    """Python and C timings taken in alternation (``rounds`` times each, medians), so that
    load from other work on the machine hits both sides alike. ``args(iters)`` builds the
    floor's command line. Returns (python seconds, C seconds, the floor's count)."""
    py_t, c_t = [], []
    count = 0
    for _ in range(rounds):
        t = timed(py, budget / rounds / 2)
        py_t.append(t)
        c, count = floor_run(floor, *args(max(3, int(budget / rounds / 2 / max(t, 1e-6)))))
        c_t.append(c)
    return statistics.median(py_t), statistics.median(c_t), count


def fake_sys_root(tmp: Path) -> str:
    """A directory with ``kernel/mm/page_idle/bitmap`` as a sparse 64 MiB file (PFNs up to
    2^29, 2 TiB of RAM): the page_idle backend's I/O pattern without the real bitmap."""
    d = tmp / "sys" / "kernel" / "mm" / "page_idle"
    d.mkdir(parents=True)
    with open(d / "bitmap", "wb") as f:
        f.truncate(64 * MIB)
    return str(tmp / "sys")


# -- 1. one region check per backend vs the syscall floor -------------------------------------


@dataclass
class Row:
    cells: list[str]


def bench_clear_refs(floor: Path, sizes_mib: list[int], budget: float) -> tuple[list[Row], list[tuple[int, float]]]:
    rows, fit = [], []
    for mib in sizes_mib:
        h = Holder(floor, mib * MIB, PAGE)
        try:
            src = ProcSmaps()
            n = len(src.read(h.ref))

            def sample() -> None:  # one clear and one smaps read: what a clear_refs read costs
                src.clear(h.ref)
                src.read(h.ref)

            py, c, _ = paired(sample, floor, lambda it: ["clear_refs", h.pid, it], budget)
            src.close()
            rows.append(Row([
                "clear_refs", f"{mib} MiB resident, {n} regions (mappings)",
                fmt_t(py), fmt_t(c), f"{py / c:.2f}x", fmt_t(py / n), fmt_t(c / n),
            ]))
            fit.append((mib, py))
        finally:
            h.close()
    return rows, fit


def bench_page_idle(floor: Path, sys_root: str, budget: float) -> tuple[Row, float]:
    h = Holder(floor, 256 * MIB, PAGE)
    try:
        ops = PageIdleOps(sys_root=sys_root)
        addrs = h.spread(REGIONS, random.Random(1))

        def sample() -> None:
            ops.prepare_access_checks(h.ref, addrs)
            ops.check_accesses(h.ref, addrs)

        bitmap = f"{sys_root}/kernel/mm/page_idle/bitmap"
        py, c, present = paired(sample, floor, lambda it: ["page_idle", h.pid, bitmap, h.start, h.end, REGIONS, it], budget)
        py /= REGIONS  # the floor prints per region already
        ops.close()
        assert present == REGIONS, f"floor saw {present} of {REGIONS} sampled pages resident"
        return Row([
            "page_idle (bitmap stand-in)", f"256 MiB resident, {REGIONS} regions",
            fmt_t(py * REGIONS), fmt_t(c * REGIONS), f"{py / c:.2f}x", fmt_t(py), fmt_t(c),
        ]), py
    finally:
        h.close()


# -- 2. engine overhead with the simulated backend ---------------------------------------------


class TimedOps:
    """Delegates to an operations set and adds up the time spent inside it, so the engine's
    own share of a monitoring run is the run's time minus ``spent``, in the same run."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.spent = 0.0

    def __getattr__(self, attr: str):
        fn = getattr(self.inner, attr)
        if not callable(fn):
            return fn

        def timed_call(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.spent += time.perf_counter() - t0

        return timed_call


def bench_engine(max_regions: int, aggregations: int) -> tuple[Row, float]:
    """Per region and aggregation: the whole step loop vs the time spent inside the backend."""
    clock = VirtualClock()
    size = GIB
    base = 0x10000000
    # 64 slices with unrelated frequencies: neighbours rarely merge, so the count stays
    # near the cap (the split/merge cost the cap is meant to bound)
    prng = random.Random(8)
    hot = [HotRange(base + size * i // 64, base + size * (i + 1) // 64, prng.choice((0.0, 0.1, 0.3, 0.6, 0.9))) for i in range(64)]
    proc = SimulatedProcess(mappings=[(base, base + size)], hot=hot)
    ops = TimedOps(SimulatedOps({1: proc}, clock, rng=random.Random(2)))
    attrs = MonitoringAttrs(sample_interval=0.1, aggregation_interval=2.0, update_interval=10.0, min_regions=10, max_regions=max_regions)
    mon = Monitor(ops, attrs, rng=random.Random(3), clock=clock, wall_clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    mon.set_targets([TargetSpec("t", (ProcessRef(1),))])
    for _ in range(20 * attrs.max_nr_accesses):  # warm up: let the regions adapt
        mon.step()
    nr = []
    ops.spent = 0.0
    t0 = time.perf_counter()
    for _ in range(aggregations):
        snap = None
        while snap is None:
            snap = mon.step()
        nr.append(len(snap.targets[0].regions))
    total = time.perf_counter() - t0
    regions = statistics.mean(nr)
    backend = ops.spent
    per = total / aggregations / regions
    base = backend / aggregations / regions
    return Row([
        f"max_regions {max_regions}", f"{regions:.0f}", fmt_t(per), fmt_t(base), fmt_t(per - base),
        fmt_t((per - base) / attrs.max_nr_accesses),
    ]), (per - base) / attrs.max_nr_accesses


# -- 3. growth with the target size -----------------------------------------------------------


def sim_sample_cost(size: int, budget: float) -> float:
    clock = VirtualClock()
    proc = SimulatedProcess(mappings=[(0x10000000, 0x10000000 + size)], hot=[HotRange(0x10000000, 0x10000000 + size // 8)])
    ops = SimulatedOps({1: proc}, clock, rng=random.Random(4))
    attrs = MonitoringAttrs(min_regions=10, max_regions=REGIONS)
    mon = Monitor(ops, attrs, rng=random.Random(5), clock=clock, wall_clock=clock, sleep=clock.sleep)
    mon.set_targets([TargetSpec("t", (ProcessRef(1),))])
    for _ in range(5 * attrs.max_nr_accesses):
        mon.step()
    n = attrs.max_nr_accesses
    return timed(lambda: [mon.step() for _ in range(n)], budget) / n


def python_full_scan(pm: Pagemap, start: int, end: int) -> int:
    """Every pagemap entry of [start, end), 1 MiB per read; present = bit 63 = top bit of
    each entry's last byte (little endian), counted at C speed with translate."""
    table = bytes(0 if b < 0x80 else 1 for b in range(256))
    present = 0
    first, last = start // PAGE * 8, end // PAGE * 8
    for off in range(first, last, MIB):
        buf = os.pread(pm.fd, min(MIB, last - off), off)
        present += buf[7::8].translate(table).count(1)
    return present


def bench_scaling(floor: Path, sys_root: str, sizes_gib: list[int], budget: float) -> tuple[list[Row], float]:
    """Rows, and the median resident_bytes cost per range per aggregation."""
    rows = []
    per_range = []
    rng = random.Random(6)
    for gib in sizes_gib:
        h = Holder(floor, gib * GIB, 64 * MIB)  # one page per 64 MiB: "touch a little"
        try:
            sim = sim_sample_cost(gib * GIB, budget / 2)
            pi = PageIdleOps(sys_root=sys_root)
            addrs = h.spread(REGIONS, rng)

            def sample() -> None:
                pi.prepare_access_checks(h.ref, addrs)
                pi.check_accesses(h.ref, addrs)

            real = timed(sample, budget / 2)
            bounds = [h.start + (h.end - h.start) * i // REGIONS for i in range(REGIONS + 1)]
            ranges = list(zip(bounds, bounds[1:]))
            pm = Pagemap(PosixIO(), "/proc", h.pid, "")
            res_rng = random.Random(7)
            resident = timed(lambda: resident_bytes_pagemap(pm, ranges, res_rng), budget / 2)
            per_range.append(resident / REGIONS)
            cr = ProcSmaps()

            def cr_sample() -> None:
                cr.clear(h.ref)
                cr.read(h.ref)

            clear = timed(cr_sample, budget / 2)
            t0 = time.perf_counter()
            present = python_full_scan(pm, h.start, h.end)
            py_scan = time.perf_counter() - t0
            c_scan, c_present = floor_run(floor, "fullscan", h.pid, h.start, h.end, 1)
            assert present == c_present == gib * 16, (present, c_present)
            pm.close()
            pi.close()
            cr.close()
            rows.append(Row([
                f"{gib} GiB", fmt_t(sim), fmt_t(real), fmt_t(resident), fmt_t(clear), fmt_t(py_scan), fmt_t(c_scan),
            ]))
        finally:
            h.close()
    return rows, statistics.median(per_range)


# -- output -----------------------------------------------------------------------------------


def table(header: list[str], rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r.cells) + " |" for r in rows]
    return "\n".join(lines)


def share(cost_per_second: float) -> str:
    return f"{cost_per_second * 100:.2f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and shorter timings (~20 s)")
    ap.add_argument("--max-gib", type=int, default=64, help="largest mapped size of the scaling table (default 64)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("engine_bench: needs root (pagemap PFNs, /proc/kpageflags)", file=sys.stderr)
        return 1
    budget = 0.3 if args.quick else 1.0
    cr_sizes = [64, 256] if args.quick else [64, 256, 1024]
    scale = [g for g in ((1, 16, 64) if args.quick else (1, 4, 16, 64)) if g <= args.max_gib]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as d:
        tmp = Path(d)
        floor = build_floor(tmp)
        sys_root = fake_sys_root(tmp)
        print(f"# engine_bench ({'quick' if args.quick else 'full'}), {os.uname().release}, {os.cpu_count()} CPUs\n")
        print("## 1. One access check: Python backend vs the same syscalls from C (bench/floor.c)\n")
        cr_rows, cr_fit = bench_clear_refs(floor, cr_sizes, budget)
        pi_row, pi_region = bench_page_idle(floor, sys_root, budget)
        print(table(["backend", "target", "Python / sample", "C floor / sample", "Python / C", "Python / region", "C / region"], cr_rows + [pi_row]))
        print("\npage_idle: this kernel has no /sys/kernel/mm/page_idle; its bitmap is a sparse file "
              "stand-in, so the rmap walk a real bitmap read/write costs is not included.\n")
        print("## 2. Engine overhead (simulated backend, 1 GiB target, 20 samples per aggregation)\n")
        eng_rows = []
        eng = 0.0
        for mr in (50, 200, 1000):
            row, per_sample = bench_engine(mr, 3 if args.quick else 10)
            eng_rows.append(row)
            if mr == 200:
                eng = per_sample
        print(table(["attrs", "regions", "total / region / aggregation", "backend part", "engine part", "engine / region / sample"], eng_rows))
        print("\n## 3. Growth with target size: region sampling vs a full pagemap scan\n")
        print(f"(a process maps N GiB with MAP_NORESERVE and touches one page per 64 MiB; {REGIONS} regions)\n")
        scale_rows, res_range = bench_scaling(floor, sys_root, scale, budget)
        print(table(
            ["mapped", "sim monitor / sample", "page_idle ops / sample", "resident_bytes / aggregation", "clear_refs / sample",
             "full scan (Python)", "full scan (C)"],
            scale_rows,
        ))
        # -- recommendation from the measured numbers -------------------------------------
        (m0, c0), (m1, c1) = cr_fit[0], cr_fit[-1]
        per_mib = (c1 - c0) / (m1 - m0)
        fixed = max(0.0, c0 - per_mib * m0)
        print("\n## 4. CPU share of one target at the region cap (from the numbers above)\n")
        print("page_idle: regions x (check + engine) per sample + regions x resident_bytes per aggregation; "
              "clear_refs: one smaps read per aggregation (and one at each horizon, one clear per clear "
              "period), costed as one clear + read from the linear fit below per aggregation: an upper "
              "bound. Percent of one core.\n")
        rows = []
        for sample, aggr, regions in ((0.1, 2.0, 200), (0.2, 4.0, 100), (0.5, 10.0, 100), (1.0, 20.0, 100)):
            pi = regions * ((pi_region + eng) / sample + res_range / aggr)
            cells = [f"{sample * 1000:.0f} ms / {aggr:g} s", str(regions), share(pi)]
            cells += [share((fixed + per_mib * mib) / aggr) for mib in (256, 1024, 4096)]
            rows.append(Row(cells))
        print(table(["sample / aggregation", "page_idle regions", "page_idle", "clear_refs 256 MiB", "clear_refs 1 GiB",
                     "clear_refs 4 GiB (extrapolated)"], rows))
        print(f"\nclear_refs cost model: {fmt_t(fixed)} + {fmt_t(per_mib)} per MiB resident, per clear + smaps read "
              "(the engine reads once per aggregation; the per-sample column of table 1 is the cost of the "
              "per-sample clearing the backend did before it had curves).")
        print(f"\n(run took {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
