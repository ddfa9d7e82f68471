"""Metric policy: what the raw records of an aggregation mean to a person.

Engines hand back raw regions (:mod:`exporter.model.records`); :mod:`.stat` turns them into
working set, cold bytes, cold ratio and the two distributions, in one place, as the kernel's
``mm/damon/stat.c`` and damo's reports derive their numbers from raw regions.
"""

from exporter.model.policy import DEFAULT_COLD_AGE, DEFAULT_WORKING_SET_WINDOW, Policy
from exporter.summary.stat import (
    FREQUENCY_BUCKETS,
    IDLE_AGE_BUCKETS,
    Summary,
    TargetSummary,
    cumulative_histogram,
    summarize,
    summarize_target,
)

__all__ = [
    "DEFAULT_COLD_AGE",
    "DEFAULT_WORKING_SET_WINDOW",
    "FREQUENCY_BUCKETS",
    "IDLE_AGE_BUCKETS",
    "Policy",
    "Summary",
    "TargetSummary",
    "cumulative_histogram",
    "summarize",
    "summarize_target",
]
