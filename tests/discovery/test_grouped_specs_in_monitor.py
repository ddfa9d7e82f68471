"""group_by yields several specs with one name; the Monitor must keep them apart."""

from __future__ import annotations

import random

from exporter.core.attrs import MonitoringAttrs
from exporter.core.monitor import Monitor, TargetSpec
from exporter.ops.base import ProcessRef
from exporter.ops.simulated import SimulatedOps, SimulatedProcess, VirtualClock

MiB = 1 << 20
BASE = 0x7F0000000000


def test_groups_sharing_a_name_are_separate_targets():
    clk = VirtualClock()
    procs = {pid: SimulatedProcess(mappings=[(BASE, BASE + 8 * MiB)]) for pid in (1, 2, 3)}
    ops = SimulatedOps(procs, clk, random.Random(0))
    mon = Monitor(ops, MonitoringAttrs(0.1, 2.0, 10.0, 10, 200), rng=random.Random(1), clock=clk, wall_clock=clk, sleep=clk.sleep)
    g1 = TargetSpec("web", (ProcessRef(1),), (("pid", "1"),))
    g2 = TargetSpec("web", (ProcessRef(2), ProcessRef(3)), (("pid", "2"),))
    mon.set_targets([g1, g2])
    snap = None
    while snap is None:
        snap = mon.step()
    got = sorted((t.name, t.labels, tuple(sorted(t.pids))) for t in snap.targets)
    assert got == [("web", (("pid", "1"),), (1,)), ("web", (("pid", "2"),), (2, 3))]
    assert mon.target_names() == ["web"]
    assert set(mon.regions_of("web")) == {ProcessRef(1), ProcessRef(2), ProcessRef(3)}
    mon.set_target_max_regions("web", 20)  # the CPU budget works per name: all groups
    assert mon.max_regions_of("web") == 20
    # a group disappearing drops only its own processes
    mon.set_targets([g2])
    assert set(mon.regions_of("web")) == {ProcessRef(2), ProcessRef(3)}
