#!/usr/bin/env python3
"""How low may the CPU budget push a target's region cap? Accuracy against the cap.

Not a test: prints a markdown table. The real engine on simulated memory (virtual clock,
exact truth): a 512 MiB buffer with hot ranges, 100 ms / 2 s, ``min_regions`` 10, cold age
10 s, working-set window 4 s, the region cap held at each value from the start. For each
cap: the worst and mean error of working set and cold bytes over the second half of 60
aggregations (as a share of the true working set), and the largest
``damon_working_set_error_bytes`` estimate, over hot-set placements and seeds. The budget's
floor (``REGION_FLOOR`` x ``min_regions``, exporter/service/budget.py) comes from this.

    python bench/region_floor.py             # ~20 s
    python bench/region_floor.py --caps 10 40 --seeds 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.model.attrs import MonitoringAttrs  # noqa: E402
from exporter.engines.page_idle.ops_simulated import HotRange  # noqa: E402
from tests.support.simulation import BASE, STACK, TEXT, MiB, aggregations, make_monitor, process_with_buffer  # noqa: E402

SIZE = 512
#: hot ranges (offset MiB, size MiB) inside the buffer, per pattern
PATTERNS = {
    "64 MiB at the top": [(448, 64)],
    "64 MiB at 200 MiB": [(200, 64)],
    "64 MiB at the bottom": [(0, 64)],
    "64 MiB at 333 MiB": [(333, 64)],
    "2 x 32 MiB": [(100, 32), (350, 32)],
}


def run(cap: int, seed: int, hot: list[tuple[int, int]], n: int = 60) -> tuple[float, float, float]:
    ranges = [HotRange(BASE + a * MiB, BASE + (a + s) * MiB) for a, s in hot]
    mon, _, _ = make_monitor({1: process_with_buffer(SIZE * MiB, ranges)}, MonitoringAttrs(0.1, 2.0, 10.0, 10, 200),
                             seed=seed, cold_age=10.0, working_set_window=4.0)
    mon.set_region_cap(("t", ()), cap)
    resident = SIZE * MiB + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    ws_truth = sum(s for _, s in hot) * MiB
    cold_truth = resident - ws_truth
    errs, est = [], []
    for i, snap in enumerate(aggregations(mon, n)):
        t = snap.target("t")
        if i >= n // 2:
            errs.append(max(abs(t.working_set_bytes - ws_truth), abs(t.cold_bytes - cold_truth)) / ws_truth)
            est.append(t.working_set_error_bytes / ws_truth)
    return max(errs), sum(errs) / len(errs), max(est)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", type=int, nargs="+", default=[10, 20, 30, 40, 60, 100])
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    print("| region cap | worst error (share of WS) | mean error | worst estimate | runs |")
    print("|---:|---:|---:|---:|---:|")
    for cap in args.caps:
        results = [run(cap, seed, hot) for hot in PATTERNS.values() for seed in range(args.seeds)]
        worst = max(r[0] for r in results)
        mean = sum(r[1] for r in results) / len(results)
        est = max(r[2] for r in results)
        print(f"| {cap} | {worst:.1%} | {mean:.2%} | {est:.1%} | {len(results)} |", flush=True)


if __name__ == "__main__":
    main()
