"""The clear_refs engine on a real process, driven as the sampler drives it, on a virtual clock.

The process (``tests/workloads/touch.c``) writes the pages it is told to, one line of
ranges per sample interval, so a caller decides what is accessed when and knows the truth
exactly; the engine reads the kernel's real ``Referenced`` bits through ``smaps`` and clears
them through ``clear_refs``. Only time is virtual, so minutes of it take seconds. The
promotion test on this host and the promotion bench both drive it this way.
"""

from __future__ import annotations

import subprocess
from typing import Callable

from exporter.engines.clear_refs.engine import ReferencedBytesEngine
from exporter.engines.page_idle.ops_simulated import VirtualClock
from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.model.process import ProcessRef
from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import check_same_process
from exporter.summary import Policy, summarize
from exporter.summary.promotion import Promotions, PromotionTracker

KiB = 1 << 10
#: what the caller wants written in one sample interval, from its virtual time since the
#: start: [a, b) byte offsets into the process' buffer
Schedule = Callable[[float], list[tuple[int, int]]]


class TouchProcess:
    """A running ``touch.c`` with a buffer of ``size_mib``; closed with :meth:`close`."""

    def __init__(self, binary: str, size_mib: int) -> None:
        self.proc = subprocess.Popen([binary, str(size_mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            self.close()
            raise RuntimeError(f"touch workload failed: exit {self.proc.poll()}")
        self.ref = ProcessRef(self.proc.pid, check_same_process(PosixIO(), "/proc", ProcessRef(self.proc.pid), "").start_time)

    def write(self, ranges: list[tuple[int, int]]) -> None:
        """Write one byte in every page of each [a, b); return once it has."""
        self.proc.stdin.write(" ".join(f"{a // KiB} {b // KiB}" for a, b in ranges) + "\n")
        self.proc.stdin.flush()
        if not self.proc.stdout.readline().startswith("ok "):
            raise RuntimeError(f"touch workload stopped: exit {self.proc.poll()}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def drive(t: TouchProcess, attrs: MonitoringAttrs, window: float, cold_age: float, schedule: Schedule,
          seconds: float) -> list[tuple[float, Promotions]]:
    """The engine and the promotion tracker for ``seconds`` of virtual time; each sample
    interval's writes are made before the engine's read that ends it. The promotions after
    every aggregation, with its virtual time since the start."""
    clk = VirtualClock()
    eng = ReferencedBytesEngine(attrs=attrs, clock=clk, wall_clock=clk, sleep=clk.sleep)
    eng.set_horizons((window, cold_age), returns_after=cold_age)
    eng.set_targets([TargetSpec("touched", (t.ref,))])
    policy, tracker = Policy(cold_age=cold_age, working_set_window=window), PromotionTracker()
    start, out = clk(), []
    try:
        while clk() - start < seconds:
            t.write(schedule(clk() - start))
            agg = eng.step()
            if agg is not None:
                out.append((clk() - start, summarize(agg, policy, tracker).target("touched").promotions))
    finally:
        eng.close()
    return out
