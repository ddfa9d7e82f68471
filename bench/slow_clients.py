"""Slow clients against the exporter: a legitimate scraper's latency and the exporter's
memory while thousands of connections trickle a request header line by line.

Issue 12 measured the old one-thread-per-connection server with 4,000 clients each sending
a header line every 10 s: 3,777 threads, 206 MB RSS, 166 MB kept after they left. This
bench runs that attack against two exporters in one run:

* **before**: the exporter as of ``--baseline-ref`` (default: the commit before the
  hardening work), extracted with ``git archive`` into a temp dir and run from there;
* **after**: the exporter in this work tree, with its default limits.

For each: start the exporter (one real target), measure idle RSS; open ``--connections``
slow connections from a separate attacker process (each sends a request line, then one
header line every ``--trickle`` seconds, and reconnects one second after the server drops
it); while they are held, one legitimate scraper (keep-alive, like Prometheus, with Go's
one retry when a reused connection turns out closed) scrapes ``/metrics`` every
``--interval`` for ``--seconds``; then the attacker closes everything and, ``--settle``
seconds later, RSS and threads are read again.

Prints a markdown table. ``python bench/slow_clients.py`` takes about 3 minutes;
``--connections 500 --seconds 10`` is a quick look. Needs git (for the baseline) and an
open-file limit above the connection count (raised to the hard limit here).
"""

from __future__ import annotations

import argparse
import errno
import http.client
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.exporter import comm_target, fast_config, free_port, proc_rss, start_child  # noqa: E402

#: the last commit before issue 12's hardening (thread-per-connection server)
DEFAULT_BASELINE = "77113e7"
MiB = 1 << 20


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the attacker (runs as a child process: python slow_clients.py --attack PORT N TRICKLE) --


def attack(port: int, n: int, trickle: float) -> None:
    """Hold ``n`` slow connections; print 'open K dropped D' once a second; stop on stdin EOF."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    conns: dict[socket.socket, float] = {}  # socket -> next header time
    pending_reconnect: list[float] = []
    dropped = 0
    line = 0

    def connect() -> None:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            pending_reconnect.append(time.monotonic() + 1.0)
            return
        conns[s] = time.monotonic() + 0.05  # the request line goes out right after connect
        sel.register(s, selectors.EVENT_READ, "conn")

    def drop(s: socket.socket) -> None:
        nonlocal dropped
        dropped += 1
        sel.unregister(s)
        del conns[s]
        s.close()
        pending_reconnect.append(time.monotonic() + 1.0)

    for i in range(n):
        connect()
        if i % 200 == 199:
            time.sleep(0.05)  # do not overrun the listen backlog
    started: set[socket.socket] = set()
    next_report = time.monotonic()
    while True:
        for key, _ in sel.select(timeout=0.1):
            if key.data == "stdin":
                if not sys.stdin.readline():
                    for s in list(conns):
                        s.close()
                    return
            else:
                s = key.fileobj
                try:
                    if not s.recv(4096):  # closed (or answered: either way, done with it)
                        drop(s)
                except OSError:
                    drop(s)
        now = time.monotonic()
        for s, due in list(conns.items()):
            if due <= now:
                try:
                    if s in started:
                        line += 1
                        s.send(f"X-Slow-{line}: 1\r\n".encode())
                    else:
                        s.send(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n")
                        started.add(s)
                    conns[s] = now + trickle
                except (BlockingIOError, InterruptedError):
                    conns[s] = now + 0.1
                except OSError as e:
                    if e.errno == errno.ENOTCONN and s not in started:  # connect still in progress
                        conns[s] = now + 0.1
                        continue
                    started.discard(s)
                    drop(s)
        while pending_reconnect and pending_reconnect[0] <= now and len(conns) < n:
            pending_reconnect.pop(0)
            connect()
        if now >= next_report:
            print(f"open {len(conns)} dropped {dropped}", flush=True)
            next_report = now + 1.0


# -- the bench ----------------------------------------------------------------------------


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def scrape_once(state: dict, port: int) -> bool:
    """One scrape on the kept-alive connection, retried once on a fresh one if the reused
    connection was closed (what Go's HTTP client, hence Prometheus, does)."""
    for attempt in (0, 1):
        if state.get("conn") is None:
            state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn = state["conn"]
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            body = r.read()
            return r.status == 200 and b"damon_exporter_build_info" in body
        except (OSError, http.client.HTTPException):
            conn.close()
            state["conn"] = None
            if attempt:
                return False
    return False


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_variant(name: str, cwd: Path, flags: list[str], args: argparse.Namespace, workdir: Path, child_name: str) -> dict:
    port = free_port()
    slug = "".join(ch if ch.isalnum() else "_" for ch in name)
    cfg = workdir / f"{slug}.yaml"
    cfg.write_text(fast_config(comm_target("bench", child_name), sample="500ms", aggregation="2s", update="5s"))
    log = open(workdir / f"{slug}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--config", str(cfg), "--web.listen-address", f"127.0.0.1:{port}", *flags],
                            cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    out: dict = {"variant": name}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/-/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{name}: exporter not ready:\n" + (workdir / f"{slug}.log").read_text())
            time.sleep(0.2)
        time.sleep(2)
        out["rss_idle"] = proc_rss(proc.pid)
        out["threads_idle"] = threads(proc.pid)
        attacker = subprocess.Popen([sys.executable, __file__, "--attack", str(port), str(args.connections), str(args.trickle)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # wait until the attacker holds (nearly) all its connections, at most 30 s
        t0 = time.monotonic()
        held = 0
        while time.monotonic() - t0 < 30:
            report = attacker.stdout.readline().split()
            if report and report[0] == "open":
                held = int(report[1])
                if held >= args.connections * 0.98:
                    break
        state: dict = {}
        lat: list[float] = []
        fails = 0
        rss_peak = thr_peak = 0
        end = time.monotonic() + args.seconds
        next_sample = 0.0
        while time.monotonic() < end:
            t = time.monotonic()
            ok = scrape_once(state, port)
            took = time.monotonic() - t
            if ok:
                lat.append(took)
            else:
                fails += 1
            if t >= next_sample:
                rss_peak = max(rss_peak, proc_rss(proc.pid))
                thr_peak = max(thr_peak, threads(proc.pid))
                next_sample = t + 1.0
            time.sleep(max(0.0, args.interval - took))
        if state.get("conn") is not None:
            state["conn"].close()
        attacker.stdin.close()  # EOF: the attacker closes all its sockets and exits
        last = ""
        for line in attacker.stdout:
            last = line or last
        attacker.wait(30)
        dropped = int(last.split()[3]) if last.startswith("open") else -1
        time.sleep(args.settle)
        out.update(
            held=held, dropped=dropped, ok=len(lat), fails=fails,
            p50=percentile(lat, 50), p99=percentile(lat, 99), max=max(lat) if lat else float("nan"),
            rss_peak=rss_peak, threads_peak=thr_peak,
            rss_after=proc_rss(proc.pid), threads_after=threads(proc.pid),
        )
        return out
    finally:
        stop_process(proc)
        log.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--attack":
        attack(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=4000)
    ap.add_argument("--trickle", type=float, default=10.0, help="seconds between a slow client's header lines (default 10)")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the scraper runs under attack (default 30)")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between scrapes (default 0.1)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after the attack before the last RSS reading (default 10)")
    ap.add_argument("--also-max-connections", type=int, action="append", default=[], metavar="N",
                    help="one more 'after' row with --web.max-connections N (repeatable)")
    ap.add_argument("--baseline-ref", default=DEFAULT_BASELINE, help=f"git ref of the 'before' exporter (default {DEFAULT_BASELINE})")
    args = ap.parse_args()
    nofile = raise_nofile()
    if nofile < args.connections + 100:
        raise SystemExit(f"open-file limit {nofile} is too low for {args.connections} connections")
    child = start_child("dxslowbench", hot_mib=8, cold_mib=24)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp:
            work = Path(tmp)
            before = work / "before"
            before.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            variants = [("before", before, []), ("after", ROOT, [])]
            for n in args.also_max_connections:
                variants.append((f"after, --web.max-connections {n}", ROOT, ["--web.max-connections", str(n)]))
            for name, cwd, flags in variants:
                print(f"running {name} ({args.connections} slow connections, {args.seconds:g} s)...", file=sys.stderr, flush=True)
                rows.append(run_variant(name, cwd, flags, args, work, child.name))
    finally:
        child.stop()
    print(f"\n{args.connections} slow clients (one header line every {args.trickle:g} s, reconnecting 1 s after a drop); "
          f"one keep-alive scraper every {args.interval:g} s for {args.seconds:g} s; baseline {args.baseline_ref}\n")
    print(f"| exporter | slow conns held | drops by server | scrapes ok / failed | p50 ms | p99 ms | max ms | RSS idle MB | RSS peak MB | RSS {args.settle:g} s after MB | threads peak | threads after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['held']} | {r['dropped']} | {r['ok']} / {r['fails']} | {r['p50'] * 1000:.1f} | {r['p99'] * 1000:.1f} | {r['max'] * 1000:.1f} "
              f"| {r['rss_idle'] / MiB:.1f} | {r['rss_peak'] / MiB:.1f} | {r['rss_after'] / MiB:.1f} | {r['threads_peak']} | {r['threads_after']} |")


if __name__ == "__main__":
    main()
