"""Counting each page once: what residency by share costs, before and after, in one run.

    sudo python bench/sharing_bench.py            # ~20 s

A 1 GiB heap (``tests/workloads/workload.c``), private, then shared copy-on-write with 4
forked readers, and the regions the engines weigh at their defaults (100 regions per
target): the time to weigh every region once, as the engines do per aggregation, by

- **before**: present bits only (RSS: a page five processes map counts five times), the
  count the engines made until this change, re-created here as the baseline;
- **after**: :func:`exporter.procfs.pagemap.resident_bytes_pagemap` with
  ``/proc/kpagecount``: exclusive pages by the same C-speed count, shared ones by
  1/mappers from a bounded sample (the cost appears only where pages are shared).

Both the page_idle (512-page exact reads) and damon_sysfs (16384-page exact reads) settings
are measured. Root is needed (PFNs and kpagecount).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.procfs.io import PosixIO  # noqa: E402
from exporter.procfs.pagemap import (  # noqa: E402
    _TOP_BIT,
    _TOP_BYTE,
    EXACT_PAGES,
    PAGE_SHIFT,
    RUN_PAGES,
    STRATA,
    PageCounts,
    Pagemap,
    resident_bytes_pagemap,
    zero_page_pfn,
)

MiB = 1 << 20
REGIONS = 100


def rss_only(pm: Pagemap, ranges: list[tuple[int, int]], rng: random.Random, exact_pages: int) -> list[int]:
    """The count before this change: present bits, every page whole."""
    exact_pages = max(exact_pages, EXACT_PAGES)
    out = []
    for start, end in ranges:
        first, n = start >> PAGE_SHIFT, (end - start) >> PAGE_SHIFT
        if n <= exact_pages:
            out.append(pm.raw(first, n)[_TOP_BYTE::8].translate(_TOP_BIT).count(1))
            continue
        total = 0.0
        for k in range(STRATA):
            lo, hi = first + n * k // STRATA, first + n * (k + 1) // STRATA
            run = min(RUN_PAGES, hi - lo)
            at = lo + rng.randrange(hi - lo - run + 1)
            total += pm.raw(at, run)[_TOP_BYTE::8].translate(_TOP_BIT).count(1) / run * (hi - lo)
        out.append(int(total))
    return out


def timed(fn, repeat: int = 20) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (PFNs from pagemap, /proc/kpagecount)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp())
    binary = tmp / "workload"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(REPO / "tests/workloads/workload.c")], check=True)
    io = PosixIO()
    counts = PageCounts.open(io, "/proc")
    zero = zero_page_pfn(io, "/proc")
    rng = random.Random(1)
    print("| heap | setting | before (RSS) | after (by share) | after / before | resident before | resident after |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for layout, args in (("1 GiB private", ["--size", "1024", "--hot", "128", "--no-tlb-flush", "--period-us", "50000"]),
                         ("1 GiB shared by 5", ["--size", "1024", "--hot", "128", "--readers", "4", "--no-tlb-flush", "--period-us", "50000"])):
        n = 5 if "--readers" in args else 1
        p = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE, text=True)
        ready = [json.loads(p.stdout.readline()[6:]) for _ in range(n)]
        owner = next((r for r in ready if r["kind"] in ("shared", "buffer")), ready[0])
        try:
            pm = Pagemap(io, "/proc", owner["pid"], "")
            step = owner["size"] // REGIONS
            ranges = [(owner["addr"] + i * step, owner["addr"] + (i + 1) * step) for i in range(REGIONS)]
            for setting, exact in (("page_idle", 0), ("damon_sysfs", 16384)):
                b = timed(lambda: rss_only(pm, ranges, rng, exact))
                a = timed(lambda: resident_bytes_pagemap(pm, ranges, rng, zero, exact_pages=exact, counts=counts))
                rb = sum(rss_only(pm, ranges, rng, exact)) << PAGE_SHIFT
                ra = sum(r.bytes for r in resident_bytes_pagemap(pm, ranges, rng, zero, exact_pages=exact, counts=counts))
                print(f"| {layout} | {setting} | {b * 1e3:.2f} ms | {a * 1e3:.2f} ms | {a / b:.2f} | "
                      f"{rb / MiB:.0f} MiB | {ra / MiB:.0f} MiB |")
            pm.close()
        finally:
            p.kill()
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
