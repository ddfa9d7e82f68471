"""The sampling model the summary's thresholds and errors follow from, written once.

Every access check of a region looks at one page picked anywhere in it, once per sample
interval. If a share ``p`` of the region's pages is accessed in an interval, a check sees an
access with chance ``p``, independently of the other checks (a new page is picked each time),
so a region's hits in ``n`` checks are Binomial(n, p). Every test of the summary asks one
question of that model, "would the hits seen be this unlikely if ...?", and answers it at
one rate, :data:`ALPHA`: a statement the summary makes from samples (these bytes are used,
this region would have seen that use) is wrong at most that often, and the published errors
cover the truth at least ``1 - ALPHA`` of the time where they rest on such a statement.
"""

from __future__ import annotations

import math
from functools import lru_cache

#: the rate at which the summary accepts being wrong about one sampled statement
ALPHA = 0.05


@lru_cache(maxsize=8192)
def at_least(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k)."""
    if k <= 0:
        return 1.0
    if p <= 0.0 or k > n:
        return 0.0
    if p >= 1.0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p ** i * (1.0 - p) ** (n - i) for i in range(k, n + 1)))


@lru_cache(maxsize=8192)
def rate_upper(n: int, k: int) -> float:
    """The largest access share ``p`` under which ``k`` or fewer hits in ``n`` checks are
    not unlikely (P(Binomial(n, p) <= k) >= ALPHA): one-sided upper confidence bound on a
    region's share accessed per interval. 1 where nothing is known (``n`` = 0)."""
    if n <= 0 or k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(30):  # bisection to 1e-9: far below one check's resolution
        mid = (lo + hi) / 2
        if 1.0 - at_least(n, mid, k + 1) >= ALPHA:
            lo = mid
        else:
            hi = mid
    return lo


@lru_cache(maxsize=8192)
def rate_lower(n: int, k: int) -> float:
    """The smallest access share ``p`` under which ``k`` or more hits in ``n`` checks are
    not unlikely (P(Binomial(n, p) >= k) >= ALPHA): one-sided lower confidence bound. 0
    where nothing was hit or nothing is known."""
    if n <= 0 or k <= 0:
        return 0.0
    lo, hi = 0.0, min(1.0, k / n)
    for _ in range(30):
        mid = (lo + hi) / 2
        if at_least(n, mid, k) >= ALPHA:
            hi = mid
        else:
            lo = mid
    return hi


def missed(share: float, n: float) -> float:
    """The chance that ``n`` checks of a region all miss a part of it holding ``share`` of
    its pages, were every page of that part accessed in every interval."""
    return (1.0 - share) ** n if share < 1.0 else 0.0
