"""Windows of page checks: a few random pages per region marked idle together, read back
one horizon later.

DAMON's one sampled page per region and interval says whether *a* page of the region was
used; a region counts whole in the working set once any of its samples hits. That is right
where a region's pages are used alike, and wrong where the used pages are scattered over the
heap (slabs, hash tables, B-tree pages, garbage-collected heaps): every region then holds some
used pages, is hit, and counts whole. A window of page checks measures instead what share
of each region was used within the horizon: ``k`` pages drawn at random without replacement
from each region are marked idle at the start, and read once at the end (Gregg's working set
size estimation, sampled per region). The pages found accessed are a binomial draw of the
region's used share; :mod:`exporter.summary.page_checks` turns them into bytes and an error.

A new window starts for each horizon every ``horizon / IN_FLIGHT`` seconds (at least once per
aggregation interval), so that a figure is at most that old when published; each is read at
the first aggregation at least its horizon (less half an aggregation interval) after it was
marked. Cost per region and window: ``k`` pages marked and ``k`` read back, the same page
operations as ``k`` samples; per region and second, ``2 k IN_FLIGHT / horizon`` page
operations for each horizon.

The marks share the pages' Idle flags with the region's own samples: a sample drawn on a
page that a window of the same process holds is drawn again, so that its mark does not erase
the window's evidence. (Another process' sample on the same frame, or another page_idle
user, can still do so; that loses a hit, never invents one.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from exporter.engines.page_idle.operations import Operations
from exporter.engines.page_idle.regions import Region
from exporter.model.attrs import PAGE_SIZE
from exporter.model.process import ProcessRef
from exporter.model.records import PageCheck

#: pages checked per region and window (the binomial draw's n)
PAGES_PER_REGION = 16
#: windows of one horizon under way at once (a figure is at most horizon / IN_FLIGHT old)
IN_FLIGHT = 4


@dataclass
class _Window:
    horizon: float
    marked_at: float  # monitor clock
    strata: list[tuple[int, int, int]]  # (start, end, pages drawn) per region at the mark
    token: object
    addrs: frozenset[int]


@dataclass
class PageWindows:
    """One process' windows under way and the last one completed per horizon."""

    pages: int = PAGES_PER_REGION
    windows: list[_Window] = field(default_factory=list)
    done: dict[float, tuple[PageCheck, ...]] = field(default_factory=dict)
    _last_mark: dict[float, float] = field(default_factory=dict)

    def holds(self, addr: int) -> bool:
        """Whether a window under way holds the page at ``addr``."""
        return any(addr in w.addrs for w in self.windows)

    def step(self, ops: Operations, ref: ProcessRef, regions: Sequence[Region], horizons: Sequence[float],
             now: float, wall: float, aggregation_interval: float, rng: random.Random) -> None:
        """At an aggregation: read the windows due, start those due. Raises OpsError."""
        slack = aggregation_interval / 2
        due = [w for w in self.windows if now - w.marked_at >= w.horizon - slack]
        for w in due:
            self.windows.remove(w)
            self.done[w.horizon] = _read(ops, ref, w, now, wall)
        for h in horizons:
            last = self._last_mark.get(h)
            if last is not None and now - last < max(aggregation_interval, h / IN_FLIGHT) - slack:
                continue
            w = _mark(ops, ref, regions, self.pages, h, now, rng)
            if w is None:
                return  # the backend has no page checks
            self.windows.append(w)
            self._last_mark[h] = now

    def checks(self, horizons: Sequence[float]) -> tuple[PageCheck, ...]:
        return tuple(c for h in horizons for c in self.done.get(h, ()))


def _mark(ops: Operations, ref: ProcessRef, regions: Sequence[Region], k: int, horizon: float, now: float,
          rng: random.Random) -> _Window | None:
    addrs: list[int] = []
    strata = []
    for r in regions:
        npages = (r.end - r.start) // PAGE_SIZE
        picked = sorted(rng.sample(range(npages), min(k, npages)))
        addrs += [r.start + i * PAGE_SIZE for i in picked]
        strata.append((r.start, r.end, len(picked)))
    if not addrs:
        return None
    token = ops.mark_pages(ref, addrs)
    if token is None:
        return None
    return _Window(horizon, now, strata, token, frozenset(addrs))


def _read(ops: Operations, ref: ProcessRef, w: _Window, now: float, wall: float) -> tuple[PageCheck, ...]:
    results = ops.read_pages(ref, w.token)
    addrs = sorted(w.addrs)
    out = []
    i = 0
    for start, end, n in w.strata:
        got = [(a, x) for a, x in zip(addrs[i : i + n], results[i : i + n]) if x is not None]
        i += n
        out.append(PageCheck(pid=ref.pid, start=start, end=end, horizon=w.horizon, seconds=now - w.marked_at,
                             read_at=wall, pages=tuple(a for a, _ in got), used=tuple(bool(x) for _, x in got)))
    return tuple(out)


def draw_avoiding(r: Region, windows: PageWindows | None, rng_page: Callable[[int], int], tries: int = 3) -> int:
    """A sampling address in ``r`` on no page a window of the process holds (after
    ``tries`` draws, whatever the last one was: a region all of whose pages are held)."""
    npages = (r.end - r.start) // PAGE_SIZE
    addr = r.start + rng_page(npages) * PAGE_SIZE
    if windows is None or not windows.windows:
        return addr
    for _ in range(tries):
        if not windows.holds(addr):
            break
        addr = r.start + rng_page(npages) * PAGE_SIZE
    return addr
