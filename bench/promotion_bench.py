"""Cold memory that comes back: ``damon_cold_promoted_bytes_total`` against the truth on a
grid of revival lengths and chunk sizes, per engine, in one run (issue 29).

The workload on every engine: 512 MiB resident, the top 64 MiB used in every sample
interval; from 60 s on, six chunks of the cold rest (each idle since the start, far longer
than ``cold_age``) come back one after the other, each used in every sample interval for
``L`` seconds, the next starting 10 s after the last ended. The truth is exact: six chunks
came back from idleness longer than ``cold_age``. The counter is read once every return has
had 5 aggregations to settle, its error beside it.

- **DAMON's regions** (page_idle's algorithm; damon_sysfs runs the same one in the kernel):
  the real monitor and summary on simulated memory with a virtual clock, at page_idle's
  defaults (500 ms samples, 10 s aggregations) and at kernel DAMON's (5 ms, 2 s), two seeds
  each. The simulated access is the one the engines read: a page used in a sample interval
  has its accessed bit set in it.
- **clear_refs**: the real engine on a real process of this host (``tests/workloads/
  touch.c`` writes the pages each sample interval names; only time is virtual), at the
  defaults (500 ms, 10 s).

Columns: the counter's growth over the truth; its error over the truth; whether the counter
is within 25% of the truth (issue 29's bar); whether counter ± error brackets the truth.
``cold_age`` is 20 s and ``working_set_window`` 5 s, so minutes of returns fit in a run; a
return is told from memory in use by its idle time, so a longer ``cold_age`` changes which
chunks count, not how each is counted.

    python3 bench/promotion_bench.py            # the full grid, about 2 minutes
    python3 bench/promotion_bench.py --quick    # 3 lengths, one chunk size, one seed
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.engines.page_idle.ops_simulated import HotRange, VirtualClock  # noqa: E402
from exporter.model.attrs import MonitoringAttrs  # noqa: E402
from exporter.summary.promotion import Promotions  # noqa: E402
from tests.support.simulation import BASE, aggregations, make_monitor, process_with_buffer  # noqa: E402
from tests.support.touch_driver import TouchProcess, drive  # noqa: E402
from tests.support.workloads import build_workload  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10
SIZE, HOT = 512, 64
START, PAUSE, CHUNKS = 60.0, 10.0, 6
COLD_AGE, WINDOW = 20.0, 5.0
SETTLE = 6  # aggregations after the last return ends: 5 to settle, one to be sure
ENGINES = {
    "page_idle defaults (sim.)": MonitoringAttrs(0.5, 10.0, 60.0, 10, 100),
    "kernel DAMON defaults (sim.)": MonitoringAttrs(0.005, 2.0, 60.0, 10, 100),
}
CLEAR_REFS_ATTRS = MonitoringAttrs(0.5, 10.0, 60.0, 10, 100)


def schedule(length: float) -> list[tuple[float, float]]:
    """(first, end) of each chunk's use, virtual seconds."""
    return [(START + k * (length + PAUSE), START + k * (length + PAUSE) + length) for k in range(CHUNKS)]


def duration(length: float, aggregation: float) -> float:
    return schedule(length)[-1][1] + SETTLE * aggregation


def simulated(attrs: MonitoringAttrs, length: float, chunk_mib: int, seed: int) -> Promotions:
    hots = [HotRange(BASE + (SIZE - HOT) * MiB, BASE + SIZE * MiB)]
    zero = VirtualClock().now  # the simulation's clock starts there
    hots += [HotRange(BASE + k * chunk_mib * MiB, BASE + (k + 1) * chunk_mib * MiB, active_from=zero + t0,
                      active_until=zero + t1) for k, (t0, t1) in enumerate(schedule(length))]
    mon, _, _ = make_monitor({1: process_with_buffer(SIZE * MiB, hots)}, attrs, seed=seed, cold_age=COLD_AGE,
                             working_set_window=WINDOW)
    p = Promotions()
    for snap in aggregations(mon, int(duration(length, attrs.aggregation_interval) / attrs.aggregation_interval)):
        p = snap.target("t").promotions
    return p


def clear_refs(binary: str, length: float, chunk_mib: int) -> Promotions:
    """The clear_refs engine on a real process, driven as the sampler drives it."""
    def ranges(now: float) -> list[tuple[int, int]]:
        return [((SIZE - HOT) * MiB, SIZE * MiB)] + [
            (k * chunk_mib * MiB, (k + 1) * chunk_mib * MiB) for k, (t0, t1) in enumerate(schedule(length)) if t0 <= now < t1]

    t = TouchProcess(binary, SIZE)
    try:
        seen = drive(t, CLEAR_REFS_ATTRS, WINDOW, COLD_AGE, ranges, duration(length, CLEAR_REFS_ATTRS.aggregation_interval))
    finally:
        t.close()
    return seen[-1][1] if seen else Promotions()


def row(engine: str, length: float, chunk_mib: int, ps: list[Promotions], seconds: float, width: int) -> str:
    """One table row; cells past ``ps`` (a run with no random draws: clear_refs) are "-"."""
    truth = CHUNKS * chunk_mib * MiB
    cells = []
    for p in ps:
        within = abs(p.promoted_bytes - truth) <= 0.25 * truth
        covered = abs(p.promoted_bytes - truth) <= p.promoted_error_bytes
        cells.append(f"{p.promoted_bytes / truth:5.2f} ± {p.promoted_error_bytes / truth:4.2f} "
                     f"{'yes' if within else 'no ':3} {'yes' if covered else 'no ':3}")
    cells += ["-"] * (width - len(cells))
    return f"| {engine:28} | {length:4g} s | {chunk_mib:3d} MiB | " + " | ".join(cells) + f" | {seconds:5.1f} s |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="lengths 1, 10 and 60 s, 8 MiB chunks, one seed")
    ap.add_argument("--no-clear-refs", action="store_true", help="leave out the real clear_refs rows")
    args = ap.parse_args()
    lengths = (1.0, 10.0, 60.0) if args.quick else (1.0, 3.0, 10.0, 30.0, 60.0)
    chunks = (8,) if args.quick else (2, 8, 32)
    seeds = (0,) if args.quick else (0, 1)
    print(f"truth: {CHUNKS} chunks, each idle since the start, back for L seconds; cold_age {COLD_AGE:g} s")
    print("cells: counter / truth ± error / truth, within 25%, error brackets the truth (one per seed;"
          " clear_refs draws nothing at random)")
    print(f"| engine | L | chunk | {' | '.join(f'seed {s}' for s in seeds)} | time |")
    print("|---|---|---|" + "---|" * len(seeds) + "---|")
    for engine, attrs in ENGINES.items():
        for chunk_mib in chunks:
            for length in lengths:
                t0 = time.process_time()
                ps = [simulated(attrs, length, chunk_mib, seed) for seed in seeds]
                print(row(engine, length, chunk_mib, ps, time.process_time() - t0, len(seeds)), flush=True)
    if args.no_clear_refs:
        return
    if os.geteuid() != 0:
        print("clear_refs rows left out: they need root (clear_refs of a child is a ptrace-access write)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        binary = build_workload("touch.c", Path(tmp), "dxtouch")
        for chunk_mib in chunks:
            for length in lengths:
                t0 = time.process_time()
                p = clear_refs(str(binary), length, chunk_mib)
                print(row("clear_refs defaults (host)", length, chunk_mib, [p], time.process_time() - t0, len(seeds)),
                      flush=True)


if __name__ == "__main__":
    main()
