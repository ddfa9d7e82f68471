"""What one local process or one hostile client can still cost: a legitimate scraper's latency
and the exporter's memory under each load of issue 22's items 3 and 4, before and after the
round-2 hardening, in one run.

Loads (each against a fresh exporter, clear_refs, one real target besides):

* ``mappings``: a matched process with 60,000 one-page mappings (under the default
  ``vm.max_map_count``): a curve per mapping used to make 30,020 regions and 232 MB peak;
* ``cmdlines``: 25 unmatched processes, each with a 5.8 MiB command line (``ulimit -s
  unlimited`` lets a user do that): read whole at every scan, 191 MB peak in 10 s;
* ``capture``: 20 matched processes named by a 120 KB regex capture (``{{.Matches.x}}``):
  copied into every series, 4.6 MB of /metrics per process;
* ``auth flood``: 40 clients sending a wrong password for a known user (bcrypt cost 12),
  beside a scraper with the right one: 2 of 20 scrapes answered before.

For each load and each exporter (``before``: ``--baseline-ref`` extracted with ``git
archive``; ``after``: this work tree) the scraper scrapes ``/metrics`` every ``--interval``
for ``--seconds`` while the load runs, and the exporter's RSS is sampled every second.
Prints one markdown table. ``python bench/hostile_loads.py`` takes about 6 minutes;
``--seconds 10 --loads mappings`` is a quick look. Root is not needed (clear_refs on the
bench's own processes).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import mmap
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from slow_clients import percentile, stop_process  # noqa: E402
from tests.support.exporter import free_port, proc_rss, start_child  # noqa: E402

#: the commit before the round-2 hardening (issue 22)
DEFAULT_BASELINE = "1cb028a"
MiB = 1 << 20
LOADS = ("none", "mappings", "cmdlines", "capture", "auth flood")
USER, PASSWORD = "prom", "right-password"


# -- the loads (each runs in a child process: python hostile_loads.py --load NAME) ---------


def load_mappings() -> None:
    """60,000 one-page mappings that cannot merge (alternating protections)."""
    maps = []
    for i in range(60_000):
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if i % 2 else 0)
        m = mmap.mmap(-1, 4096, prot=prot)
        if i % 2:
            m[0] = 1
        maps.append(m)
    print("ready", flush=True)
    sys.stdin.read()


def _long_args(total: int, one: int = 120 * 1024) -> list[str]:
    return ["A" * one for _ in range(total // one)]


def load_cmdlines() -> None:
    """25 sleeping processes with 5.8 MiB command lines (the stack limit lifted for them)."""
    def unlimited() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    procs = [subprocess.Popen(["sleep", "3600", *_long_args(int(5.8 * MiB))], preexec_fn=unlimited) for _ in range(25)]
    print("ready", flush=True)
    sys.stdin.read()
    for p in procs:
        p.kill()


def load_capture(name: str) -> None:
    """20 matched processes whose name comes from a 120 KB regex capture."""
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", name, "B" * (120 * 1024) + str(i)])
             for i in range(20)]
    print("ready", flush=True)
    sys.stdin.read()
    for p in procs:
        p.kill()


def load_auth_flood(port: int) -> None:
    """40 threads sending a wrong password for the known user, as fast as answered."""
    bad = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/metrics", headers={"Authorization": bad})
                c.getresponse().read()
                c.close()
            except (OSError, http.client.HTTPException):
                time.sleep(0.01)

    for _ in range(40):
        threading.Thread(target=flood, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    stop.set()


# -- one exporter under one load ---------------------------------------------------------------


def scrape(port: int, auth: str | None) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics", headers={"Authorization": auth} if auth else {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status == 200 and b"damon_exporter_build_info" in body
    except (OSError, http.client.HTTPException):
        return False


def config_for(load: str, child: str, capture_name: str) -> str:
    text = ("backend: clear_refs\nmonitoring:\n  sample_interval: 500ms\n  aggregation_interval: 2s\n  update_interval: 2s\n"
            f"targets:\n  - name: bench\n    match:\n      comm: [{child}]\n")
    if load == "cmdlines":  # a target that matches on command lines: every scan reads them
        text += "  - name: by-cmdline\n    match:\n      cmdline: ['no-such-program --flag']\n"
    if load == "mappings":
        text += "  - name: maps\n    match:\n      cmdline: ['hostile_loads.py --load mappings']\n"
    if load == "capture":
        text += (f"  - name: '{{{{.Matches.x}}}}'\n    match:\n      cmdline: ['{capture_name} (?P<x>B+)']\n")
    return text


def run(name: str, cwd: Path, load: str, args: argparse.Namespace, work: Path, child: str) -> dict:
    port = free_port()
    slug = "".join(ch if ch.isalnum() else "_" for ch in f"{name}-{load}")
    capture_name = f"dxcap{os.getpid() % 100000}"
    cfg = work / f"{slug}.yaml"
    cfg.write_text(config_for(load, child, capture_name))
    flags = ["--config.file", str(cfg), "--web.listen-address", f"127.0.0.1:{port}"]
    auth = None
    if load == "auth flood":
        import bcrypt

        web = work / f"{slug}-web.yml"
        web.write_text(f"basic_auth_users:\n  {USER}: {bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()}\n")
        flags += ["--web.config.file", str(web)]
        auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    log = open(work / f"{slug}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", *flags], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    loader = None
    out: dict = {"exporter": name, "load": load}
    try:
        deadline = time.monotonic() + 60
        while not scrape(port, auth):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{name}/{load}: exporter not ready:\n" + (work / f"{slug}.log").read_text()[-2000:])
            time.sleep(0.3)
        out["rss_idle"] = proc_rss(proc.pid)
        if load != "none":
            argv = [sys.executable, __file__, "--load", load]
            argv += [str(port)] if load == "auth flood" else [capture_name] if load == "capture" else []
            loader = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert loader.stdout.readline().strip() == "ready", f"load {load} failed to start"
        lat: list[float] = []
        fails = 0
        peak = 0
        end = time.monotonic() + args.seconds
        next_sample = 0.0
        while time.monotonic() < end:
            t = time.monotonic()
            if proc.poll() is not None:
                fails += 1
                break
            ok = scrape(port, auth)
            took = time.monotonic() - t
            lat.append(took) if ok else None
            fails += 0 if ok else 1
            if t >= next_sample:
                peak = max(peak, proc_rss(proc.pid))
                next_sample = t + 1.0
            time.sleep(max(0.0, args.interval - took))
        out.update(ok=len(lat), fails=fails, p50=percentile(lat, 50), p99=percentile(lat, 99), rss_peak=peak,
                   alive=proc.poll() is None)
        return out
    finally:
        if loader is not None:
            loader.stdin.close()
            try:
                loader.wait(30)
            except subprocess.TimeoutExpired:
                loader.kill()
        stop_process(proc)
        log.close()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--load":
        load = sys.argv[2]
        if load == "mappings":
            load_mappings()
        elif load == "cmdlines":
            load_cmdlines()
        elif load == "capture":
            load_capture(sys.argv[3])
        elif load == "auth flood":
            load_auth_flood(int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the scraper runs under each load (default 20)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between scrapes (default 0.5)")
    ap.add_argument("--loads", nargs="+", default=list(LOADS), choices=LOADS)
    ap.add_argument("--baseline-ref", default=DEFAULT_BASELINE, help=f"git ref of the 'before' exporter (default {DEFAULT_BASELINE})")
    ap.add_argument("--no-baseline", action="store_true", help="only this work tree")
    args = ap.parse_args()
    child = start_child(f"dxhl{os.getpid() % 10000}", hot_mib=8, cold_mib=24)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="hostile-loads-") as tmp:
            work = Path(tmp)
            variants = [("after", ROOT)]
            if not args.no_baseline:
                before = work / "before"
                before.mkdir()
                archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref], check=True, capture_output=True).stdout
                subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
                variants.insert(0, ("before", before))
            for load in args.loads:
                for name, cwd in variants:
                    print(f"running {name} / {load} ({args.seconds:g} s)...", file=sys.stderr, flush=True)
                    rows.append(run(name, cwd, load, args, work, child.name))
    finally:
        child.stop()
    print(f"\nOne scraper every {args.interval:g} s for {args.seconds:g} s under each load; baseline {args.baseline_ref}\n")
    print("| load | exporter | scrapes ok / failed | p50 ms | p99 ms | RSS idle MB | RSS peak MB | alive after |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']} | {r['exporter']} | {r['ok']} / {r['fails']} | {r['p50'] * 1000:.1f} | {r['p99'] * 1000:.1f} "
              f"| {r['rss_idle'] / MiB:.1f} | {r['rss_peak'] / MiB:.1f} | {'yes' if r['alive'] else 'no'} |")


if __name__ == "__main__":
    main()
