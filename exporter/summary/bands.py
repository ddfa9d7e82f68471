"""Idle-time bands of one record, and the idle-age bucket bounds: shared by the summary's
figures and the promotion tracker, which must read a record's idle times exactly alike and
bucket them alike (a re-access at age T and the cold bytes at T are read side by side)."""

from __future__ import annotations

import math
from typing import Iterable

from exporter.model.records import RegionRecord

#: Upper bounds (seconds) of the ``damon_idle_age_seconds`` and ``damon_reaccess_idle_age_seconds``
#: buckets; part of the metrics contract.
IDLE_AGE_BUCKETS: tuple[float, ...] = (0, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)


def idle_bands(r: RegionRecord) -> Iterable[tuple[float, int]]:
    """(idle seconds, bytes) bands covering the region's resident bytes exactly once.

    From a distribution: bytes touched before its first point are idle 0; bytes untouched
    at point ``s_i`` but not at ``s_{i+1}`` are idle ``s_i`` (a lower bound); bytes
    untouched at the last point are idle for that long."""
    if not r.idle_distribution:
        yield r.idle_seconds, r.resident_bytes
        return
    prev_s, prev_b = 0.0, r.resident_bytes
    for s, nbytes in r.idle_distribution:
        nbytes = min(nbytes, prev_b)
        if prev_b > nbytes:
            yield prev_s, prev_b - nbytes
        prev_s, prev_b = s, nbytes
    if prev_b:
        yield prev_s, prev_b
