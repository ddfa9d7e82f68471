"""The physical reference and real programs, in one guest boot (tests/vm/real_checks.py).

The reference (tests/vm/physical_reference.py) judges the engines on real servers, so it is
checked first on processes whose touched set is known to the page: exact equality, no
tolerance (every page of the buffer is present and either written each pass or never).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from . import harness

MiB = 1 << 20
GUEST_TIMEOUT = 1500


@pytest.fixture(scope="session")
def real(vm_kernel: Path, workload_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    shared = tmp_path_factory.mktemp("vm-real")
    out = shared / "results.json"
    cmd = f"{sys.executable} -m tests.vm.real_checks --workload {workload_binary} --out {out}\n"
    run = harness.run_in_guest(cmd, kernel=vm_kernel, timeout=GUEST_TIMEOUT, shared_dir=shared)
    results = json.loads(out.read_text()) if out.exists() else {}
    return {"run": run, "results": results}


def _check(real: dict, name: str) -> dict:
    res = real["results"].get(name)
    assert res is not None, real["run"].describe()
    assert "error" not in res, res["error"]
    return res


def test_reference_exact_on_a_known_touched_set(real: dict) -> None:
    res = _check(real, "reference_exact")
    truth, buf = res["truth"], res["buffer"]
    assert buf["resident"] == truth["resident"], res
    assert buf["working_set"] == truth["working_set"], res
    assert buf["untracked"] == 0, res
    assert buf["resident_share"] == truth["resident"], res
    # the whole process holds the buffer and more (code, stack, libc), all of it judged
    whole = res["whole"]
    assert whole["resident"] >= truth["resident"] and whole["working_set"] >= truth["working_set"], res
    assert whole["working_set"] - truth["working_set"] < 8 * MiB, res


def test_reference_counts_shared_frames_once(real: dict) -> None:
    res = _check(real, "reference_readers")
    truth, buf = res["truth"], res["buffer"]
    assert res["processes"] == 4
    assert buf["resident"] == truth["resident"], res
    assert buf["working_set"] == truth["working_set"], res
    assert buf["resident_share"] == truth["resident"], res
