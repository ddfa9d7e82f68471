"""The backend registry: names, auto fallback and its logged reason, explicit requests."""

from __future__ import annotations

import logging
import os

import pytest

from exporter.model.errors import BackendUnavailable
from exporter.engines.registry import BACKEND_NAMES, create_engine

from tests.ops.fakekernel import FakeKernel


def test_backend_names():
    assert BACKEND_NAMES == ("auto", "damon_sysfs", "page_idle", "clear_refs")


def test_unknown_backend_lists_the_allowed_ones():
    with pytest.raises(ValueError) as e:
        create_engine("damon")
    assert str(e.value) == "unknown backend 'damon'; expected one of: auto, damon_sysfs, page_idle, clear_refs"


def test_auto_falls_back_to_clear_refs_and_logs_why(tmp_path, caplog):
    sys_root = tmp_path / "sys"  # a kernel without CONFIG_IDLE_PAGE_TRACKING
    sys_root.mkdir()
    with caplog.at_level(logging.INFO, logger="exporter.engines.registry"):
        ops = create_engine("auto", sys_root=str(sys_root))
    assert ops.name == "clear_refs"
    reason = (
        f"damon_sysfs unavailable: {sys_root}/kernel/mm/damon/admin/kdamonds/nr_kdamonds does not exist "
        "(kernel built without CONFIG_DAMON_SYSFS); "
        f"page_idle unavailable: {sys_root}/kernel/mm/page_idle/bitmap does not exist "
        "(kernel built without CONFIG_IDLE_PAGE_TRACKING); using clear_refs"
    )
    assert ops.selection_reason == reason
    assert caplog.messages == [f"access-check backend: {reason}"]


def test_auto_on_this_host():
    """This host's kernel has no page_idle: auto must pick clear_refs and say so."""
    ops = create_engine("auto")
    if os.path.exists("/sys/kernel/mm/page_idle/bitmap") and os.geteuid() == 0:
        assert ops.name == "page_idle"
    else:
        assert ops.name == "clear_refs"
        # kernel DAMON here belongs to the machine (a kdamond is configured): refused first
        assert ops.selection_reason.startswith("damon_sysfs unavailable: ")
        assert "; page_idle unavailable: " in ops.selection_reason
        assert ops.selection_reason.endswith("; using clear_refs")
    ops.close()


def test_auto_prefers_page_idle_where_usable(tmp_path):
    k = FakeKernel(tmp_path)
    ops = create_engine("auto", proc_root=k.proc_root, sys_root=k.sys_root)
    assert ops.name == "page_idle"
    assert ops.selection_reason == (
        f"damon_sysfs unavailable: {k.sys_root}/kernel/mm/damon/admin/kdamonds/nr_kdamonds does not exist "
        "(kernel built without CONFIG_DAMON_SYSFS); using page_idle"
    )
    ops.close()


def test_explicit_page_idle_unavailable(tmp_path):
    k = FakeKernel(tmp_path, page_idle=False)
    with pytest.raises(BackendUnavailable) as e:
        create_engine("page_idle", proc_root=k.proc_root, sys_root=k.sys_root)
    assert str(e.value) == (
        f"page_idle unavailable: {k.sys_root}/kernel/mm/page_idle/bitmap does not exist "
        "(kernel built without CONFIG_IDLE_PAGE_TRACKING)"
    )
    k2 = FakeKernel(tmp_path / "nocap", cap_sys_admin=False)
    with pytest.raises(BackendUnavailable, match="page_idle unavailable: page_idle needs CAP_SYS_ADMIN to read PFNs"):
        create_engine("page_idle", proc_root=k2.proc_root, sys_root=k2.sys_root)


def test_explicit_clear_refs(tmp_path):
    ops = create_engine("clear_refs")
    assert ops.name == "clear_refs" and ops.selection_reason == "clear_refs requested"
    with pytest.raises(BackendUnavailable) as e:
        create_engine("clear_refs", proc_root=str(tmp_path))
    assert str(e.value) == (
        f"clear_refs unavailable: {tmp_path}/self/clear_refs does not exist "
        "(kernel built without CONFIG_PROC_PAGE_MONITOR)"
    )


def _config(monitoring: str):
    from exporter.config.parser import parse_config

    return parse_config(f"monitoring:\n{monitoring}targets:\n  - name: a\n    match:\n      comm: [x]\n")


def test_backend_defaults_fill_the_monitoring_keys_a_config_leaves_unset():
    from exporter.model.attrs import MonitoringAttrs
    from exporter.engines.registry import monitoring_attrs

    c = _config("  max_regions: 50\n")
    assert c.monitoring_keys == ("max_regions",)
    # kernel DAMON: the kernel's 5 ms sampling, 2 s aggregations (bench/README.md)
    assert monitoring_attrs("damon_sysfs", c.monitoring, c.monitoring_keys) == MonitoringAttrs(0.005, 2.0, 60.0, 10, 50)
    # the user-space backends keep the generic defaults
    assert monitoring_attrs("page_idle", c.monitoring, c.monitoring_keys) == MonitoringAttrs(0.5, 10.0, 60.0, 10, 50)
    # a kernel-class interval is accepted as such
    c = _config("  sample_interval: 5ms\n  aggregation_interval: 100ms\n")
    assert monitoring_attrs("damon_sysfs", c.monitoring, c.monitoring_keys) == MonitoringAttrs(0.005, 0.1, 60.0, 10, 100)
    # a set key that does not fit the backend's defaults: the generic defaults fill in
    c = _config("  sample_interval: 3s\n")
    assert monitoring_attrs("damon_sysfs", c.monitoring, c.monitoring_keys) == MonitoringAttrs(3.0, 10.0, 60.0, 10, 100)
