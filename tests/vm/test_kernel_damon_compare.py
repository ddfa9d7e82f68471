"""bench/kernel_damon_compare.py: refuses outside the VM; in the VM, kernel DAMON and ours
agree with the workload's truth."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from . import harness

SCRIPT = harness.REPO_ROOT / "bench" / "kernel_damon_compare.py"
MiB = 1 << 20


def test_in_guest_mode_refuses_on_the_host() -> None:
    if Path("/sys/kernel/mm/page_idle/bitmap").exists():
        pytest.skip("this host has page_idle; the refusal is shown on hosts without it")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--in-guest", "--workload", "/bin/true", "--json", "/dev/null"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("kernel_damon_compare: refusing to drive kernel DAMON outside the test VM (")
    assert "/sys/kernel/mm/page_idle/bitmap does not exist" in res.stderr


def test_bad_sizes_are_refused() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--size", "64", "--hot", "65"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().endswith("error: --hot (65) must be positive and at most --size (64)")


def _series(ws: int, cold: int) -> list[dict]:
    return [{"working_set": ws, "cold": cold}] * 3


def test_table_layout() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import kernel_damon_compare as kdc
    finally:
        sys.path.remove(str(SCRIPT.parent))
    res = {
        "release": "6.12.117",
        "attrs": {"sample": 0.1, "aggr": 1.0, "update": 2.0, "min_regions": 10, "max_regions": 200,
                  "cold_age": 4.0, "window": 4.0},
        "truth": {"working_set": 32 * MiB, "cold": 96 * MiB, "buffer": 128 * MiB, "thp": False},
        "seconds": 16,
        "kernel": {"series": _series(32 * MiB, 96 * MiB), "cpu_seconds": 0.25, "wall_seconds": 16.0},
        "ours": {"series": _series(36 * MiB, 90 * MiB), "cpu_seconds": 3.2, "wall_seconds": 16.0},
    }
    lines = kdc.table(res).splitlines()
    assert lines[2] == "| truth | 32.0 MiB | 96.0 MiB | | |"
    assert lines[3] == "| kernel DAMON (kdamond, vaddr) | 32.0 MiB (+0%) | 96.0 MiB (+0%) | 0.25 s | 1.6% |"
    assert lines[4] == "| damon-exporter (page_idle) | 36.0 MiB (+12%) | 90.0 MiB (-6%) | 3.20 s | 20.0% |"


@pytest.mark.vm
@pytest.mark.slow
def test_kernel_damon_and_ours_agree_in_the_vm(vm_kernel: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "20", "--json", str(out)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, harness.KERNEL_ENV: str(vm_kernel)},
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "| kernel DAMON (kdamond, vaddr) |" in res.stdout
    data = json.loads(out.read_text())
    truth = data["truth"]
    assert data["release"] == harness.kernel_release(vm_kernel)
    # the kernel's accuracy is not ours to guarantee (one boot in ~4 it stayed ~30% high
    # for the whole run): its bound only shows that its regions are read and weighed right
    for who, rel in (("ours", 0.10), ("kernel", 0.50)):
        series = data[who]["series"]
        assert len(series) >= 15, (who, len(series))
        ws = statistics.median(s["working_set"] for s in series[-5:])
        cold = statistics.median(s["cold"] for s in series[-5:])
        assert abs(ws - truth["working_set"]) <= rel * truth["working_set"], (who, [s["working_set"] >> 20 for s in series])
        assert abs(cold - truth["cold"]) <= rel * truth["cold"], (who, [s["cold"] >> 20 for s in series])
    assert data["ours"]["cpu_seconds"] > 0
