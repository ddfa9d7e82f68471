"""A simulated address space with scripted access patterns — for tests and benchmarks only.

It lets the algorithm be checked against an exact ground truth (which bytes are hot, when)
without a kernel, and with a virtual clock so hours of monitoring take milliseconds. Never
selectable from the command line or the config: it reads no real memory.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from exporter.engines.page_idle.operations import CheckResult, Operations
from exporter.model.errors import ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.pagemap import Residency


@dataclass(frozen=True)
class HotRange:
    """Pages in ``[start, end)`` are accessed with ``probability`` in each sample interval,
    while ``active_from <= t < active_until`` (virtual seconds)."""

    start: int
    end: int
    probability: float = 1.0
    active_from: float = 0.0
    active_until: float = math.inf
    #: the share of the range's pages that are used at all, scattered over it (a heap's
    #: live objects): a fixed pseudo-random set of pages, the same for every check
    density: float = 1.0

    def uses(self, addr: int) -> bool:
        """Whether the page at ``addr`` is one of the range's used pages."""
        if self.density >= 1.0:
            return True
        return ((addr >> 12) * 2654435761 + 97) % (1 << 32) < self.density * (1 << 32)

    def used_bytes(self, start: int, end: int) -> int:
        """Bytes of the range's used pages in ``[start, end)``."""
        lo, hi = max(self.start, start), min(self.end, end)
        if hi <= lo:
            return 0
        if self.density >= 1.0:
            return hi - lo
        return sum(4096 for a in range(lo & ~4095, hi, 4096) if self.uses(a))


@dataclass
class SimulatedProcess:
    mappings: list[tuple[int, int]]
    hot: list[HotRange] = field(default_factory=list)
    #: resident ranges; None means every mapped page is resident
    resident: list[tuple[int, int]] | None = None
    exited: bool = False
    #: ranges whose pages ``mappers`` page tables map (fork's copy-on-write pages, shmem):
    #: (start, end, mappers); each page there counts 1/mappers, as PSS counts it
    shared: list[tuple[int, int, int]] = field(default_factory=list)

    def is_resident(self, addr: int) -> bool:
        ranges = self.resident if self.resident is not None else self.mappings
        i = bisect.bisect_right(ranges, (addr, math.inf)) - 1
        return i >= 0 and ranges[i][0] <= addr < ranges[i][1]

    def resident_in(self, start: int, end: int) -> int:
        ranges = self.resident if self.resident is not None else self.mappings
        total = 0
        for a, b in ranges:
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                total += hi - lo
        return total

    def residency_in(self, start: int, end: int) -> Residency:
        """Resident bytes by share, and the shared part of them (the engine's view)."""
        total = float(self.resident_in(start, end))
        shared = 0.0
        for a, b, n in self.shared:
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                here = self.resident_in(lo, hi)
                total -= here - here / n
                shared += here / n
        return Residency(int(round(total)), int(round(shared)))

    def hot_bytes(self, t: float, resident_only: bool = True) -> int:
        """Ground truth: bytes in ranges active at ``t`` (resident ones only by default;
        a range's used pages only, where it has a density)."""
        total = 0
        for h in self.hot:
            if h.active_from <= t < h.active_until:
                if not resident_only:
                    total += h.used_bytes(h.start, h.end)
                    continue
                ranges = self.resident if self.resident is not None else self.mappings
                total += sum(h.used_bytes(a, b) for a, b in ranges)
        return total

    def share_at(self, addr: int) -> float:
        """The page's share (1 / mappers), as PSS counts it."""
        for a, b, n in self.shared:
            if a <= addr < b:
                return 1.0 / n
        return 1.0


class SimulatedOps(Operations):
    name = "simulated"

    def __init__(
        self,
        processes: dict[int, SimulatedProcess],
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.processes = processes
        self.clock = clock
        self.rng = rng or random.Random(0)
        self._prepared_at: dict[int, float] = {}
        self.checks = 0

    def _proc(self, ref: ProcessRef) -> SimulatedProcess:
        p = self.processes.get(ref.pid)
        if p is None or p.exited:
            raise ProcessGone(f"process {ref.pid} exited")
        return p

    def mappings(self, ref: ProcessRef):
        return list(self._proc(ref).mappings)

    def prepare_access_checks(self, ref: ProcessRef, addrs: Sequence[int]) -> None:
        self._proc(ref)
        self._prepared_at[ref.pid] = self.clock()

    def check_accesses(self, ref: ProcessRef, addrs: Sequence[int]) -> list[CheckResult]:
        p = self._proc(ref)
        t0 = self._prepared_at.get(ref.pid, self.clock())
        t1 = self.clock()
        out: list[CheckResult] = []
        rand = self.rng.random
        for a in addrs:
            self.checks += 1
            if not p.is_resident(a):
                out.append(None)
                continue
            hit = False
            for h in p.hot:
                if h.start <= a < h.end and h.active_from <= t1 and t0 < h.active_until and h.uses(a):
                    if h.probability >= 1.0 or rand() < h.probability:
                        hit = True
                        break
            out.append(hit)
        return out

    # -- page windows: a used page of a range active at any time of the window is accessed
    # (not counted in ``checks``, the samples' access checks that tests price as CPU)

    page_windows = True
    draws_present = True

    def present_pages(self, ref: ProcessRef, start: int, end: int, n: int,
                      rng: random.Random) -> tuple[list[int], float] | None:
        p = self._proc(ref)
        ranges = p.resident if p.resident is not None else p.mappings
        parts = [(max(a, start), min(b, end)) for a, b in ranges if min(b, end) > max(a, start)]
        counts = [(hi - lo) // 4096 for lo, hi in parts]
        total = sum(counts)
        out = []
        for rank in sorted(rng.sample(range(total), min(n, total))):
            for (lo, _), c in zip(parts, counts):
                if rank < c:
                    out.append(lo + rank * 4096)
                    break
                rank -= c
        return out, float(total)

    def open_window(self, ref: ProcessRef, addrs: Sequence[int]) -> object:
        p = self._proc(ref)
        return (ref, tuple(addrs), self.clock(), tuple(p.is_resident(a) for a in addrs))

    def read_window(self, handle: object) -> list[tuple[CheckResult, float]]:
        ref, addrs, t0, was_resident = handle  # type: ignore[misc]
        p = self._proc(ref)
        t1 = self.clock()
        out: list[tuple[CheckResult, float]] = []
        for a, before in zip(addrs, was_resident):
            if not p.is_resident(a):
                out.append((None, 0.0))
                continue
            used = any(h.start <= a < h.end and h.active_from <= t1 and t0 < h.active_until and h.uses(a)
                       for q in self._mappers(p, a) for h in q.hot)
            out.append((used or not before, p.share_at(a)))
        return out

    def _mappers(self, p: SimulatedProcess, addr: int) -> list[SimulatedProcess]:
        """The processes mapping the page at ``addr`` of ``p``: a window reads the physical
        page, as page_idle does. Shared ranges at one address are one memory here (fork)."""
        if p.share_at(addr) >= 1.0:
            return [p]
        return [q for q in self.processes.values()
                if not q.exited and any(a <= addr < b for a, b, _ in q.shared)]

    def resident_bytes(self, ref: ProcessRef, ranges: Sequence[tuple[int, int]]) -> list[Residency]:
        p = self._proc(ref)
        return [p.residency_in(a, b) for a, b in ranges]

    def forget(self, ref: ProcessRef) -> None:
        self._prepared_at.pop(ref.pid, None)


class VirtualClock:
    """A clock whose ``sleep`` advances time instantly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
