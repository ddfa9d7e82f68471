"""The sampling model the summary's figures are judged by, written once.

Every access check of a region looks at one page picked anywhere in it, once per sample
interval. If a share ``p`` of the region's pages is accessed in an interval, a check sees an
access with chance ``p``, independently of the other checks (a new page is picked each time),
so a region's hits in ``n`` checks are Binomial(n, p). A statement made from samples (these
bytes are used, this error covers the truth) is meant to be wrong at most :data:`ALPHA` of
the time; tests that count how often it is wrong allow the misses the binomial tail gives.
"""

from __future__ import annotations

import math
from functools import lru_cache

#: the rate at which a sampled statement may be wrong
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
