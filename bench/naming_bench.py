#!/usr/bin/env python3
"""What target name templates cost in one discovery pass, against a static name (baseline)
in the same run, over N helper processes this script starts (copies of sleep under ten names, told apart
by a number in their command line; nothing else on the machine matches).

    python bench/naming_bench.py [--procs 200] [--rounds 30]

Prints one row per name: median discovery time, its ratio to the baseline, the targets made.
Never fails on a number.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.config import parse_config  # noqa: E402
from exporter.discovery import Discoverer  # noqa: E402

NAMES = [
    ("static (baseline)", "bench"),
    ("{{.Comm}}", "{{.Comm}}"),
    ("{{.ExeBase}}", "{{.ExeBase}}"),
    ("{{.Username}}", "{{.Username}}"),
    ("{{.Matches.n}}", "{{.Matches.n}}"),
    ("{{.PodUID}}-{{.ContainerID}}", "p{{.PodUID}}-{{.ContainerID}}"),
    ("{{.ExeBase}}-{{.Username}}-{{.Matches.n}}", "{{.ExeBase}}-{{.Username}}-{{.Matches.n}}"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="naming-bench-"))
    sleep = shutil.which("sleep")
    progs = []
    for i in range(args.procs):
        exe = tmp / f"nb{i % 10}"  # ten distinct programs
        if not exe.exists():
            shutil.copy(sleep, exe)
        # GNU sleep sums its arguments: the second one is the marker the targets match
        progs.append(subprocess.Popen([str(exe), "600", str(i % 20)], stderr=subprocess.DEVNULL))
    try:
        time.sleep(0.5)
        discoverers = []
        for label, name in NAMES:
            cap = "    max_groups: 1000\n" if "{{" in name else ""
            config = parse_config(f'targets:\n  - name: "{name}"\n    match: {{cmdline: ["naming-bench-.*/nb[0-9] 600 (?P<n>[0-9]+)$"]}}\n{cap}')
            discoverers.append((label, Discoverer(config)))
        # round-robin, so that load from elsewhere on the machine hits every row alike
        times: dict[str, list[float]] = {label: [] for label, _ in discoverers}
        specs_of: dict[str, list] = {}
        for _ in range(args.rounds):
            for label, d in discoverers:
                t0 = time.perf_counter()
                specs_of[label] = d.discover()
                times[label].append(time.perf_counter() - t0)
        rows = [(label, statistics.median(times[label]), len(specs_of[label]), sum(len(s.processes) for s in specs_of[label]))
                for label, _ in discoverers]
        base = rows[0][1]
        print("| name | median discovery | vs static | targets | processes |")
        print("|---|---:|---:|---:|---:|")
        for label, t, n, p in rows:
            print(f"| `{label}` | {t * 1000:.2f} ms | {t / base:.2f}x | {n} | {p} |")
    finally:
        for p in progs:
            p.kill()
        for p in progs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
