"""The binomial model's tail and confidence bounds are what they say."""

from __future__ import annotations

import math
import random

from exporter.summary.sampling import ALPHA, at_least, rate_lower, rate_upper


def exact(n: int, p: float, k: int) -> float:
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)))


def test_the_tail_matches_the_exact_sum_up_to_kernel_damon_default_checks():
    rng = random.Random(1)
    for _ in range(2000):
        n = rng.randint(1, 400)
        p, k = rng.random(), rng.randint(-1, n + 1)
        assert abs(at_least(n, p, k) - exact(n, p, k)) < 1e-9, (n, p, k)


def test_bounds_where_they_have_a_closed_form():
    # all 20 checks hit: P(20 hits) = p^20 = ALPHA at the lower bound; none hit: (1-p)^20
    assert abs(rate_lower(20, 20) - ALPHA ** (1 / 20)) < 1e-6
    assert abs(rate_upper(20, 0) - (1 - ALPHA ** (1 / 20))) < 1e-6
    assert rate_upper(20, 20) == 1.0 and rate_lower(20, 0) == 0.0 and rate_upper(0, 0) == 1.0


def test_bounds_bracket_the_observed_rate_at_the_stated_rate():
    for n, k in ((20, 5), (400, 37), (12, 9)):
        lo, hi = rate_lower(n, k), rate_upper(n, k)
        assert lo < k / n < hi
        assert abs(at_least(n, lo, k) - ALPHA) < 1e-4
        assert abs((1 - at_least(n, hi, k + 1)) - ALPHA) < 1e-4
