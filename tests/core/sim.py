"""Helpers to run the real Monitor on a simulated address space with a virtual clock."""

from __future__ import annotations

import random

from exporter.core.attrs import MonitoringAttrs
from exporter.core.monitor import Monitor, TargetSpec
from exporter.ops.base import ProcessRef
from exporter.ops.simulated import HotRange, SimulatedOps, SimulatedProcess, VirtualClock

MiB = 1 << 20
GiB = 1 << 30
BASE = 0x7F0000000000
TEXT = (0x400000, 0x600000)
STACK = (0x7FFFF0000000, 0x7FFFF0100000)


def process_with_buffer(size: int, hot: list[HotRange] | None = None, **kw) -> SimulatedProcess:
    """A typical layout: text, one big anonymous buffer at BASE, a stack."""
    return SimulatedProcess(mappings=[TEXT, (BASE, BASE + size), STACK], hot=hot or [], **kw)


def make_monitor(
    processes: dict[int, SimulatedProcess],
    attrs: MonitoringAttrs | None = None,
    seed: int = 0,
    targets: dict[str, list[int]] | None = None,
    adaptive: bool = True,
    **kw,
) -> tuple[Monitor, SimulatedOps, VirtualClock]:
    clk = VirtualClock()
    ops = SimulatedOps(processes, clk, random.Random(seed), adaptive=adaptive)
    mon = Monitor(
        ops,
        attrs or MonitoringAttrs(0.1, 2.0, 10.0, 10, 200),
        rng=random.Random(seed + 1000),
        clock=clk,
        wall_clock=clk,
        sleep=clk.sleep,
        **kw,
    )
    targets = targets or {"t": list(processes)}
    mon.set_targets(TargetSpec(name, tuple(ProcessRef(p) for p in pids)) for name, pids in targets.items())
    return mon, ops, clk


def aggregations(mon: Monitor, n: int):
    """Run until ``n`` more aggregations have happened; yield each snapshot."""
    done = 0
    while done < n:
        snap = mon.step()
        if snap is not None:
            done += 1
            yield snap
