"""How many misses a VM test allows, from the sampling model, with its false-failure rate.

A published figure with its error is meant to cover the truth (within the tolerance an issue
sets, 10% here) at least 95% of the time at one aggregation: :data:`MISS_RATE`. Aggregations
are the independent draws (the sampler starts each from fresh samples; two scrapes of one
aggregation show the same figures), so a test that judges ``n`` aggregations and allows
``k`` misses fails with probability P(Binomial(n, MISS_RATE) > k) when the exporter keeps
exactly its promise. :func:`allowed_misses` picks the smallest ``k`` that keeps that below
:data:`FALSE_FAILURE`.
"""

from __future__ import annotations

from exporter.summary.sampling import ALPHA, at_least

#: the share of aggregations whose published error may miss the truth: the summary's rate
MISS_RATE = ALPHA
#: the chance a test may fail although the exporter keeps that rate
FALSE_FAILURE = 0.005


def allowed_misses(n: int, p: float = MISS_RATE, rate: float = FALSE_FAILURE) -> int:
    """The fewest misses ``k`` among ``n`` independent aggregations, each missing with chance
    ``p``, such that more than ``k`` happen with chance below ``rate``."""
    return next(k for k in range(n + 1) if at_least(n, p, k + 1) < rate)


def aggregations(scrapes: list[dict]) -> list[dict]:
    """One scrape per aggregation (``aggregated_at``): scrapes more often than aggregations
    see each one more than once, and those are not independent draws."""
    seen: dict[float, dict] = {}
    for s in scrapes:
        seen.setdefault(s["aggregated_at"], s)
    return list(seen.values())



def error_confined(s: dict, truth_working_set: float, slack: float = 0.10) -> bool:
    """Whether a scrape's working-set error holds only what the summary puts in it
    (exporter/summary/stat.py): what the hit regions' samples leave unproven, which is at
    most the bytes they count in the working set, the edge doubt on the idle side, a small
    share of it (``slack`` of the truth), and no memory still unknown (the tests judge after
    warm-up). Whether the error is *small* is the samples' to say: where a hot page is seen
    in only some of its checks (emulated, at 5 ms) or the budget left few checks per window,
    they do not prove it used, and a wide error is the truth about what they know; the
    published figure bracketing the truth is judged apart. An error beyond this would hold
    idle memory, which it must not."""
    return s["working_set_error"] <= s["working_set"] + slack * truth_working_set
