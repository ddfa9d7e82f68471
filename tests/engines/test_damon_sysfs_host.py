"""No code path writes under this machine's real /sys/kernel/mm/damon.

A kdamond configured here belongs to the machine. Three layers keep it safe, each shown
here on the real tree: availability only reads, and refuses while nr_kdamonds is not 0;
the engine checks availability before its first write; and the one writer refuses any
real-tree path outside the test VM while the suite's guard variable is set (tests/conftest.py),
whatever a bug upstream of it does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.engines.damon_sysfs.engine import DamonSysfsEngine
from exporter.engines.damon_sysfs.ownership import available
from exporter.engines.damon_sysfs.tree import (
    NO_REAL_ENV,
    REAL_DAMON_ROOT,
    RealDamonRefused,
    SysfsIO,
    in_test_vm,
)
from exporter.engines.registry import create_engine
from exporter.model.errors import BackendUnavailable

NR = f"{REAL_DAMON_ROOT}/admin/kdamonds/nr_kdamonds"

pytestmark = pytest.mark.skipif(not os.path.exists(NR), reason=f"{NR} does not exist on this machine")


def snapshot_tree() -> dict[str, str]:
    """Every readable file of the real tree (reading is harmless)."""
    out = {}
    for d, _dirs, files in os.walk(REAL_DAMON_ROOT):
        for f in files:
            p = os.path.join(d, f)
            try:
                out[p] = Path(p).read_text()
            except OSError as e:
                out[p] = f"<{e.errno}>"
    return out


@pytest.fixture
def untouched():
    before = snapshot_tree()
    writes: list[str] = []
    real_write = SysfsIO.write

    def spy(self, path, value):
        writes.append(path)
        return real_write(self, path, value)

    SysfsIO.write = spy
    try:
        yield writes
    finally:
        SysfsIO.write = real_write
    assert snapshot_tree() == before


def test_the_guard_is_on_for_the_whole_suite():
    assert os.environ.get(NO_REAL_ENV) == "1"
    assert not in_test_vm()


def test_the_writer_refuses_the_real_tree(untouched):
    for path in (NR, f"{REAL_DAMON_ROOT}/admin/kdamonds/0/state", "/sys/kernel/mm/../mm/damon/admin/kdamonds/nr_kdamonds"):
        with pytest.raises(RealDamonRefused) as e:
            SysfsIO().write(path, 0)
        assert str(e.value) == (f"refusing to write {path}: {NO_REAL_ENV}=1 forbids writing the real DAMON "
                                "sysfs tree outside the test VM")


def test_availability_and_every_entry_point_refuse_here(untouched):
    if Path(NR).read_text().strip() == "0":
        pytest.skip("no kdamond configured on this machine")
    n = Path(NR).read_text().strip()
    ok, why = available()
    assert not ok
    assert why.startswith(f"{NR} is {n}: kernel DAMON is in use by someone else (")
    with pytest.raises(BackendUnavailable) as e:
        create_engine("damon_sysfs")
    assert str(e.value) == f"damon_sysfs unavailable: {why}"
    with pytest.raises(BackendUnavailable):
        DamonSysfsEngine()
    eng = create_engine("auto")
    try:
        assert eng.name != "damon_sysfs"
        assert eng.selection_reason.startswith(f"damon_sysfs unavailable: {why}; ")
    finally:
        eng.close()
    assert untouched == []  # not even an attempt reached the writer
