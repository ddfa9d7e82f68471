"""Cost of the running exporter: CPU share and RSS by number of targets, scrape latency.

For each size N (default 1, 10, 50) it starts N child processes that each map 1 GiB of
anonymous memory but keep only ``--resident-mib`` of it resident (part hot, part cold:
50 GiB resident would not fit this 24 GiB machine), one target per child, and runs the
real exporter (``python -m exporter``) with the default monitoring attributes and the
given ``cpu_budget``. After the budget controller has settled (``damon_sampler_budget_ratio``
<= 1, or ``--settle`` seconds) it measures the exporter's CPU share from /proc/PID/stat over
``--window`` seconds and its RSS, then scrapes ``/metrics`` with ``--scrapers`` concurrent
clients for ``--scrape-seconds`` and reports p50/p99 latency, next to a bare
prometheus_client server exposing the same number of series, measured in the same run.

Prints a markdown table. Example: ``python bench/exporter_bench.py --sizes 1,10 --window 10``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.exporter import (  # noqa: E402 - after the path fix
    Exporter,
    comm_target,
    free_port,
    proc_cpu_seconds,
    proc_rss,
    start_child,
)

MiB = 1 << 20

BASELINE = """
import sys, time
from prometheus_client import Gauge, start_http_server
n = int(sys.argv[2])
g = Gauge("bench_series", "baseline series", ["target", "le"])
for i in range(n):
    g.labels(str(i // 30), str(i % 30)).set(i)
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def config(names: list[str], budget: float) -> str:
    return f"cpu_budget: {budget}\ntargets:\n" + "".join(comm_target(f"t{i}", n) for i, n in enumerate(names))


def scrape_latencies(port: int, scrapers: int, seconds: float) -> tuple[list[float], int]:
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/metrics")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status != 200:
                    raise OSError(r.status)
                mine.append(time.perf_counter() - t)
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors[0]


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def count_series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def bench_size(n: int, a: argparse.Namespace, tmp: Path) -> dict:
    hot = max(1, a.resident_mib // 4)
    kids = [start_child(f"bx{os.getpid() % 10000}_{i}"[:15], hot_mib=hot, cold_mib=a.resident_mib - hot,
                        chunks=4, period=1.0, reserve_mib=1024 - a.resident_mib) for i in range(n)]
    cfg = tmp / f"c{n}.yaml"
    cfg.write_text(config([k.name for k in kids], a.budget))
    e = Exporter(cfg, free_port(), tmp / f"e{n}.log").start()
    base = None
    try:
        e.wait_ready(120)
        deadline = time.monotonic() + a.settle
        s = e.scrape()
        while time.monotonic() < deadline:
            s = e.scrape()
            if (s.get("damon_sampler_budget_ratio") or 9) <= 1.0 and s.get("damon_sampler_checks_total"):
                break
            time.sleep(1)
        c0, t0 = proc_cpu_seconds(e.pid), time.monotonic()
        time.sleep(a.window)
        share = (proc_cpu_seconds(e.pid) - c0) / (time.monotonic() - t0)
        rss = proc_rss(e.pid)
        s = e.scrape()
        series = count_series(s.text)
        regions = sum(x.value for x in s.all("damon_regions"))
        resident = sum(x.value for x in s.all("damon_resident_bytes"))
        si = s.get("damon_sampler_sample_interval_seconds")
        lat, err = scrape_latencies(e.port, a.scrapers, a.scrape_seconds)
        bport = free_port()
        base = subprocess.Popen([sys.executable, "-c", BASELINE, str(bport), str(series)], stdout=subprocess.PIPE, text=True)
        assert base.stdout.readline().startswith("ready")
        blat, berr = scrape_latencies(bport, a.scrapers, a.scrape_seconds)
    finally:
        e.stop()
        if base is not None:
            base.kill()
            base.wait()
        for k in kids:
            k.stop()
    return dict(n=n, share=share, rss=rss, series=series, regions=regions, resident=resident, si=si,
                p50=pct(lat, 50), p99=pct(lat, 99), nlat=len(lat), err=err,
                bp50=pct(blat, 50), bp99=pct(blat, 99), berr=berr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,50", help="numbers of targets (default 1,10,50)")
    ap.add_argument("--budget", type=float, default=0.05, help="cpu_budget, share of one core (default 0.05)")
    ap.add_argument("--resident-mib", type=int, default=64, help="resident MiB per 1 GiB child (default 64)")
    ap.add_argument("--settle", type=float, default=90, help="max seconds to wait for the budget to settle")
    ap.add_argument("--window", type=float, default=20, help="CPU measurement window, seconds")
    ap.add_argument("--scrapers", type=int, default=20)
    ap.add_argument("--scrape-seconds", type=float, default=10)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in (int(x) for x in a.sizes.split(",")):
            r = bench_size(n, a, Path(d))
            rows.append(r)
            print(f"# {n} targets done", file=sys.stderr, flush=True)
    print(f"Each target: one process mapping 1 GiB, {a.resident_mib} MiB of it resident ({a.resident_mib // 4} MiB rewritten every second, "
          f"the rest never again); default monitoring attributes; cpu_budget {a.budget} of one core; "
          f"CPU share of the whole exporter process over {a.window:g} s after the budget settled; "
          f"{a.scrapers} concurrent scrapers for {a.scrape_seconds:g} s (new connection per scrape).\n")
    print("| targets | resident monitored | regions | sample interval | CPU share (budget) | RSS | series | scrape p50 / p99 | baseline p50 / p99 | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "ok" if r["share"] <= a.budget * 1.1 else "OVER"
        print(f"| {r['n']} | {r['resident'] / 2**30:.2f} GiB | {r['regions']:.0f} | {r['si'] * 1000:.0f} ms | "
              f"{r['share']:.3f} ({a.budget}, {ok}) | {r['rss'] / MiB:.0f} MiB | {r['series']} | "
              f"{r['p50'] * 1000:.1f} / {r['p99'] * 1000:.1f} ms | {r['bp50'] * 1000:.1f} / {r['bp99'] * 1000:.1f} ms | {r['err']} / {r['berr']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
