"""The VM tests' allowance of misses is the binomial tail it says it is."""

from __future__ import annotations

from math import comb

from .tolerance import FALSE_FAILURE, MISS_RATE, aggregations, allowed_misses


def tail(n: int, k: int, p: float = MISS_RATE) -> float:
    """P(Binomial(n, p) > k)."""
    return sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1, n + 1))


def test_allowed_misses_is_the_smallest_count_below_the_false_failure_rate() -> None:
    # P(Bin(6, 0.05) > 1) = 3.3%, > 2 = 0.22%; P(Bin(30, 0.05) > 4) = 1.6%, > 5 = 0.34%
    assert [allowed_misses(n) for n in (1, 6, 12, 30)] == [1, 2, 3, 5]
    for n in range(1, 60):
        k = allowed_misses(n)
        assert tail(n, k) < FALSE_FAILURE
        assert k == 0 or tail(n, k - 1) >= FALSE_FAILURE


def test_two_scrapes_of_one_aggregation_are_one_draw() -> None:
    scrapes = [{"aggregated_at": 1.0, "t": 0}, {"aggregated_at": 1.0, "t": 5}, {"aggregated_at": 2.0, "t": 10}]
    assert [s["t"] for s in aggregations(scrapes)] == [0, 10]


def test_a_median_of_five_fails_below_the_false_failure_rate() -> None:
    # test_vm_page_idle.py judges steady figures by the median of the last 5 aggregations:
    # off only where 3 of them are
    assert round(tail(5, 2), 4) == 0.0012
    assert tail(5, 2) < FALSE_FAILURE
