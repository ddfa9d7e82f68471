"""Bytes used within a horizon, from windows of page checks, with a binomial error.

The sampling model, written once: a window marks ``n`` pages drawn at random without
replacement from a stretch of ``N`` pages (one region when marked) and reads them one
horizon later; ``x`` were found accessed. ``x`` is a draw from the stretch's used share
``p`` (hypergeometric; binomial is its upper bound on variance). The stretch's resident
bytes ``R`` then hold ``R x / n`` used bytes, with variance

    R^2 p~(1 - p~) / (n + 4) * (N - n) / (N - 1),    p~ = (x + 2) / (n + 4)

(Agresti and Coull's adjusted share, which does not call a share of 0 or 1 certain after a
few pages, and the finite-population correction: a stretch checked whole is known exactly).
Stretches are independent draws, so a target's used bytes are their sum and the variances
add; the published error is the 95% normal interval's half width, ``Z95`` standard deviations.
A stretch none of whose pages could be checked (all left memory or refused the mark) is
unknown: its bytes may be anywhere in ``[0, R]``, half of them counted, half as error.

Each process' resident bytes are counted by its share of each page (PSS's rule), so where
several processes map the same frames their estimates add up to the frames once, and where
the check is physical (page_idle: a frame's accessed state is the same from every mapping)
every process' draw is a draw of the same pages: nothing to reconcile between them.

Bytes of a region no stretch covers (memory mapped after the window began) have no page
check: they are classified by the region's own samples, and counted whole in the error.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Callable, Sequence

from exporter.model.attrs import PAGE_SIZE
from exporter.model.records import PageCheck, RegionRecord

#: standard normal quantile of 97.5%: a two-sided 95% interval
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """Resident bytes used within a horizon, and how far that may be off (95%)."""

    used: float
    error: float
    resident: int  # the resident bytes the estimate speaks for (all of the regions')
    measured_at: float  # wall time of the oldest read the estimate uses
    unchecked: float = 0.0  # of those, bytes no check covered (in the error whole)


def stretch_variance(resident: float, x: int, n: int, npages: int) -> float:
    """Variance of ``resident * x / n`` (see the module's doc)."""
    p = (x + 2) / (n + 4)
    fpc = max(0.0, (npages - n) / (npages - 1)) if npages > 1 else 0.0
    return resident * resident * p * (1 - p) / (n + 4) * fpc


def _overlap(r: RegionRecord, c: PageCheck) -> tuple[int, int]:
    return max(r.start, c.start), min(r.end, c.end)


def _share_in(c: PageCheck, lo: int, hi: int) -> float:
    """Used share of the checked pages of ``c`` in ``[lo, hi)``; where none lies there, of
    all of ``c``'s (the pages were drawn uniformly over the stretch, so those in a part of it
    are a uniform draw of that part: counting them per part keeps the estimate unbiased
    and lets parts that are used alike, as regions become, read exactly)."""
    i, j = bisect_left(c.pages, lo), bisect_left(c.pages, hi)
    if j > i:
        return sum(c.used[i:j]) / (j - i)
    return c.accessed / c.checked


def estimate(regions: Sequence[RegionRecord], checks: Sequence[PageCheck], horizon: float,
             fallback: Callable[[RegionRecord], float]) -> Estimate | None:
    """Bytes of ``regions`` used within ``horizon``, from the checks taken over it; None
    where there are none. ``fallback(r)`` is the share of a region's bytes to count as used
    where no check covers them (the region's own samples' verdict).

    The figure counts each region's part of a stretch by the checked pages that lie in that
    part (post-stratification by the regions as they are now); the error is the stretch's
    whole binomial interval, which that does not widen."""
    cs = sorted((c for c in checks if c.horizon == horizon), key=lambda c: (c.pid, c.start))
    if not cs:
        return None
    keys = [(c.pid, c.start) for c in cs]
    resident = [0.0] * len(cs)
    used = error = variance = 0.0
    total = 0
    for r in regions:
        total += r.resident_bytes
        if not r.resident_bytes or r.end <= r.start:
            continue
        covered = 0
        own = fallback(r)
        i = max(0, bisect_right(keys, (r.pid, r.start)) - 1)
        while i < len(cs) and (cs[i].pid, cs[i].start) < (r.pid, r.end):
            c = cs[i]
            lo, hi = _overlap(r, c)
            if c.pid == r.pid and hi > lo:
                part = r.resident_bytes * (hi - lo) / (r.end - r.start)
                resident[i] += part
                covered += hi - lo
                if c.checked:
                    used += part * _share_in(c, lo, hi)
            i += 1
        rest = r.resident_bytes * (1 - min(1.0, covered / (r.end - r.start)))
        used += rest * own
        error += rest
    for c, res in zip(cs, resident):
        if c.checked == 0:
            used += res / 2
            error += res / 2
            continue
        variance += stretch_variance(res, c.accessed, c.checked, (c.end - c.start) // PAGE_SIZE)
    return Estimate(used=used, error=error + Z95 * math.sqrt(variance), resident=total,
                    measured_at=min(c.read_at for c in cs), unchecked=error)
