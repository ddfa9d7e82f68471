"""The binomial model's tail and confidence bounds are what they say."""

from __future__ import annotations

import math
import random

from exporter.summary.sampling import ALPHA, at_least, rate_lower, rate_upper, used_lower


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


#: layouts drawn for the coverage of :func:`used_lower`
LAYOUTS = 1000
#: the chance the coverage test fails although coverage is exactly 1 - ALPHA
FALSE_FAILURE = 0.001
#: misses allowed: the smallest k with P(Binomial(LAYOUTS, ALPHA) > k) <= FALSE_FAILURE
ALLOWED = next(k for k in range(LAYOUTS + 1) if at_least(LAYOUTS, ALPHA, k + 1) <= FALSE_FAILURE)


def test_used_lower_is_below_the_used_bytes_at_the_stated_rate():
    """Random layouts of one to forty regions, at the checks per region the engines hold
    (one to 400), with access shares where the normal approximation is worst (near 0 and
    1) as well as anywhere: the bound exceeds the true used bytes per interval in at most
    ALPHA of them (as the stated false-failure rate allows)."""
    rng = random.Random(32)
    misses = 0
    for _ in range(LAYOUTS):
        n = rng.choice((1, 5, 10, 20, 100, 400))
        regions = [(rng.choice((1, 4, 16, 64)), rng.choice((0.01, 0.3, 0.9, 0.97, 1.0, rng.random())))
                   for _ in range(rng.choice((1, 2, 3, 10, 40)))]
        truth = sum(b * p for b, p in regions)
        draws = [(b, sum(rng.random() < p for _ in range(n)), n) for b, p in regions]
        misses += used_lower(draws) > truth + 1e-9
    assert misses <= ALLOWED, (misses, ALLOWED)


def test_used_lower_of_one_region_is_its_exact_bound_and_a_miss_proves_nothing():
    assert abs(used_lower([(8.0, 20, 20)]) - 8.0 * rate_lower(20, 20)) < 1e-9
    assert used_lower([(8.0, 0, 20), (4.0, 3, 0)]) == 0.0
    # many alike regions prove more together than each alone: the shortfalls add as squares
    assert used_lower([(1.0, 20, 20)] * 16) > 16 * rate_lower(20, 20)
