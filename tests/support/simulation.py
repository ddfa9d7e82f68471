"""Helpers to run the real Monitor on a simulated address space with a virtual clock.

:class:`SummarizingMonitor` is the real engine plus the summary layer, stepped the way the
sampler steps it, so that tests read working set and cold bytes off each aggregation."""

from __future__ import annotations

import random

from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.engines.page_idle.monitor import Monitor
from exporter.model.process import ProcessRef
from exporter.summary import Policy, Summary, summarize
from exporter.summary.promotion import PromotionTracker
from exporter.engines.page_idle.ops_simulated import HotRange, SimulatedOps, SimulatedProcess, VirtualClock

MiB = 1 << 20
GiB = 1 << 30
BASE = 0x7F0000000000
TEXT = (0x400000, 0x600000)
STACK = (0x7FFFF0000000, 0x7FFFF0100000)


def process_with_buffer(size: int, hot: list[HotRange] | None = None, **kw) -> SimulatedProcess:
    """A typical layout: text, one big anonymous buffer at BASE, a stack."""
    return SimulatedProcess(mappings=[TEXT, (BASE, BASE + size), STACK], hot=hot or [], **kw)


class SummarizingMonitor(Monitor):
    """The user-space engine whose ``step`` returns the summary of each aggregation."""

    def __init__(self, *args, cold_age: float = 120.0, working_set_window: float = 60.0, windows: bool = False,
                 **kw) -> None:
        """``windows``: page windows at the horizons the summary asks about, as the sampler
        sets them (the engine as a user runs it). Without, the working set and cold bytes
        are the regions' own: what the tests of DAMON's region algorithm judge (its
        histograms, its promotions, and kernel DAMON's figures rest on it)."""
        super().__init__(*args, **kw)
        self.policy = Policy(cold_age=cold_age, working_set_window=working_set_window)
        self.tracker = PromotionTracker()  # as the sampler keeps one
        if windows:
            self.set_horizons((working_set_window, cold_age), returns_after=cold_age)

    def step(self) -> Summary | None:  # type: ignore[override]
        agg = super().step()
        return None if agg is None else summarize(agg, self.policy, self.tracker)


def make_monitor(
    processes: dict[int, SimulatedProcess],
    attrs: MonitoringAttrs | None = None,
    seed: int = 0,
    targets: dict[str, list[int]] | None = None,
    **kw,
) -> tuple[SummarizingMonitor, SimulatedOps, VirtualClock]:
    clk = VirtualClock()
    ops = SimulatedOps(processes, clk, random.Random(seed))
    mon = SummarizingMonitor(
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


def aggregations(mon: SummarizingMonitor, n: int):
    """Run until ``n`` more aggregations have happened; yield each snapshot."""
    done = 0
    while done < n:
        snap = mon.step()
        if snap is not None:
            done += 1
            yield snap
