#!/usr/bin/env python3
"""What page windows add to the page_idle engine's CPU, against the samples alone, one run.

Not a test: prints a markdown table. A process holds 256 MiB (``bench/floor.c hold``); the
user-space engine monitors it at the default attributes (500 ms samples, 10 s aggregations,
100 regions at most) over a virtual clock (no sleeping: every second of CPU is the engine's)
for ``--seconds`` of monitored time, once without page windows (the baseline) and once with
them at the default horizons (``working_set_window`` 60 s, ``cold_age`` 120 s). CPU is the
sampler thread's (``time.thread_time``), per monitored second.

    python bench/window_bench.py              # ~1 minute
    python bench/window_bench.py --seconds 120

Needs gcc and root (pagemap PFNs, /proc/kpageflags). Writes nothing under /sys: the
page_idle bitmap is a sparse file in a temp dir (engine_bench.fake_sys_root), so the figures
are the Python and pagemap/kpageflags part without the kernel's rmap walk behind the bitmap.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from engine_bench import MIB, PAGE, Holder, build_floor, fake_sys_root  # noqa: E402

from exporter.engines.page_idle.monitor import Monitor  # noqa: E402
from exporter.engines.page_idle.ops_page_idle import PageIdleOps  # noqa: E402
from exporter.engines.page_idle.ops_simulated import VirtualClock  # noqa: E402
from exporter.engines.page_idle.windows import WINDOW_PAGES  # noqa: E402
from exporter.model.attrs import MonitoringAttrs  # noqa: E402
from exporter.model.engine import TargetSpec  # noqa: E402


def run(holder: Holder, sys_root: str, seconds: float, horizons: tuple[float, ...]) -> tuple[float, int, int]:
    """CPU seconds per monitored second, aggregations, and regions at the end."""
    clock = VirtualClock()
    mon = Monitor(PageIdleOps(sys_root=sys_root), MonitoringAttrs(), rng=random.Random(1),
                  clock=clock, wall_clock=clock, sleep=clock.sleep)
    mon.set_horizons(horizons)
    mon.set_targets([TargetSpec("t", (holder.ref,))])
    t0, start, aggs, regions = time.thread_time(), clock(), 0, 0
    try:
        while clock() - start < seconds:
            agg = mon.step()
            if agg is not None:
                aggs += 1
                regions = len(agg.targets[0].regions)
    finally:
        mon.close()
    return (time.thread_time() - t0) / seconds, aggs, regions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="monitored (virtual) seconds per run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = build_floor(Path(tmp))
        sys_root = fake_sys_root(Path(tmp))
        holder = Holder(floor, 256 * MIB, PAGE)
        try:
            base, aggs, regions = run(holder, sys_root, args.seconds, ())
            win, _, _ = run(holder, sys_root, args.seconds, (60.0, 120.0))
        finally:
            holder.close()
    print(f"256 MiB resident, default attributes, {args.seconds:.0f} s monitored ({aggs} aggregations, "
          f"{regions} regions at the end), {WINDOW_PAGES} pages per window\n")
    print("| run | CPU per monitored second | share of a core | vs samples alone |")
    print("|---|---|---|---|")
    print(f"| samples alone (baseline) | {base * 1e3:.2f} ms | {base * 100:.3f}% | 1.00x |")
    print(f"| samples + page windows (60 s, 120 s) | {win * 1e3:.2f} ms | {win * 100:.3f}% | {win / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
