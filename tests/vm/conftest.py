"""Fixtures for the VM tests: find the kernel and virtme-ng, or skip (fail under CI).

A test module boots one guest (module-scoped fixture) that runs all of that module's checks
and returns structured results; the tests then assert on them. Booting costs ~10 s under
TCG, a check tens of seconds, so one boot per module keeps the suite within its budget.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import harness


def _unavailable(reason: str) -> None:
    """Skip, except under CI: there a missing kernel or qemu must fail the run, so that CI
    can never pass without having run the VM tests."""
    if os.environ.get("CI"):
        pytest.fail(f"VM tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


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
