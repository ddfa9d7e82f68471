"""Page windows: which share of each region was used within a whole window.

A region's sampled checks say whether *a* page of it was used in a sample interval, and its
hits prove a share of its pages used per interval (:mod:`exporter.summary.sampling`). On a
region whose pages are not used alike (a heap with its live objects scattered over it) that
is all they prove: a region counted whole once hit can hold 30% used pages or 100%.

A page window asks the other question directly, as Brendan Gregg's ``wss`` does for a whole
process, but on a sample: when it opens, random pages of every region are marked idle; one
horizon later (``working_set_window``, ``cold_age``) they are read. A page found accessed
was used within the window. Pages drawn at random from a region are a random sample of its
pages, so the share found accessed estimates the share of the region used within the
window, and the count found accessed in ``n`` pages is binomial: the same model, and the
same bounds, as the samples' (each stratum's bounds combine as independent errors do).

The window's pages are drawn per region (the regions are strata: a region of DAMON's is
used more alike than the process is, which narrows the estimate), in proportion to each
region's resident bytes, more where a region's pages are sparsely resident (a page drawn
where nothing is resident tells nothing), :data:`WINDOW_PAGES` per target and window in
all. Cost per window: about six syscalls per page (a pagemap and a kpageflags read, the
bitmap write and read-back at the mark; a pagemap and a bitmap read at the read), plus a
resident-bytes count of each region at both ends. The monitor opens one window per horizon
and aggregation, timed to be read at an aggregation exactly a horizon later: each
aggregation publishes the last horizon's use, so a load that ends leaves the figure one
horizon and one aggregation later, as a figure from whole regions does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from exporter.engines.page_idle.operations import CheckResult
from exporter.model.attrs import PAGE_SIZE
from exporter.model.process import ProcessRef
from exporter.model.records import WindowStratum

#: pages read per target and window: the estimate of a target's used share is off by at
#: most about 1.65 * 0.5 / sqrt(1024) = 2.6% of its resident bytes at the 95% bound (a
#: share of 1/2 in every stratum, the widest binomial), whatever its size
WINDOW_PAGES = 1024
#: pages drawn at least from a region with resident memory: with fewer, a sparsely resident
#: region too often yields no page present to read, and nothing is known of it
MIN_STRATUM_PAGES = 4
#: pages are drawn at most this many times more densely in a sparsely resident region than
#: in a fully resident one (a page drawn where nothing is resident is wasted)
MAX_SPARSE_BOOST = 16


@dataclass(eq=False)
class WindowPart:
    """One process' share of an open window."""

    handle: object
    #: (start, end, pages drawn, pages present when drawn or None) per region, in order
    strata: list[tuple[int, int, int, float | None]]


@dataclass(eq=False)
class OpenWindow:
    horizon: float
    opened_at: float  # monitor clock
    opened_wall: float
    parts: dict[ProcessRef, WindowPart] = field(default_factory=dict)


def allocate(regions: Sequence[tuple[int, int, int]], total: int = WINDOW_PAGES, boost: int = MAX_SPARSE_BOOST) -> list[int]:
    """Pages to draw from each region ``(start, end, resident bytes)``: in proportion to its
    resident bytes over its density (up to ``boost`` times; 1 where pages are drawn from
    the present ones only), at least :data:`MIN_STRATUM_PAGES` where anything is resident,
    at most all of its pages; about ``total`` in all (more where many regions take their
    minimum)."""
    weights = [min(e - s, res * boost) if res > 0 else 0 for s, e, res in regions]
    whole = sum(weights)
    if whole <= 0:
        return [0] * len(regions)
    out = []
    for (s, e, _), w in zip(regions, weights):
        n = 0 if w <= 0 else max(MIN_STRATUM_PAGES, round(total * w / whole))
        out.append(min(n, (e - s) // PAGE_SIZE))
    return out


def draw(start: int, end: int, n: int, rng: random.Random) -> list[int]:
    """``n`` distinct random page addresses of ``[start, end)``, sorted."""
    pages = (end - start) // PAGE_SIZE
    if n >= pages:
        return [start + i * PAGE_SIZE for i in range(pages)]
    return sorted(start + i * PAGE_SIZE for i in rng.sample(range(pages), n))


def stratum(pid: int, start: int, end: int, resident: int,
            results: Sequence[tuple[CheckResult, float]], present: float | None = None) -> WindowStratum:
    """One region's read pages, each weighed by its share (a page ``m`` page tables map
    is ``1/m`` of this process' resident bytes): the share of the region's resident bytes
    used, and the effective number of pages it rests on (Kish's ``(sum w)^2 / sum w^2``,
    the plain count where every page weighs the same).

    Where the pages were drawn among the ``present`` ones (a count read from the region's
    pagemap), its resident bytes are that count times the mean share of the pages read (as
    PSS counts them), not ``resident``: the count is exact where the whole region was read,
    and the window's figures then add up to what it saw, not to a sampled residency."""
    sw = swa = sw2 = 0.0
    nvalid = 0
    for accessed, w in results:
        if accessed is None:
            continue
        nvalid += 1
        if w <= 0:
            continue
        sw += w
        sw2 += w * w
        if accessed:
            swa += w
    if present is not None and nvalid:
        resident = round(present * PAGE_SIZE * sw / nvalid)
    if sw <= 0:
        return WindowStratum(pid, start, end, resident, 0, 0.0)
    return WindowStratum(pid, start, end, resident, max(1, round(sw * sw / sw2)), swa / sw)
