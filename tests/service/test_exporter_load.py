"""Load and cost: many concurrent scrapers, and the CPU budget with many targets.

Neither asserts a speed or a CPU share (bench/exporter_bench.py measures those). The scrape
test asserts *no errors* and a flat RSS; the budget test asserts what the controller says
and does: its ratio back within the budget, by stretching time or capping regions.
"""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from tests.support.exporter import MiB, comm_target, fast_config, proc_rss, unique_comm


@pytest.mark.slow
def test_50_concurrent_scrapers_for_30s_no_errors_flat_rss(exporter, children):
    kids = [children(unique_comm(f"l{i}"), hot_mib=4, cold_mib=12, period=0.2) for i in range(5)]
    targets = "".join(comm_target(f"t{i}", k.name, {"team": f"x{i}"}) for i, k in enumerate(kids))
    # 50 scrapers means up to 50 requests in flight: above the default --web.max-requests
    # (40, node_exporter's), past which the answer is 503 by design
    e = exporter(fast_config(targets, cpu_budget=0.3), extra=["--web.max-requests", "50"])
    e.wait_ready()
    e.wait_for(lambda s: all(s.get("damon_target_up", target=f"t{i}") == 1 for i in range(5)), what="all targets up")

    stop = threading.Event()
    counts = {"ok": 0, "err": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def scraper() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=30)
        ok = err = 0
        while not stop.is_set():
            try:
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read()
                if r.status == 200 and b"damon_resident_bytes{" in body:
                    ok += 1
                else:
                    err += 1
                    errors.append(f"status {r.status}")
            except (OSError, http.client.HTTPException) as ex:
                err += 1
                errors.append(repr(ex))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=30)
        conn.close()
        with lock:
            counts["ok"] += ok
            counts["err"] += err

    threads = [threading.Thread(target=scraper) for _ in range(50)]
    for t in threads:
        t.start()
    time.sleep(5)  # warm-up: threads, buffers and caches reach their steady size
    rss_start = proc_rss(e.pid)
    time.sleep(25)
    rss_end = proc_rss(e.pid)
    stop.set()
    for t in threads:
        t.join(60)
    assert counts["err"] == 0, errors[:5]
    assert counts["ok"] > 200
    assert rss_end <= rss_start + 16 * MiB, (rss_start, rss_end)
    # still healthy and sampling afterwards
    s = e.scrape()
    assert s.get("damon_target_up", target="t0") == 1
    assert "Traceback" not in e.logs()


@pytest.mark.slow
def test_cpu_budget_holds_with_20_targets(exporter, children):
    budget = 0.05
    kids = [children(unique_comm(f"b{i}"), hot_mib=2, cold_mib=6, chunks=4, period=0.5) for i in range(20)]
    targets = "".join(comm_target(f"t{i}", k.name) for i, k in enumerate(kids))
    # a 30 s working-set window leaves the budget time to spend (up to 3 s samples); with
    # the 1 s window of the fast config it could not stretch at all (10 samples per window)
    e = exporter(fast_config(targets, cpu_budget=budget, window="30s", cold_age="60s"))
    e.wait_ready()

    # the controller acts after each 2-aggregation window; wait until it reports within budget
    s = e.wait_for(lambda s: (s.get("damon_sampler_budget_ratio") or 9) <= 1.0
                   and all(s.get("damon_target_processes", target=f"t{i}") == 1 for i in range(20)),
                   timeout=180, what="budget ratio <= 1")
    stretched = s.get("damon_sampler_sample_interval_seconds")
    # what it gave up to get there: time (a longer sample interval; clear_refs' regions are its
    # mappings, so the budget has no region cap to lower); the CPU the whole process uses
    # under this load is measured by bench/exporter_bench.py, not here
    assert stretched > 0.1
    assert all(s.get("damon_target_up", target=f"t{i}") == 1 for i in range(20))
    assert "over CPU budget" in e.logs()
