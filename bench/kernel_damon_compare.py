#!/usr/bin/env python3
"""Cross-check: our user-space DAMON (page_idle backend) against the kernel's own DAMON.

Both monitor the same workload (tests/workloads/workload.c: a fully resident buffer, a known
hot part touched continuously) with the same attributes, one after the other (run together
they would fight over the same accessed bits), inside the page_idle test VM. Printed side
by side: working set and cold bytes from each, the truth, and the CPU time each spent
(kdamond's thread CPU from /proc/PID/stat; ours from this process' CPU time while it
monitored).

    python bench/kernel_damon_compare.py [--seconds 16] [--size 128] [--hot 32] [--thp]

boots the VM (tests/vm/harness.py) and prints a markdown table; inside the VM it runs itself
with ``--in-guest``, which refuses to run anywhere but the test VM: it writes to
/sys/kernel/mm/damon, which on the host belongs to the machine's own kdamond.

How the kernel's numbers are derived: at each aggregation its regions are read through a
``stat`` scheme's tried regions; a region's idle time is ``age * aggregation interval`` if
its ``nr_accesses`` is 0, else 0 -- the same rule our snapshots use -- and each region is
weighted by its resident bytes (measured from pagemap, as ours are), so that both count
the same memory. Steady-state values are the median of the last three aggregations.
Absolute CPU times come from an emulated CPU (TCG): compare them with each other only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

MiB = 1 << 20
SAMPLE = 0.1
AGGR = 1.0
UPDATE = 2.0
MIN_REGIONS = 10
MAX_REGIONS = 200
COLD_AGE = 4.0
WINDOW = 4.0
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
WORKLOAD_CPU = 1 if (os.cpu_count() or 1) > 1 else 0


# -- guest side ----------------------------------------------------------------------------


def _start_workload(binary: str, size: int, hot: int, thp: bool) -> tuple[subprocess.Popen, dict]:
    args = [binary, "--size", str(size), "--hot", str(hot)] + (["--thp"] if thp else [])
    # the workload gets vCPU 1 to itself (see in_guest): on a shared emulated CPU it would
    # stall while a monitor runs, and both monitors would see its hot set go idle
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {WORKLOAD_CPU}))
    line = proc.stdout.readline().decode()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"workload did not start: {line!r}")
    return proc, json.loads(line.split(" ", 1)[1])


def _summarize(items: list[tuple[float, int]]) -> tuple[int, int, int]:
    """(working set, cold, resident) from (idle seconds, resident bytes) pairs."""
    ws = sum(b for idle, b in items if idle < WINDOW)
    cold = sum(b for idle, b in items if idle >= COLD_AGE)
    return ws, cold, sum(b for _, b in items)


def run_kernel(pid: int, seconds: float) -> dict:
    from exporter.procfs import Pagemap, PosixIO, resident_bytes_pagemap
    from guest.kdamond_sysfs import Kdamond, thread_cpu_seconds

    pm = Pagemap(PosixIO(), "/proc", pid, "needs root")
    kd = Kdamond(pid, sample_us=int(SAMPLE * 1e6), aggr_us=int(AGGR * 1e6), update_us=int(UPDATE * 1e6),
                 min_regions=MIN_REGIONS, max_regions=MAX_REGIONS)
    rng = random.Random(1)
    series = []
    try:
        kpid = kd.start()
        c0 = thread_cpu_seconds(kpid)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            regions = kd.regions()  # returns after the next aggregation
            res = resident_bytes_pagemap(pm, [(r.start, r.end) for r in regions], rng)
            items = [((r.age * AGGR if r.nr_accesses == 0 else 0.0), b) for r, b in zip(regions, res)]
            ws, cold, resident = _summarize(items)
            series.append({"t": round(time.monotonic() - t0, 2), "working_set": ws, "cold": cold,
                           "resident": resident, "nr_regions": len(regions)})
        cpu = thread_cpu_seconds(kpid) - c0
        wall = time.monotonic() - t0
    finally:
        kd.stop()
        pm.close()
    return {"series": series, "cpu_seconds": cpu, "wall_seconds": wall}


def run_ours(pid: int, seconds: float) -> dict:
    from exporter.core.attrs import MonitoringAttrs
    from exporter.core.engine import TargetSpec
    from exporter.core.monitor import Monitor
    from exporter.ops.base import ProcessRef
    from exporter.ops.page_idle import PageIdleOps
    from exporter.summary import Policy, summarize

    attrs = MonitoringAttrs(sample_interval=SAMPLE, aggregation_interval=AGGR, update_interval=UPDATE,
                            min_regions=MIN_REGIONS, max_regions=MAX_REGIONS)
    ops = PageIdleOps()
    m = Monitor(ops, attrs)
    policy = Policy(cold_age=COLD_AGE, working_set_window=WINDOW)
    m.set_targets([TargetSpec("w", (ProcessRef(pid),))])
    series = []
    c0 = time.process_time()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            agg = m.step()
            if agg is not None:
                t = summarize(agg, policy).target("w")
                series.append({"t": round(time.monotonic() - t0, 2), "working_set": t.working_set_bytes,
                               "cold": t.cold_bytes, "resident": t.resident_bytes, "nr_regions": t.nr_regions})
    finally:
        ops.close()
    return {"series": series, "cpu_seconds": time.process_time() - c0, "wall_seconds": time.monotonic() - t0}


def in_guest(args: argparse.Namespace) -> int:
    from guest.kdamond_sysfs import NotInTestVM, require_test_vm

    try:
        require_test_vm(args.expect_release)
    except NotInTestVM as e:
        print(f"kernel_damon_compare: {e}", file=sys.stderr)
        return 2
    if not args.workload or not args.json:
        print("kernel_damon_compare: --in-guest needs --workload and --json", file=sys.stderr)
        return 2
    with open(THP_ENABLED, "w") as f:
        f.write("madvise")
    os.sched_setaffinity(0, {0})
    proc, ready = _start_workload(args.workload, args.size, args.hot, args.thp)
    try:
        time.sleep(1.0)
        kernel = run_kernel(ready["pid"], args.seconds)
        ours = run_ours(ready["pid"], args.seconds)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = {
        "release": os.uname().release,
        "attrs": {"sample": SAMPLE, "aggr": AGGR, "update": UPDATE, "min_regions": MIN_REGIONS,
                  "max_regions": MAX_REGIONS, "cold_age": COLD_AGE, "window": WINDOW},
        "truth": {"working_set": ready["hot_size"], "cold": ready["size"] - ready["hot_size"],
                  "buffer": ready["size"], "thp": bool(args.thp)},
        "seconds": args.seconds,
        "kernel": kernel,
        "ours": ours,
    }
    with open(args.json, "w") as f:
        json.dump(out, f)
    print(table(out))
    return 0


# -- presentation --------------------------------------------------------------------------


def steady(series: list[dict], key: str, n: int = 3) -> float:
    return statistics.median(s[key] for s in series[-n:]) if series else float("nan")


def table(res: dict) -> str:
    truth = res["truth"]
    rows = [
        "| | working set | cold bytes | CPU time | CPU share of wall |",
        "|---|---:|---:|---:|---:|",
        f"| truth | {truth['working_set'] / MiB:.1f} MiB | {truth['cold'] / MiB:.1f} MiB | | |",
    ]
    for label, key in (("kernel DAMON (kdamond, vaddr)", "kernel"), ("damon-exporter (page_idle)", "ours")):
        r = res[key]
        ws, cold = steady(r["series"], "working_set"), steady(r["series"], "cold")
        rows.append(
            f"| {label} | {ws / MiB:.1f} MiB ({_err(ws, truth['working_set'])}) | "
            f"{cold / MiB:.1f} MiB ({_err(cold, truth['cold'])}) | {r['cpu_seconds']:.2f} s | "
            f"{r['cpu_seconds'] / r['wall_seconds']:.1%} |"
        )
    a = res["attrs"]
    note = (
        f"\nKernel {res['release']} under QEMU TCG, {truth['buffer'] / MiB:.0f} MiB buffer "
        f"({'THP' if truth['thp'] else '4 KiB pages'}), sample {a['sample'] * 1000:.0f} ms, "
        f"aggregation {a['aggr']:.0f} s, regions {a['min_regions']}-{a['max_regions']}, "
        f"cold age = working-set window = {a['cold_age']:.0f} s, {res['seconds']:.0f} s each; "
        "values: median of the last 3 aggregations."
    )
    return "\n".join(rows) + "\n" + note


def _err(v: float, truth: float) -> str:
    return f"{(v - truth) / truth:+.0%}" if truth else "n/a"


# -- host side -----------------------------------------------------------------------------


def on_host(args: argparse.Namespace) -> int:
    from tests.vm import harness

    try:
        kernel = harness.find_kernel()
        release = harness.kernel_release(kernel)
    except harness.VMUnavailable as e:
        print(f"kernel_damon_compare: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="damon-compare-") as d:
        shared = Path(d)
        binary = harness.build_workload(shared / "bin")
        out = shared / "result.json"
        cmd = (
            f"{sys.executable} {Path(__file__).resolve()} --in-guest --workload {binary} --json {out} "
            f"--expect-release {release} --seconds {args.seconds} --size {args.size} --hot {args.hot}"
            + (" --thp" if args.thp else "")
        )
        run = harness.run_in_guest(cmd, kernel=kernel, timeout=args.seconds * 2 + 600, shared_dir=shared)
        if run.exit_code != 0 or not out.exists():
            print(f"kernel_damon_compare: {run.describe()}", file=sys.stderr)
            return 1
        res = json.loads(out.read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=16.0, help="monitoring time of each monitor")
    ap.add_argument("--size", type=int, default=128, help="workload buffer, MiB")
    ap.add_argument("--hot", type=int, default=32, help="hot part of the buffer, MiB")
    ap.add_argument("--thp", action="store_true", help="back the buffer with transparent huge pages")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--expect-release", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.hot > args.size or args.hot <= 0:
        ap.error(f"--hot ({args.hot}) must be positive and at most --size ({args.size})")
    return in_guest(args) if args.in_guest else on_host(args)


if __name__ == "__main__":
    sys.exit(main())
