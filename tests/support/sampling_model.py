"""The sampling model's bound, restated for tests that compute a published error by hand."""

from __future__ import annotations

import math

from exporter.summary.sampling import rate_lower

MiB = 1 << 20


def unproven(*parts: tuple[float, int, int]) -> float:
    """What the samples leave unproven of regions counted whole, given as (MiB, hits,
    checks): their bytes less the lower bound on their bytes used per interval, each
    region's estimate ``hits / checks`` short of the exact binomial bound at most, the
    shortfalls of independent draws adding as squares (exporter.summary.sampling)."""
    point = sum(m * MiB * k / n for m, k, n in parts)
    short = math.sqrt(sum((m * MiB * (k / n - rate_lower(n, k))) ** 2 for m, k, n in parts))
    return sum(m * MiB for m, _, _ in parts) - max(0.0, point - short)
