"""Cold memory that comes back, through a running exporter on this host (clear_refs, real
processes): a workload keeps 64 MiB of 512 hot and, after 45 s, brings the cold rest back
8 MiB at a time for 4 s every 10 s, each chunk untouched since it was made resident. With
cold_age 20 s, every return is counted once (``damon_reaccess_idle_age_seconds_count`` grows
by the revived bytes, within 25%), nothing before the first return, and
``damon_cold_promoted_bytes_total`` grows by the revived bytes within 25% over two minutes,
its error bracketing the truth: clear_refs proves a return where a first touch comes at
least cold_age after a clear, and estimates those before at the rate proved."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from tests.support.exporter import comm_target, fast_config, unique_comm
from tests.support.workloads import build_workload

MiB = 1 << 20
REVIVE_AFTER, EVERY, FOR, CHUNK = 45.0, 10.0, 4.0, 8


@pytest.fixture
def reviver(tmp_path):
    name = unique_comm("rev")
    binary = build_workload("workload.c", tmp_path, name)
    proc = subprocess.Popen([binary, "--size", "512", "--hot", "64", "--revive", str(CHUNK), "--revive-after", str(REVIVE_AFTER),
                             "--revive-every", str(EVERY), "--revive-for", str(FOR), "--period-us", "20000"],
                            stdout=subprocess.PIPE, text=True)
    ready = proc.stdout.readline()
    assert ready.startswith("READY "), ready
    started = time.monotonic()
    revived: list[tuple[float, dict]] = []  # (monotonic time seen, the line)

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("REVIVED "):
                revived.append((time.monotonic(), json.loads(line.split(" ", 1)[1])))

    threading.Thread(target=read, daemon=True).start()
    yield name, revived, started
    proc.kill()
    proc.wait()


def promoted(s) -> float:
    return s.get("damon_cold_promoted_bytes_total", target="rev") or 0.0


def above(s, le: str) -> float:
    """Bytes that came back after more than ``le`` seconds of idleness."""
    count = s.get("damon_reaccess_idle_age_seconds_count", target="rev") or 0.0
    return count - (s.get("damon_reaccess_idle_age_seconds_bucket", target="rev", le=le) or 0.0)


@pytest.mark.slow  # minutes of wall time: returns every 10 s, judged over two minutes
def test_revived_cold_memory_is_counted_once_by_its_idle_age(exporter, reviver):
    name, revived, started = reviver
    e = exporter(fast_config(comm_target("rev", name), cold_age="20s", window="5s", sample="200ms", aggregation="1s"))
    e.wait_ready()
    e.wait_for(lambda s: s.get("damon_target_up", target="rev") == 1, timeout=60, what="the target up")
    # steady until the first return: hot stays hot, cold stays cold
    time.sleep(max(0.0, started + REVIVE_AFTER - 3 - time.monotonic()))
    s = e.scrape()
    assert not revived and promoted(s) <= 1 * MiB, f"{promoted(s) / MiB:.1f} MiB promoted before anything came back"
    while not revived:
        time.sleep(0.5)
    first = revived[0][0]
    # two minutes once returns have gone on for a clear period (40 to 60 s at cold_age 20 s),
    # from and to the middle of the gap between two returns: twelve returns, 96 MiB. (One
    # minute on its own read 0.62 to 1.12 of its truth over a 6-minute run: where a return
    # falls before cold_age after a clear, it is an estimate at the rate proved, and a
    # return counts whole or not at all in one minute.)
    time.sleep(max(0.0, first + 6 * EVERY + EVERY / 2 - time.monotonic()))
    s0 = e.scrape()
    time.sleep(12 * EVERY)
    s1 = e.scrape()
    truth = CHUNK * MiB * sum(1 for seen, _ in revived if first + 6 * EVERY + EVERY / 2 < seen < first + 18 * EVERY + EVERY / 2)
    assert truth == 12 * CHUNK * MiB, truth / MiB
    grew = promoted(s1) - promoted(s0)
    error = (s1.get("damon_cold_promoted_error_bytes_total", target="rev") or 0) - (s0.get("damon_cold_promoted_error_bytes_total", target="rev") or 0)
    returned = (s1.get("damon_reaccess_idle_age_seconds_count", target="rev") or 0) - (s0.get("damon_reaccess_idle_age_seconds_count", target="rev") or 0)
    detail = f"promoted +{grew / MiB:.1f} MiB (error +{error / MiB:.1f}), returns +{returned / MiB:.1f}, truth {truth / MiB:.0f} MiB"
    print(detail)  # for docs/accuracy.md: python3 -m pytest -s tests/service/test_promotion_e2e.py
    # every return is seen, once: clear_refs counts first touches exactly
    assert abs(returned - truth) <= 0.25 * truth, detail
    # returns past cold_age after a clear are proven; those before it are estimated at the
    # rate the periods proved them at, within the published error
    assert abs(grew - truth) <= 0.25 * truth, detail
    assert grew - error <= truth <= grew + error, detail
    # and the histogram agrees: what came back after more than 10 s holds the counter's
    assert grew - 4096 <= above(s1, "10.0") - above(s0, "10.0") <= returned + 4096, detail
