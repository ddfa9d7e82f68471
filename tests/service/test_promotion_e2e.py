"""Cold memory that comes back, through a running exporter on this host (clear_refs, real
processes): a workload keeps 64 MiB of 512 hot and, after 45 s, brings the cold rest back
8 MiB at a time for 4 s every 10 s, each chunk untouched since it was made resident. With
cold_age 20 s, every return is counted once (``damon_reaccess_idle_age_seconds_count`` grows
by the revived bytes, within 25%), nothing before the first return, and
``damon_cold_promoted_bytes_total`` with its error brackets the truth: clear_refs sees how
many bytes a mapping touched first, not which, so a chunk touched after an earlier one was
may be the earlier one again, and the counter takes the lower bound."""

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
    revived: list[tuple[float, dict]] = []  # (monotonic time seen, the line)

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("REVIVED "):
                revived.append((time.monotonic(), json.loads(line.split(" ", 1)[1])))

    threading.Thread(target=read, daemon=True).start()
    yield name, revived
    proc.kill()
    proc.wait()


def promoted(s) -> float:
    return s.get("damon_cold_promoted_bytes_total", target="rev") or 0.0


def above(s, le: str) -> float:
    """Bytes that came back after more than ``le`` seconds of idleness."""
    count = s.get("damon_reaccess_idle_age_seconds_count", target="rev") or 0.0
    return count - (s.get("damon_reaccess_idle_age_seconds_bucket", target="rev", le=le) or 0.0)


def test_revived_cold_memory_is_counted_once_by_its_idle_age(exporter, reviver):
    name, revived = reviver
    e = exporter(fast_config(comm_target("rev", name), cold_age="20s", window="5s", sample="200ms", aggregation="1s"))
    e.wait_ready()
    e.wait_for(lambda s: s.get("damon_target_up", target="rev") == 1, timeout=60, what="the target up")
    # steady until the first return: hot stays hot, cold stays cold
    while not revived:
        time.sleep(0.5)
    s0 = e.scrape()
    base, base_above = promoted(s0), above(s0, "10.0")
    assert base <= 1 * MiB, f"{base / MiB:.1f} MiB promoted before anything came back"
    started = time.monotonic()
    time.sleep(62)
    s1 = e.scrape()
    # the returns that began after the first scrape's and had a whole aggregation to be seen
    truth = CHUNK * MiB * sum(1 for seen, _ in revived if seen >= started - 1 and seen <= time.monotonic() - 2)
    truth += CHUNK * MiB  # the first one, seen just before s0
    grew = promoted(s1) - base
    error = (s1.get("damon_cold_promoted_error_bytes_total", target="rev") or 0) - (s0.get("damon_cold_promoted_error_bytes_total", target="rev") or 0)
    returned = (s1.get("damon_reaccess_idle_age_seconds_count", target="rev") or 0) - (s0.get("damon_reaccess_idle_age_seconds_count", target="rev") or 0)
    assert truth >= 6 * CHUNK * MiB
    detail = f"promoted +{grew / MiB:.1f} MiB (error +{error / MiB:.1f}), returns +{returned / MiB:.1f}, truth {truth / MiB:.0f} MiB"
    print(detail)  # for the README: python3 -m pytest -s tests/service/test_promotion_e2e.py
    # every return is seen, once: clear_refs counts first touches exactly
    assert abs(returned - truth) <= 0.25 * truth, detail
    # how long each had been idle is a lower bound: a chunk touched after the previous one was
    # may be the previous one touched again, as far as smaps can tell; the error says how much
    assert grew <= 1.25 * truth and grew + error >= 0.75 * truth, detail
    # and the histogram agrees: what came back after more than 10 s holds the counter's
    assert grew - 4096 <= above(s1, "10.0") - base_above <= returned + 4096, detail
