"""A real server's burst of load through the exporter service on this host (clear_refs).

Two identical Redis servers get the same keys (redis-benchmark SET), sit idle for three
windows, then take the same burst of random GETs for two windows. One is the exporter's
target (by its cgroup); the other is measured independently: its accessed bits cleared by
hand in the burst and its smaps read one window later give the bytes a server touches
within a window under that load. Issue 28: the published working set during the burst (from
one window plus one aggregation after its start) is at least half of that. Windows of 10 s
with 2 s aggregations keep CI time small (the logic is scale-free; the defaults are held on
an injected clock in tests/engines/test_clear_refs_curves.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.support.exporter import fast_config, free_port
from tests.support.wait import wait_for

MiB = 1 << 20
WINDOW, COLD, AGGR = 10.0, 20.0, 2.0
KEYS, VALUE = 200_000, 128

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None,
                                 reason="redis-server / redis-benchmark not installed (apt-get install redis-server)")


def redis(port: int) -> subprocess.Popen:
    p = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_for(up, 30, f"redis on port {port}")
    return p


def benchmark(port: int, test: str, requests: int) -> subprocess.Popen:
    return subprocess.Popen(["redis-benchmark", "-p", str(port), "-t", test, "-n", str(requests), "-r", str(KEYS),
                             "-d", str(VALUE), "-c", "8", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def referenced(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Referenced:"))


@pytest.mark.slow
@needs_redis
def test_a_redis_burst_shows_at_least_half_of_what_it_touches_within_a_window(exporter, cgroup2):
    ports = free_port(), free_port()
    servers = [redis(port) for port in ports]
    try:
        (cgroup2 / "cgroup.procs").write_text(str(servers[0].pid))
        for b in [benchmark(port, "set", 2 * KEYS) for port in ports]:
            assert b.wait(timeout=300) == 0
        e = exporter(fast_config(f"  - name: redis\n    cgroup: /{cgroup2.name}\n", cold_age=f"{COLD:g}s",
                                 window=f"{WINDOW:g}s", sample="500ms", aggregation=f"{AGGR:g}s", cpu_budget=0.5))
        e.wait_ready()
        time.sleep(3 * WINDOW)  # idle
        start = time.time()
        loads = [benchmark(port, "get", 100 * KEYS) for port in ports]
        time.sleep(WINDOW / 2)
        with open(f"/proc/{servers[1].pid}/clear_refs", "w") as f:  # the independent measurement
            f.write("1")
        seen = []
        measured = None
        while time.time() < start + 2 * WINDOW + AGGR:
            s = e.scrape()
            at = s.get("damon_target_last_aggregation_timestamp_seconds", target="redis")
            ws = s.get("damon_working_set_bytes", target="redis")
            if at and at >= start + WINDOW + AGGR:
                seen.append((at - start, ws))
            if measured is None and time.time() >= start + WINDOW / 2 + WINDOW:
                measured = referenced(servers[1].pid)
            time.sleep(1.0)
        assert all(b.poll() is None for b in loads), "the burst ended early: the window is not all load"
        for b in loads:
            b.kill()
            b.wait()
    finally:
        for p in servers:
            p.kill()
            p.wait()
    assert measured and seen
    print(f"touched within {WINDOW:g} s by the twin: {measured / MiB:.1f} MiB; published during the burst: "
          + ", ".join(f"{ws / MiB:.1f} MiB at {t:.0f} s" for t, ws in seen))
    assert all(ws >= measured / 2 for _, ws in seen), (measured / MiB, seen)
