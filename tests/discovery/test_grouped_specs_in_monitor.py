"""group_by yields several specs with one name; the Monitor must keep them apart."""

from __future__ import annotations

import random

from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.engines.page_idle.monitor import Monitor
from exporter.model.process import ProcessRef
from exporter.engines.page_idle.ops_simulated import SimulatedOps, SimulatedProcess, VirtualClock

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
    assert set(mon.regions_of("web")) == {ProcessRef(1), ProcessRef(2), ProcessRef(3)}
    # the CPU budget caps each group on its own: one group's cap leaves the other's alone
    mon.set_region_cap(g1.key, 20)
    assert mon.region_cap(g1.key) == 20
    assert mon.region_cap(g2.key) == 200
    assert [mon.live_processes(g.key) for g in (g1, g2)] == [1, 2]
    # a group disappearing drops only its own processes
    mon.set_targets([g2])
    assert set(mon.regions_of("web")) == {ProcessRef(2), ProcessRef(3)}
