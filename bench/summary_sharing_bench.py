"""What the summary's sharing pass costs per aggregation, with and without frame identity.

    python bench/summary_sharing_bench.py          # ~1 minute, no privileges

Forked workers sharing one heap copy-on-write at one address (gunicorn ``--preload``,
PostgreSQL backends): P processes, each with R regions over the heap, cut at different
places (as each process' own DAMON splits leave them), a tenth of the heap hot. The
summary (:func:`exporter.summary.stat.summarize_target`) runs on these records

- **by address** (the baseline, in the same run): no frames read, as for an exporter that
  cannot read PFNs; the same addresses in one target are one memory;
- **by frame**: 16 frames per region read (what clear_refs and damon_sysfs attach), all
  regions of one memory, so every overlapping pair is compared.

The ratio is what matching by identity adds. Printed as a table of median milliseconds
over repeats.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.engines.identity import frame_grid  # noqa: E402
from exporter.model.records import RegionRecord, TargetRecords  # noqa: E402
from exporter.summary import Policy, summarize_target  # noqa: E402

MiB = 1 << 20
BASE = 0x7F00_0000_0000
HEAP = 1024 * MiB
REPEATS = 5


def records(processes: int, regions: int, frames: bool, seed: int = 0) -> list[RegionRecord]:
    rng = random.Random(seed)
    hot = (0, HEAP // 10)
    out = []
    for p in range(processes):
        cuts = sorted({0, HEAP, *(rng.randrange(1, HEAP // 4096) * 4096 for _ in range(regions - 1))})
        for a, b in zip(cuts, cuts[1:]):
            used = a < hot[1]
            share = (b - a) // processes
            r = RegionRecord(1000 + p, BASE + a, BASE + b, share, nr_accesses=20 if used else 0, nr_checks=20,
                             idle_seconds=0.0 if used else 600.0, shared_bytes=share)
            if frames:
                r = replace(r, frames=tuple((x, x >> 12) for x in frame_grid(r.start, r.end)))
            out.append(r)
    return out


def timed(regions: list[RegionRecord]) -> float:
    t = TargetRecords("t", tuple(sorted({r.pid for r in regions})), tuple(regions), 0.0)
    times = []
    for _ in range(REPEATS):
        c = time.perf_counter()
        summarize_target(t, Policy(60.0, 10.0), 0.5)
        times.append(time.perf_counter() - c)
    return statistics.median(times) * 1000


def main() -> None:
    print("| processes | regions each | by address (ms) | by frame (ms) | ratio |")
    print("|---|---|---|---|---|")
    for processes, regions in ((5, 20), (5, 100), (20, 20), (50, 10), (100, 5), (100, 10)):
        base = timed(records(processes, regions, frames=False))
        ident = timed(records(processes, regions, frames=True))
        print(f"| {processes} | {regions} | {base:.1f} | {ident:.1f} | {ident / base:.2f} |")


if __name__ == "__main__":
    main()
