"""Checks run inside the test VM against the physical reference (tests/vm/physical_reference.py).

Run as ``python -m tests.vm.real_checks --workload BIN --out FILE [CHECK ...]`` in the guest
(test_vm_real_programs.py boots once and runs them all). Like guest_checks.py, the guest
records measurements and the truth; the host-side tests judge. The reference and the engines
never run at the same time: each marks pages idle, and the other would read its marks.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from typing import Callable

from exporter.engines.page_idle.ops_page_idle import PageIdleOps
from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.model.policy import Policy
from tests.support.simulation import SummarizingMonitor
from tests.vm import physical_reference
from tests.vm.guest_checks import (
    WORKLOAD_CPU,
    SummarizingDamonSysfs,
    Workload,
    refs,
    require_test_guest,
    run_checks,
)
from tests.support.workloads import process_tree

MiB = 1 << 20


def _buffers(w: Workload) -> dict[int, list[tuple[int, int]]]:
    """Each ready process' buffer, as the reference's address ranges."""
    return {r["pid"]: [(r["addr"], r["addr"] + r["size"])] for r in w.ready}


def check_reference_exact(ctx: dict) -> dict:
    """The reference on a process with a known touched set: 64 MiB resident, 16 MiB of it
    written every pass (TLB flushed per pass), over its buffer and over the whole process."""
    w = Workload(ctx["binary"], "--size", "64", "--hot", "16", "--hot-offset", "24")
    try:
        r = w.ready[0]
        time.sleep(1.0)  # a few passes over the hot part
        buf = physical_reference.take(w.pids, 5.0, _buffers(w))
        whole = physical_reference.take(w.pids, 5.0)
    finally:
        w.stop()
    return {"truth": {"resident": r["size"], "working_set": r["hot_size"]},
            "buffer": buf.to_dict(), "whole": whole.to_dict()}


def check_reference_readers(ctx: dict) -> dict:
    """Frames counted once: a parent writes 32 MiB and forks 3 readers of its top 8 MiB."""
    w = Workload(ctx["binary"], "--size", "32", "--hot", "8", "--readers", "3", nready=4)
    try:
        time.sleep(1.0)
        ref = physical_reference.take(w.pids, 5.0, _buffers(w))
        parent = next(r for r in w.ready if r.get("readers"))
    finally:
        w.stop()
    return {"truth": {"resident": parent["size"], "working_set": parent["hot_size"]},
            "buffer": ref.to_dict(), "processes": len(w.pids)}


#: working_set_window and cold_age of the real-program checks: one reference window judges
#: both figures (cold = resident, judged, untouched within the window)
WINDOW = 20.0
#: summaries judged per engine, after a window and a scrape interval of warm-up
SCRAPES = 12
#: seconds between two recorded summaries (kernel DAMON aggregates every 100 ms)
SCRAPE_EVERY = 10.0


def _on_workload_cpu() -> None:
    os.sched_setaffinity(0, {WORKLOAD_CPU})


def _engines() -> dict[str, Callable[[], object]]:
    """Each engine at its defaults (what a user gets with no ``monitoring:`` section)."""
    from exporter.engines.registry import monitoring_attrs

    policy = Policy(cold_age=WINDOW, working_set_window=WINDOW)
    return {
        "page_idle": lambda: SummarizingMonitor(PageIdleOps(), MonitoringAttrs(), cold_age=WINDOW, working_set_window=WINDOW,
                                                windows=True),
        "damon_sysfs": lambda: SummarizingDamonSysfs(monitoring_attrs("damon_sysfs", MonitoringAttrs(), ()), policy),
    }


def _scrape(snap, name: str, t0: float) -> dict:
    """One summary as a scrape would show it."""
    t = snap.target(name)
    raw = next(r for r in snap.raw.targets if r.name == name)
    strata = [s for w in raw.windows if w.horizon == WINDOW for s in w.strata]
    return {"window_strata": len(strata), "window_pages": sum(s.pages for s in strata),
            "window_unknown": sum(s.resident_bytes for s in strata if not s.pages),
            "t": round(time.monotonic() - t0, 1), "resident": t.resident_bytes,
            "working_set": t.working_set_bytes, "working_set_error": t.working_set_error_bytes,
            "cold": t.cold_bytes, "cold_error": t.cold_error_bytes, "nr_regions": t.nr_regions,
            "errors": list(t.errors)}


def run_engine(make: Callable[[], object], pids: list[int], warmup: float, scrapes: int) -> list[dict]:
    """Monitor ``pids`` as one target; after ``warmup`` seconds, one summary per
    SCRAPE_EVERY seconds (the first aggregation at or after each), ``scrapes`` of them."""
    engine = make()
    engine.set_targets([TargetSpec("server", refs(pids))])
    out: list[dict] = []
    t0 = time.monotonic()
    next_at = t0 + warmup
    try:
        while len(out) < scrapes:
            snap = engine.step()
            if snap is not None and time.monotonic() >= next_at:
                out.append(_scrape(snap, "server", t0))
                next_at += SCRAPE_EVERY
    finally:
        engine.close()
    return out


#: damo's snapshots: one per aggregation of WINDOW seconds (the first is dropped). Under
#: emulation damo takes one about every third aggregation (~70 s each in a trial boot)
DAMO_SNAPSHOTS = 4
#: damo's command (pip installs it beside the interpreter; the guest shares this filesystem)
DAMO = os.path.join(os.path.dirname(sys.executable), "damo")


def run_damo(pids: list[int], snapshots: int = DAMO_SNAPSHOTS) -> dict:
    """The peer: damo (the kernel's own user-space tool, from PyPI) recording the same
    process with kernel DAMON at its own defaults (5 ms samples, 10-1000 regions) except an
    aggregation of WINDOW seconds, so that each snapshot's regions with any access are
    damo's working set over the same window the engines publish (``damo report wss``, one
    figure per snapshot). damo 2.5 takes one process: multi-process servers are not run."""
    import tempfile

    home = tempfile.mkdtemp(prefix="dxdamo")
    out = os.path.join(home, "damon.data")
    env = {**os.environ, "HOME": home}  # damo keeps a file in $HOME; the guest's root is read-only
    us = int(WINDOW * 1e6)
    # only the accesses (damo also profiles the CPU with perf by default), as snapshots of
    # the regions DAMON hands back at each aggregation (damo 2.5: one --target_pid)
    (pid,) = pids
    cmd = [DAMO, "record", "--target_pid", str(pid), "--no_profile", "--no_footprint", "--no_vmas",
           "--monitoring_intervals", "5000", str(us), "1000000", "--snapshot", "0", str(snapshots),
           "--timeout", str(WINDOW * 5 * snapshots), "-o", out]
    t0 = time.monotonic()
    try:
        rec = subprocess.run(cmd, capture_output=True, text=True, timeout=WINDOW * 5 * snapshots + 120, env=env)
    except subprocess.TimeoutExpired as e:
        return {"error": f"damo record did not stop: {e.stdout!r} {e.stderr!r}"}
    took = time.monotonic() - t0
    if rec.returncode != 0 or not os.path.exists(out):
        return {"error": f"damo record exited {rec.returncode}: {(rec.stdout + rec.stderr)[-800:]}"}
    rep = subprocess.run([DAMO, "report", "wss", "-i", out, "--raw_number", "--all_wss", "--sortby", "time",
                          "--exclude_samples", "0"], capture_output=True, text=True, timeout=120, env=env)
    wss = [int(line.split()[-1]) for line in rep.stdout.splitlines() if line.strip() and not line.startswith("#")
           and line.split()[-1].isdigit()]
    if rep.returncode != 0 or len(wss) < 2:
        return {"error": f"damo report wss exited {rep.returncode}: {(rep.stdout + rep.stderr)[-800:]}"}
    # the first snapshot comes from DAMON's first regions, before any split: left out
    return {"seconds": round(took, 1), "working_set": wss[1:], "report": rep.stdout[-2000:]}


def judged(pids: list[int], phases: dict[str, Callable[[], object]], damo: bool = True) -> dict:
    """Reference, engine, reference, engine, reference (then damo, reference): never two
    at once."""
    refs_taken: list[dict] = []
    runs: dict[str, list[dict]] = {}
    refs_taken.append(physical_reference.take(pids, WINDOW).to_dict())
    for name, make in phases.items():
        runs[name] = run_engine(make, pids, WINDOW + SCRAPE_EVERY, SCRAPES)
        refs_taken.append(physical_reference.take(pids, WINDOW).to_dict())
    out = {"references": refs_taken, "engines": runs}
    if damo and len(pids) == 1:
        out["damo"] = run_damo(pids)
        out["damo_reference"] = physical_reference.take(pids, WINDOW).to_dict()
    return out


def _wait_line(proc: subprocess.Popen, prefix: bytes, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n")[:-1]:  # whole lines only: the last may be cut short
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
    raise RuntimeError(f"no {prefix!r} line within {timeout}s (got {buf[-500:]!r})")


def check_memcached(ctx: dict) -> dict:
    """memcached 1.6, 150k items of 1000 bytes stored in key order, 12% of the keys read
    pass after pass in random order (tests/vm/memcached_load.py): the hot items are
    scattered over every slab page."""
    port = 11311
    # without its LRU crawler, which walks every item now and then (seen touching 171 of
    # 175 MiB within one window): the truth stays the same from one window to the next
    server = subprocess.Popen(["memcached", "-u", "root", "-m", "300", "-p", str(port), "-U", "0", "-t", "1",
                               "-l", "127.0.0.1", "-o", "no_lru_crawler"], preexec_fn=_on_workload_cpu, start_new_session=True)
    load = None
    try:
        time.sleep(1.0)
        load = subprocess.Popen([sys.executable, "-m", "tests.vm.memcached_load", "--port", str(port), "--keys", "150000",
                                 "--hot", "0.12"], stdout=subprocess.PIPE, preexec_fn=_on_workload_cpu,
                                start_new_session=True)
        ready = _wait_line(load, b"READY ", 300)
        passes = _wait_line(load, b"PASS ", 120)
        time.sleep(5.0)
        res = judged([server.pid], _engines())
    finally:
        for p in (load, server):
            if p is not None:
                p.kill()
                p.wait()
    return {"load": ready, "first_pass": passes, **res}


PG_BIN = "/usr/lib/postgresql/15/bin"
#: pgbench_accounts rows per heap page at scale 5 (fillfactor 100) is ~61; blocks are put in
#: shared_buffers in shuffled chunks of this many, so that a key range lands scattered
PREWARM_CHUNK = 8


def check_postgres(ctx: dict) -> dict:
    """PostgreSQL 15, its 8+ processes as one target: shared_buffers 128MB holding
    pgbench_accounts at scale 5 (500k rows), its blocks placed in shuffled chunks of 8
    (pg_prewarm), 4 pgbench clients reading rows 1-50000 (a tenth of the table): the hot
    buffers are scattered over the shared memory every backend maps."""
    import random
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="dxpg")
    os.chmod(top, 0o755)
    data = os.path.join(top, "pgdata")
    os.mkdir(data)
    shutil.chown(data, "postgres", "postgres")
    run = ["runuser", "-u", "postgres", "--"]
    t0 = time.monotonic()
    subprocess.run(run + [f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "--no-sync"], check=True, capture_output=True)
    port = "5439"
    server = subprocess.Popen(run + [f"{PG_BIN}/postgres", "-D", data, "-p", port, "-k", data, "-c", "shared_buffers=128MB",
                                     "-c", "listen_addresses=", "-c", "fsync=off"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_on_workload_cpu)
    conn = ["-h", data, "-p", port]
    psql = run + [f"{PG_BIN}/psql", *conn, "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
    bench = None
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(psql + ["-c", "select 1"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("postgres did not start")
            time.sleep(0.5)
        subprocess.run(run + [f"{PG_BIN}/pgbench", *conn, "-i", "-s", "5", "-q", "postgres"], check=True, capture_output=True)
        blocks = int(subprocess.run(psql + ["-At", "-c", "select pg_relation_size('pgbench_accounts') / 8192"],
                                    check=True, capture_output=True, text=True).stdout)
        chunks = list(range(0, blocks, PREWARM_CHUNK))
        random.Random(1).shuffle(chunks)
        sql = "create extension pg_prewarm;\n" + "".join(
            f"select pg_prewarm('pgbench_accounts', 'buffer', 'main', {b}, {min(blocks, b + PREWARM_CHUNK) - 1});\n" for b in chunks)
        subprocess.run(psql, input=sql, check=True, capture_output=True, text=True)
        script = os.path.join(top, "hot.sql")
        with open(script, "w") as f:
            f.write("\\set aid random(1, 50000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")
        os.chmod(script, 0o644)
        bench = subprocess.Popen(run + [f"{PG_BIN}/pgbench", *conn, "-n", "-c", "4", "-j", "1", "-T", "3600", "-f", script,
                                        "postgres"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=_on_workload_cpu, start_new_session=True)
        setup = time.monotonic() - t0
        time.sleep(10.0)
        pids = process_tree(server.pid)
        pids = [p for p in pids if open(f"/proc/{p}/comm").read().strip() == "postgres"]
        if len(pids) < 5:
            raise RuntimeError(f"found {len(pids)} postgres processes, expected the postmaster and its helpers")
        res = judged(pids, _engines())
    finally:
        if bench is not None:
            os.killpg(bench.pid, 9)
            bench.wait()
        server.terminate()
        server.wait(60)
        shutil.rmtree(top, ignore_errors=True)
    return {"setup_seconds": round(setup, 1), "processes": len(pids), "table_blocks": blocks, **res}


CHECKS: dict[str, Callable[[dict], dict]] = {
    "reference_exact": check_reference_exact,
    "reference_readers": check_reference_readers,
    "memcached": check_memcached,
    "postgres": check_postgres,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("checks", nargs="*")
    args = ap.parse_args(argv)
    require_test_guest()
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        ap.error(f"unknown checks: {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    run_checks(CHECKS, args.checks or list(CHECKS), {"binary": args.workload}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
