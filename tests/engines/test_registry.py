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


# -- auto falls back on any error of the kernel DAMON engine ---------------------------------

import errno as _errno  # noqa: E402
import dataclasses  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from exporter.engines import registry  # noqa: E402
from exporter.engines.damon_sysfs.engine import DamonSysfsEngine  # noqa: E402
from exporter.engines.damon_sysfs.ownership import available as damon_available  # noqa: E402
from exporter.engines.damon_sysfs.tree import RealDamonRefused, SysfsError  # noqa: E402

from tests.engines.fake_damon import FakeDamon  # noqa: E402

RELEASE = "6.12.117"


class BrokenDamon(FakeDamon):
    """A fake kernel DAMON that fails one way: a write to a file (or state command) that
    matches ``when`` raises ``error``; ``nr_value`` replaces what nr_kdamonds reads after
    the availability check (a garbled file)."""

    def __init__(self, tmp: Path, when: str, error: Exception) -> None:
        super().__init__(tmp)
        self.when, self.error = when, error

    def write(self, path: str, value: object) -> None:
        if self.when in (Path(path).name, str(value).strip()):
            raise self.error
        super().write(path, value)


def _sysfs_error(code: int) -> SysfsError:
    return SysfsError(f"writing to the tree: {os.strerror(code)}", code)


# every way the tree reports trouble: each errno a sysfs write can return, the write guard,
# a file the engine cannot parse, and a bug-like exception
TREE_ERRORS = {
    **{f"nr_kdamonds-{_errno.errorcode[c]}": ("nr_kdamonds", _sysfs_error(c)) for c in (_errno.EBUSY, _errno.EINVAL, _errno.EACCES, _errno.EPERM, _errno.ENOENT, _errno.ENOMEM, _errno.EIO)},
    **{f"nr_contexts-{_errno.errorcode[c]}": ("nr_contexts", _sysfs_error(c)) for c in (_errno.EINVAL, _errno.ENOMEM)},
    "operations-EINVAL": ("operations", _sysfs_error(_errno.EINVAL)),
    "nr_schemes-ENOMEM": ("nr_schemes", _sysfs_error(_errno.ENOMEM)),
    "real-tree-guard": ("nr_kdamonds", RealDamonRefused("refusing to write the real /sys/kernel/mm/damon outside the test VM")),
    "garbled-value": ("nr_kdamonds", ValueError("invalid literal for int() with base 10: 'x'")),
    "oserror": ("nr_contexts", OSError(_errno.EIO, "Input/output error")),
}


def _patched_damon(monkeypatch, fake: FakeDamon, state_dir: Path) -> None:
    b = registry.REGISTRY["damon_sysfs"]
    monkeypatch.setitem(registry.REGISTRY, "damon_sysfs", dataclasses.replace(
        b,
        available=lambda proc_root, sys_root: damon_available(sys_root=str(fake.sys_root), io=fake, state_dir=str(state_dir), release=RELEASE),
        create=lambda proc_root, sys_root: DamonSysfsEngine(sys_root=str(fake.sys_root), io=fake, state_dir=str(state_dir), release=RELEASE),
    ))


@pytest.mark.parametrize("case", sorted(TREE_ERRORS))
def test_auto_falls_back_when_building_the_kernel_damon_engine_fails(case, tmp_path, monkeypatch, caplog):
    when, error = TREE_ERRORS[case]
    fake = BrokenDamon(tmp_path, when, error)
    _patched_damon(monkeypatch, fake, tmp_path / "run")
    no_page_idle = tmp_path / "sys-without-page-idle"
    no_page_idle.mkdir()
    with caplog.at_level(logging.INFO, logger="exporter.engines.registry"):
        engine = create_engine("auto", sys_root=str(no_page_idle))
    try:
        assert engine.name == "clear_refs"
        assert engine.selection_reason.startswith("damon_sysfs unavailable: ")
        assert str(error) in engine.selection_reason
        assert engine.selection_reason.endswith("; using clear_refs")
        assert any(r.message == "access-check backend refused; trying the next" for r in caplog.records)
    finally:
        engine.close()
    # nothing of ours is left in the tree
    assert fake.read_value("admin/kdamonds/nr_kdamonds") == "0"
    assert not (tmp_path / "run" / "damon_sysfs.json").exists()


def test_auto_falls_back_when_the_kernel_damon_engine_fails_its_first_steps(tmp_path, monkeypatch):
    """The kernel takes the skeleton but refuses the first real configuration (here:
    turning the kdamond on): under auto the sampler moves on to the next backend at once
    and says why; the kdamond is given back."""
    from exporter.config.parser import parse_config
    from exporter.model.engine import TargetSpec
    from exporter.model.process import ProcessRef
    from exporter.procfs.io import PosixIO
    from exporter.procfs.parsers import read_stat
    from exporter.service.sampler import Sampler
    from exporter.service.state import ServiceState, StateBox

    fake = BrokenDamon(tmp_path, "on", _sysfs_error(_errno.EINVAL))
    _patched_damon(monkeypatch, fake, tmp_path / "run")
    no_page_idle = tmp_path / "sys-without-page-idle"
    no_page_idle.mkdir()
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        ref = ProcessRef(sleeper.pid, read_stat(PosixIO(), "/proc", sleeper.pid, "").start_time)

        class OneTarget:
            warnings: list[str] = []

            def discover(self):
                return [TargetSpec("s", (ref,))]

            def label_names(self):
                return ()

        config = parse_config("backend: auto\nmonitoring:\n  sample_interval: 10ms\n  aggregation_interval: 100ms\n"
                              "  update_interval: 1s\ncold_age: 1s\nworking_set_window: 1s\n"
                              "targets:\n  - name: s\n    match:\n      comm: [sleep]\n")
        box = StateBox(ServiceState(version="t", backend="none"))
        stop = threading.Event()
        s = Sampler(config, box, stop, discoverer_factory=lambda cfg: OneTarget(),
                    engine_factory=lambda name, skip: create_engine(name, sys_root=str(no_page_idle), skip=skip))
        s.start()
        try:
            deadline = time.monotonic() + 30
            while not (box.get().backend == "clear_refs" and box.get().ready) and time.monotonic() < deadline:
                time.sleep(0.05)
            st = box.get()
            assert (st.backend, st.ready) == ("clear_refs", True), st
            assert st.backend_reason.startswith(
                "damon_sysfs failed: damon_sysfs unavailable: the kernel refused its first configuration: writing to the tree: Invalid argument; ")
            assert st.backend_reason.endswith("; using clear_refs")
            assert dict(st.errors_total)["backend_unavailable"] == 1
        finally:
            stop.set()
            s.join(10)
        assert "update_schemes_tried_regions" not in fake.commands  # it never ran
        assert fake.read_value("admin/kdamonds/nr_kdamonds") == "0"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_auto_says_which_backends_it_passed_over_and_why_in_one_word(tmp_path, monkeypatch):
    fake = BrokenDamon(tmp_path, "nr_kdamonds", _sysfs_error(_errno.EBUSY))
    _patched_damon(monkeypatch, fake, tmp_path / "run")
    no_page_idle = tmp_path / "sys-without-page-idle"
    no_page_idle.mkdir()
    engine = create_engine("auto", sys_root=str(no_page_idle), skip={})
    try:
        assert engine.passed_over == (("damon_sysfs", "refused"), ("page_idle", "unavailable"))
    finally:
        engine.close()
    engine = create_engine("auto", sys_root=str(no_page_idle), skip={"damon_sysfs": "it failed"})
    try:
        assert engine.passed_over == (("damon_sysfs", "failed"), ("page_idle", "unavailable"))
    finally:
        engine.close()
