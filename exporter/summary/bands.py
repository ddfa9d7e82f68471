"""Idle-time bands of one record: shared by the summary's figures and the promotion
tracker, which must read a record's idle times exactly alike."""

from __future__ import annotations

from typing import Iterable

from exporter.model.records import RegionRecord


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
