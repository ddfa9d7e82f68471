"""clear_refs: CPU per target per minute, per-sample clearing (before) vs the engine (after).

    sudo python bench/clear_refs_bench.py            # ~3 minutes: 64 MiB, 1 GiB, 8 GiB
    sudo python bench/clear_refs_bench.py --quick    # ~1 minute: shorter runs, no 8 GiB

One workload per size (``tests/workloads/heap.c``: one mapping, an eighth of it written
continuously), measured twice in the same run, at the exporter's defaults (500 ms samples,
10 s aggregations, working_set_window 60 s, cold_age 120 s):

- **before**: what the per-mapping yes/no backend did until this release: every sample, one
  write to ``clear_refs`` and, one interval later, one read of ``smaps``;
- **after**: :class:`~exporter.engines.clear_refs.ReferencedBytesEngine`: one ``smaps`` read
  per aggregation (and at each horizon), one clear per 120 s period.

CPU is the bench thread's own (``time.thread_time``): the kernel's page-table walks that a
clear and a smaps read cause are charged to the caller, so this is the exporter's full cost.
A run shorter than the clear period contains at most one clear: the per-minute "after"
figure then slightly over-counts clears (one per run instead of one per 2 minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.model.attrs import MonitoringAttrs  # noqa: E402
from exporter.model.engine import TargetSpec  # noqa: E402
from exporter.engines.clear_refs.smaps import ProcSmaps
from exporter.engines.clear_refs.engine import ReferencedBytesEngine  # noqa: E402
from exporter.model.process import ProcessRef  # noqa: E402
from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import check_same_process  # noqa: E402

SAMPLE, AGGR = 0.5, 10.0


def start_heap(binary: str, mib: int) -> tuple[subprocess.Popen, ProcessRef]:
    p = subprocess.Popen([binary, str(mib), str(max(1, mib // 8))], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", "heap workload failed"
    ref = ProcessRef(p.pid, check_same_process(PosixIO(), "/proc", ProcessRef(p.pid), "").start_time)
    return p, ref


def before(ref: ProcessRef, seconds: float) -> float:
    """CPU seconds of per-sample clearing: clear, wait one sample, read smaps, repeat."""
    src = ProcSmaps()
    c0 = time.thread_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        src.clear(ref)
        time.sleep(SAMPLE)
        src.read(ref)
    src.close()
    return time.thread_time() - c0


def after(ref: ProcessRef, seconds: float) -> float:
    e = ReferencedBytesEngine(attrs=MonitoringAttrs(SAMPLE, AGGR, 60.0, 10, 100))
    e.set_horizons((60.0, 120.0))
    e.set_targets([TargetSpec("t", (ref,))])
    c0 = time.thread_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        e.step()
    e.close()
    return time.thread_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 s runs, no 8 GiB")
    args = ap.parse_args()
    seconds = 20.0 if args.quick else 40.0
    sizes = [64, 1024] if args.quick else [64, 1024, 8192]
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "heap")
        subprocess.run(["gcc", "-O2", "-o", binary, str(REPO / "tests/workloads/heap.c")], check=True)
        print(f"# clear_refs: CPU seconds per target per minute ({seconds:g} s runs, sample {SAMPLE:g} s, aggregation {AGGR:g} s)\n")
        print("| resident | before: clear + smaps per sample | after: engine | after / before |")
        print("|---|---|---|---|")
        for mib in sizes:
            p, ref = start_heap(binary, mib)
            try:
                b = before(ref, seconds) * 60 / seconds
                a = after(ref, seconds) * 60 / seconds
            finally:
                p.kill()
                p.wait()
            label = f"{mib} MiB" if mib < 1024 else f"{mib // 1024} GiB"
            print(f"| {label} | {b:.3f} s ({b / 60:.2%} of a core) | {a:.3f} s ({a / 60:.2%}) | {a / b:.3f} |")
    print(f"\nexpected ratio ~ sample / aggregation = {SAMPLE / AGGR:.3f}, plus the horizon reads and clears")
    return 0


if __name__ == "__main__":
    sys.exit(main())
