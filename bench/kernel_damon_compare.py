#!/usr/bin/env python3
"""Kernel DAMON through the damon_sysfs engine: its CPU cost against kernel DAMON alone and
against the page_idle engine, and its accuracy, on one workload inside the test VM.

Runs, one after the other on the same workload (tests/workloads/workload.c: a fully
resident buffer, a known hot part touched continuously), at equal intervals and region
bounds (run together they would fight over the same accessed bits):

- **kernel DAMON alone**: the same kdamond, configured by the engine, never read: the
  kdamond thread's CPU is the floor any reader of kernel DAMON pays;
- **damon_sysfs engine**: the exporter's engine reading every aggregation's regions back and
  weighing them by residency: kdamond CPU + this process' CPU;
- **page_idle engine**: user-space DAMON (only at the user-space sample interval: at 5 ms it
  would need more than the emulated CPU).

    python bench/kernel_damon_compare.py [--seconds 20] [--size 128] [--hot 32] [--thp]

boots the VM (tests/vm/harness.py) and prints a markdown table; inside the VM it runs itself
with ``--in-guest``, which refuses to run anywhere but the test VM: it drives
/sys/kernel/mm/damon, which on the host belongs to the machine's own kdamond.

Values: working set and cold bytes are the median of the last three aggregations (cold
age = working-set window = 4 s). CPU times come from an emulated CPU (TCG): compare them
with each other only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO)]

MiB = 1 << 20
MIN_REGIONS = 10
MAX_REGIONS = 100
UPDATE = 60.0
COLD_AGE = 4.0
WINDOW = 4.0
#: (sample interval, runs): kernel-class sampling, and the page_idle engine's own rate
SETTINGS = ((0.005, ("kernel", "damon_sysfs")), (0.1, ("kernel", "damon_sysfs", "page_idle")))
LABELS = {"kernel": "kernel DAMON alone", "damon_sysfs": "damon_sysfs engine", "page_idle": "page_idle engine"}
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
PAGE_IDLE_BITMAP = "/sys/kernel/mm/page_idle/bitmap"
MONITOR_CPU = 0
WORKLOAD_CPU = 1 if (os.cpu_count() or 1) > 1 else 0


class NotInTestVM(Exception):
    """Refusal to drive kernel DAMON outside the test VM (the message says why)."""


def require_test_vm(expect_release: str | None) -> None:
    """Refuse unless this is the virtme-ng test guest: the kernel command line is virtme's,
    the kernel has idle page tracking (the hosts here do not), the release is the test
    kernel's (when known)."""
    import platform

    cmdline = Path("/proc/cmdline").read_text()
    why = []
    if "virtme" not in cmdline:
        why.append("the kernel command line is not a virtme-ng guest's")
    if not os.path.exists(PAGE_IDLE_BITMAP):
        why.append(f"{PAGE_IDLE_BITMAP} does not exist")
    if expect_release and platform.release() != expect_release:
        why.append(f"kernel release is {platform.release()}, the test kernel's is {expect_release}")
    if why:
        raise NotInTestVM(
            "refusing to drive kernel DAMON outside the test VM (" + "; ".join(why) + "); "
            "run bench/kernel_damon_compare.py without --in-guest: it boots the VM"
        )


def thread_cpu_seconds(pid: int) -> float:
    """utime + stime of a task (a kernel thread too) from /proc/PID/stat, in seconds."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- guest side ----------------------------------------------------------------------------


def _start_workload(binary: str, size: int, hot: int, thp: bool) -> tuple[subprocess.Popen, dict]:
    args = [binary, "--size", str(size), "--hot", str(hot)] + (["--thp"] if thp else [])
    # the workload gets vCPU 1 to itself: on a shared emulated CPU it would stall while a
    # monitor runs, and every monitor would see its hot set go idle
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {WORKLOAD_CPU}))
    line = proc.stdout.readline().decode()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"workload did not start: {line!r}")
    return proc, json.loads(line.split(" ", 1)[1])


def _attrs(sample: float, aggr: float):
    from exporter.model.attrs import MonitoringAttrs

    return MonitoringAttrs(sample_interval=sample, aggregation_interval=aggr, update_interval=UPDATE,
                           min_regions=MIN_REGIONS, max_regions=MAX_REGIONS)


def _pin_kdamond(pid: int) -> None:
    try:
        os.sched_setaffinity(pid, {MONITOR_CPU})
    except OSError:
        pass


def run_once(kind: str, pid: int, sample: float, aggr: float, seconds: float) -> dict:
    """One monitor on ``pid`` for ``seconds``: its CPU split and its per-aggregation numbers."""
    from exporter.model.engine import TargetSpec
    from exporter.model.process import ProcessRef
    from exporter.summary import Policy, summarize

    attrs = _attrs(sample, aggr)
    policy = Policy(cold_age=COLD_AGE, working_set_window=WINDOW)
    spec = TargetSpec("w", (ProcessRef(pid),))
    if kind == "page_idle":
        from exporter.engines.page_idle.monitor import Monitor
        from exporter.engines.page_idle.ops_page_idle import PageIdleOps

        engine = Monitor(PageIdleOps(), attrs)
    else:
        from exporter.engines.damon_sysfs.engine import DamonSysfsEngine

        engine = DamonSysfsEngine(attrs)
    series = []
    kd_cpu = 0.0
    try:
        engine.set_targets([spec])
        kpid = -1
        if kind != "page_idle":
            engine.start()  # both kdamond runs are timed from the moment it runs
            kpid = engine.kdamond_pid
            _pin_kdamond(kpid)
        k0 = thread_cpu_seconds(kpid) if kpid > 0 else 0.0
        c0 = time.process_time()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if kind == "kernel":
                time.sleep(min(1.0, seconds - (time.monotonic() - t0)))
                continue
            agg = engine.step()
            if agg is not None:
                t = summarize(agg, policy).target("w")
                series.append({"t": round(time.monotonic() - t0, 2), "working_set": t.working_set_bytes,
                               "cold": t.cold_bytes, "resident": t.resident_bytes, "nr_regions": t.nr_regions})
        wall = time.monotonic() - t0
        own = time.process_time() - c0
        if kpid > 0:
            kd_cpu = thread_cpu_seconds(kpid) - k0
    finally:
        engine.close()
    if kind == "kernel":
        own = 0.0  # nothing of ours ran: the bench process only slept
    return {"kind": kind, "sample": sample, "aggr": aggr, "series": series, "kdamond_cpu": kd_cpu,
            "exporter_cpu": own, "wall_seconds": wall}


def in_guest(args: argparse.Namespace) -> int:
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
    os.sched_setaffinity(0, {MONITOR_CPU})
    proc, ready = _start_workload(args.workload, args.size, args.hot, args.thp)
    runs = []
    try:
        time.sleep(1.0)
        for sample, kinds in SETTINGS:
            for kind in kinds:
                runs.append(run_once(kind, ready["pid"], sample, args.aggregation, args.seconds))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = {
        "release": os.uname().release,
        "attrs": {"aggr": args.aggregation, "min_regions": MIN_REGIONS, "max_regions": MAX_REGIONS,
                  "cold_age": COLD_AGE, "window": WINDOW},
        "truth": {"working_set": ready["hot_size"], "cold": ready["size"] - ready["hot_size"],
                  "buffer": ready["size"], "thp": bool(args.thp)},
        "seconds": args.seconds,
        "runs": runs,
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
        "| run | sample | working set | cold bytes | kdamond CPU | exporter CPU | total CPU | vs kernel alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| truth | | {truth['working_set'] / MiB:.1f} MiB | {truth['cold'] / MiB:.1f} MiB | | | | |",
    ]
    alone = {r["sample"]: r["kdamond_cpu"] + r["exporter_cpu"] for r in res["runs"] if r["kind"] == "kernel"}
    for r in res["runs"]:
        total = r["kdamond_cpu"] + r["exporter_cpu"]
        if r["kind"] == "kernel":
            ws = cold = "(not read)"
        else:
            w, c = steady(r["series"], "working_set"), steady(r["series"], "cold")
            ws = f"{w / MiB:.1f} MiB ({_err(w, truth['working_set'])})"
            cold = f"{c / MiB:.1f} MiB ({_err(c, truth['cold'])})"
        base = alone.get(r["sample"])
        ratio = f"{total / base:.1f}x" if base else "n/a"
        rows.append(
            f"| {LABELS[r['kind']]} | {r['sample'] * 1000:g} ms | {ws} | {cold} | {r['kdamond_cpu']:.2f} s | "
            f"{r['exporter_cpu']:.2f} s | {total:.2f} s ({total / r['wall_seconds']:.1%}) | {ratio} |"
        )
    a = res["attrs"]
    note = (
        f"\nKernel {res['release']} under QEMU TCG, {truth['buffer'] / MiB:.0f} MiB buffer "
        f"({'THP' if truth['thp'] else '4 KiB pages'}), aggregation {a['aggr']:g} s, regions "
        f"{a['min_regions']}-{a['max_regions']}, cold age = working-set window = {a['cold_age']:.0f} s, "
        f"{res['seconds']:g} s each; values: median of the last 3 aggregations; CPU share of wall in brackets."
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
            f"--expect-release {release} --seconds {args.seconds} --size {args.size} --hot {args.hot} "
            f"--aggregation {args.aggregation}"
            + (" --thp" if args.thp else "")
        )
        run = harness.run_in_guest(cmd, kernel=kernel, timeout=args.seconds * 12 + 600, shared_dir=shared)
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
    ap.add_argument("--seconds", type=float, default=20.0, help="monitoring time of each run")
    ap.add_argument("--aggregation", type=float, default=2.0, help="aggregation interval, seconds (default 2: the damon_sysfs default)")
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
