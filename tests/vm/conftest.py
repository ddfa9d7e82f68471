"""Fixtures for the VM tests: find the kernel and virtme-ng, or skip (fail under CI).

One guest boot per session (the ``checks`` fixture) runs every check of
tests/vm/guest_checks.py and returns structured results; the tests of test_vm_page_idle.py
and test_vm_damon_sysfs.py assert on them. Booting costs ~10 s under TCG, a check tens of
seconds, so one boot keeps the suite within its budget.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from . import harness


#: why the VM tests were skipped in this session (printed again, loudly, at the end)
_SKIPPED: list[str] = []


def _unavailable(reason: str) -> None:
    """Skip, except under CI: there a missing kernel or qemu must fail the run, so that CI
    can never pass without having run the VM tests."""
    if os.environ.get("CI"):
        pytest.fail(f"VM tests cannot run under CI: {reason}", pytrace=False)
    if reason not in _SKIPPED:
        _SKIPPED.append(reason)
    pytest.skip(f"VM TEST NOT RUN: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A skipped VM test checked nothing on a real kernel: say so where nobody misses it."""
    if not _SKIPPED:
        return
    tr = terminalreporter
    tr.section("VM TESTS SKIPPED: page_idle and kernel DAMON were NOT checked on a real kernel", sep="!", red=True, bold=True)
    for reason in _SKIPPED:
        tr.line(f"  reason: {reason}", red=True)
    tr.line(f"  to run them from any clone: {harness.KERNEL_ENV}=/path/to/bzImage python3 -m pytest tests/vm", bold=True)
    tr.line("  (scripts/build-test-kernel builds a kernel with page_idle and DAMON; docs/testing.md)")


@pytest.fixture(scope="session")
def vm_kernel() -> Path:
    """The test kernel, after checking that everything needed to boot it is here."""
    try:
        kernel = harness.find_kernel()
        harness.find_vng()
        harness.find_qemu()
        harness.kernel_release(kernel)
    except harness.VMUnavailable as e:
        _unavailable(str(e))
    return kernel


@pytest.fixture(scope="session")
def workload_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/workloads/workload.c compiled once per session, under the host's /tmp, which the
    guest sees through the shared root."""
    try:
        return harness.build_workload(tmp_path_factory.mktemp("workload"))
    except harness.VMUnavailable as e:
        _unavailable(str(e))
        raise  # unreachable: _unavailable skips or fails


GUEST_TIMEOUT = 1800  # seconds; a normal run takes ~5 minutes


@pytest.fixture(scope="session")
def checks(vm_kernel: Path, workload_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    shared = tmp_path_factory.mktemp("vm-checks")
    out = shared / "results.json"
    cmd = f"{sys.executable} -m tests.vm.guest_checks --workload {workload_binary} --out {out}\n"
    run = harness.run_in_guest(cmd, kernel=vm_kernel, timeout=GUEST_TIMEOUT, shared_dir=shared)
    results = json.loads(out.read_text()) if out.exists() else {}
    return {"run": run, "results": results}
