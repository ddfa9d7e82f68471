"""The host half of "auto picks page_idle in the guest and clear_refs on the host".

Runs on the host (no VM): this machine's kernel, like stock distribution kernels, has no
idle page tracking, so ``auto`` must fall back to clear_refs and say why. The guest half is
test_vm_page_idle.py::test_auto_picks_page_idle_in_the_guest.
"""

from __future__ import annotations

import os

import pytest

from exporter.model.errors import BackendUnavailable
from exporter.engines.registry import create_engine

BITMAP = "/sys/kernel/mm/page_idle/bitmap"

pytestmark = pytest.mark.skipif(
    os.path.exists(BITMAP), reason=f"this host has {BITMAP}; the fallback cannot be shown here"
)


def test_auto_picks_clear_refs_without_page_idle() -> None:
    ops = create_engine("auto")
    try:
        assert ops.name == "clear_refs"
        # kernel DAMON is refused first (missing, or a kdamond of the machine's own)
        assert ops.selection_reason.startswith("damon_sysfs unavailable: ")
        assert ops.selection_reason.endswith(
            f"; page_idle unavailable: {BITMAP} does not exist (kernel built without "
            "CONFIG_IDLE_PAGE_TRACKING); using clear_refs"
        )
    finally:
        ops.close()


def test_page_idle_requested_without_page_idle_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable) as e:
        create_engine("page_idle")
    assert str(e.value) == (
        f"page_idle unavailable: {BITMAP} does not exist (kernel built without CONFIG_IDLE_PAGE_TRACKING)"
    )
