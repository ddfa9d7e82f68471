"""The sampling model the summary's tests of samples and its errors follow, written once.

Every access check of a region looks at one page picked anywhere in it, once per sample
interval. If a share ``p`` of the region's pages is accessed in an interval, a check sees an
access with chance ``p``, independently of the other checks (a new page is picked each time),
so a region's hits in ``n`` checks are Binomial(n, p). Every test the summary makes of
samples asks one question of that model, "would the hits seen be this unlikely if ...?", and
answers it at one rate, :data:`ALPHA`: a statement made from samples (these hits come from
other processes' memory) is wrong at most that often; tests that count how often a published
error misses the truth allow the misses the binomial tail gives at that rate.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable

#: the rate at which a sampled statement may be wrong
ALPHA = 0.05
#: bisection steps for the confidence bounds: 2^-24, far below one check's resolution
_STEPS = 24


@lru_cache(maxsize=8192)
def at_least(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k), summed in log space (kernel DAMON's default aggregation holds
    400 checks per region: no big integers, no underflow)."""
    if k <= 0:
        return 1.0
    if p <= 0.0 or k > n:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq, lf = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def pmf(i: int) -> float:
        return math.exp(lf - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)

    if k <= n * p:  # the lower tail is the shorter sum
        return max(0.0, 1.0 - sum(pmf(i) for i in range(k)))
    total = 0.0
    for i in range(k, n + 1):  # past the mode the terms only shrink
        term = pmf(i)
        total += term
        if term < total * 1e-17:
            break
    return min(1.0, total)


@lru_cache(maxsize=8192)
def rate_upper(n: int, k: int, alpha: float = ALPHA) -> float:
    """The largest access share ``p`` under which ``k`` or fewer hits in ``n`` checks are not
    unlikely (P(Binomial(n, p) <= k) >= ALPHA): the one-sided upper confidence bound on a
    region's share accessed per interval. 1 where nothing is known (``n`` = 0)."""
    if n <= 0 or k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if 1.0 - at_least(n, mid, k + 1) >= alpha:
            lo = mid
        else:
            hi = mid
    return lo


@lru_cache(maxsize=8192)
def rate_lower(n: int, k: int, alpha: float = ALPHA) -> float:
    """The smallest access share ``p`` under which ``k`` or more hits in ``n`` checks are not
    unlikely (P(Binomial(n, p) >= k) >= ALPHA): the one-sided lower confidence bound. 0 where
    nothing was hit or nothing is known."""
    if n <= 0 or k <= 0:
        return 0.0
    lo, hi = 0.0, min(1.0, k / n)
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if at_least(n, mid, k) >= alpha:
            hi = mid
        else:
            lo = mid
    return hi


def used_lower(parts: Iterable[tuple[float, int, int]]) -> float:
    """A lower confidence bound (wrong at most about :data:`ALPHA` of the time) on
    ``sum(b * p)`` over regions given as ``(b, k, n)``: ``b`` bytes whose share ``p``
    accessed per interval was hit ``k`` times in ``n`` checks.

    Each region's share is estimated by ``k / n`` and is short of it by at most
    ``k / n - rate_lower(n, k)`` (the exact one-sided binomial bound). The regions' checks
    are independent draws, so their shortfalls combine as independent errors do, by the
    root of their sum of squares: for one region that is its exact bound; for many, a normal
    bound on the sum whose standard deviations are the exact half widths over the normal
    quantile, which are at least the binomial ones, widest where a share near 0 or 1 makes
    the normal approximation too narrow. A region with no hit proves nothing and adds
    nothing.

    Why a bound on *per-interval* use is one on use over any longer window: a page accessed
    within an interval of the window was accessed within the window. The converse does not
    hold: a page used once a minute is in a minute's working set and in few intervals, so
    this bound is all the samples prove about a region whose pages are not used alike; what
    lies above it they do not know."""
    point = squares = 0.0
    for b, k, n in parts:
        if n <= 0 or k <= 0 or b <= 0:
            continue
        k = min(k, n)
        point += b * k / n
        squares += (b * (k / n - rate_lower(n, k))) ** 2
    return max(0.0, point - math.sqrt(squares))


def share_bounds(parts: Iterable[tuple[int, float, int]]) -> tuple[float, float, float]:
    """The point estimate of ``sum(b * p)`` over strata given as ``(b, s, n)``: ``b`` bytes
    of which a share ``s`` of ``n`` random pages was found used (``n`` = 0: nothing known),
    and how far below and above it the truth may lie, each side wrong at most ``ALPHA / 2``
    of the time (so the interval holds the truth at ``1 - ALPHA``).

    Each stratum's count is binomial; its exact one-sided bounds at ``ALPHA / 2`` are
    combined as :func:`used_lower` combines them (root of the sum of squares). A stratum of
    which no page could be read counts at the share of the others together (the best guess
    that is not 0 or 1), with all it may be on either side as error: its share may be
    anything."""
    parts = [(b, share, n) for b, share, n in parts if b > 0]
    known = sum(b for b, _, n in parts if n > 0)
    pooled = sum(b * share for b, share, n in parts if n > 0) / known if known else 0.5
    point = below = above = 0.0
    unknown_below = unknown_above = 0.0
    a = ALPHA / 2
    for b, share, n in parts:
        if n <= 0:
            point += b * pooled
            unknown_below += b * pooled
            unknown_above += b * (1.0 - pooled)
            continue
        k = min(n, max(0, round(share * n)))
        point += b * share
        below += (b * max(0.0, share - rate_lower(n, k, a))) ** 2
        above += (b * max(0.0, rate_upper(n, k, a) - share)) ** 2
    return point, math.sqrt(below) + unknown_below, math.sqrt(above) + unknown_above
