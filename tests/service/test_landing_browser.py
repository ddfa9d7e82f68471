"""The landing page of a running exporter (clear_refs on this host) as a browser renders it:
headless Chromium's DOM says "not known yet" for the cold figures before cold_age has passed,
then the figures with their error and their age, and the intervals beside the configured ones."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from html import unescape

import pytest

from tests.support.exporter import comm_target, fast_config, unique_comm

from .test_landing import rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
COLD_AGE = 8.0


def dom(port: int) -> str:
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "<table>" in r.stdout, r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_chromium_shows_not_known_yet_then_figures_with_error_and_age(exporter, children):
    c = children(unique_comm("lp"), hot_mib=8, cold_mib=24)
    e = exporter(fast_config(comm_target("svc", c.name), cold_age=f"{COLD_AGE:g}s", window="2s"))
    e.wait_ready()
    started = time.monotonic()
    early = dom(e.port)
    if time.monotonic() - started < COLD_AGE - 1:  # a CPU-starved browser start proves nothing here
        (row,) = [r for r in rows(early.encode()) if r[0] == "svc"]
        assert row[7:10] == ["not known yet"] * 3, row
    intervals = unescape(re.search(r'<li id="intervals">(.*?)</li>', early).group(1))
    assert re.fullmatch(r"Sample interval: \d+(\.\d)? m?s, aggregation interval: \d+(\.\d)? m?s"
                        r"( \(as configured\)|; configured 100 ms and 500 ms: stretched by the CPU budget of 50% "
                        r"of a core, \d+% of it in use)", intervals), intervals
    e.wait_for(lambda s: (s.get("damon_cold_bytes", target="svc") or 0) >= 0.9 * c.cold, timeout=COLD_AGE * 6,
               what="the child's cold memory")
    (row,) = [r for r in rows(dom(e.port).encode()) if r[0] == "svc"]
    ws, ws_age, cold, cold_age, ratio = row[5:10]
    assert re.fullmatch(r"\d+\.\d MiB( ± \d+\.\d MiB)?", ws) and re.fullmatch(r"\d+\.\d MiB( ± \d+\.\d MiB)?", cold), row
    assert float(cold.split()[0]) >= 0.9 * c.cold / 2**20, row
    for age in (ws_age, cold_age):
        assert re.fullmatch(r"now|\d+(\.\d)? (ms|s) ago", age), row
    assert re.fullmatch(r"\d+%", ratio) and "not known yet" not in row, row
