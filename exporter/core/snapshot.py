"""Immutable results of one aggregation, and the summaries computed from them.

The sampler thread builds a :class:`MonitorSnapshot` at every aggregation and publishes it by
swapping one reference; readers (the CLI, Prometheus collectors) never see a half-updated
state and never hold a lock while the sampler does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

#: Upper bounds (seconds) of ``damon_idle_age_seconds`` buckets; part of the metrics contract.
IDLE_AGE_BUCKETS: tuple[float, ...] = (0, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
#: Upper bounds of ``damon_access_frequency_ratio`` buckets; part of the metrics contract.
FREQUENCY_BUCKETS: tuple[float, ...] = (0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, math.inf)

DEFAULT_COLD_AGE = 120.0
DEFAULT_WORKING_SET_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class RegionStat:
    """One region at the end of an aggregation."""

    pid: int
    start: int
    end: int
    nr_accesses: int
    nr_checks: int
    age: int
    idle_seconds: float
    resident_bytes: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def frequency(self) -> float:
        """Share of this aggregation's valid samples that saw an access (0..1)."""
        return self.nr_accesses / self.nr_checks if self.nr_checks else 0.0

    def to_dict(self) -> dict:
        return {
            "pid": self.pid,
            "start": self.start,
            "end": self.end,
            "nr_accesses": self.nr_accesses,
            "nr_checks": self.nr_checks,
            "age": self.age,
            "idle_seconds": self.idle_seconds,
            "resident_bytes": self.resident_bytes,
            "frequency": round(self.frequency, 6),
        }


def idle_seconds(nr_accesses: int, age: int, aggregation_interval: float) -> float:
    """How long a region has gone unaccessed: DAMON's age, in seconds, if it saw no access
    this aggregation; zero otherwise. Because a move to zero restarts the age, this is the
    time since the region was last seen accessed (lower bound: since we began watching it)."""
    return 0.0 if nr_accesses > 0 else age * aggregation_interval


def cumulative_histogram(pairs: Iterable[tuple[float, int]], bounds: Sequence[float]) -> tuple[tuple[float, int], ...]:
    """Cumulative (le, bytes) buckets of byte amounts by value, Prometheus style."""
    counts = [0] * len(bounds)
    for value, nbytes in pairs:
        for i, b in enumerate(bounds):
            if value <= b:
                counts[i] += nbytes
                break
    out = []
    acc = 0
    for b, c in zip(bounds, counts):
        acc += c
        out.append((b, acc))
    return tuple(out)


@dataclass(frozen=True)
class TargetSnapshot:
    """One target (a group of processes) at the end of an aggregation."""

    name: str
    pids: tuple[int, ...]
    regions: tuple[RegionStat, ...]
    resident_bytes: int
    working_set_bytes: int
    cold_bytes: int
    idle_age_histogram: tuple[tuple[float, int], ...]
    frequency_histogram: tuple[tuple[float, int], ...]
    aggregated_at: float  # wall clock (seconds since the epoch)
    labels: tuple[tuple[str, str], ...] = ()
    errors: tuple[str, ...] = ()
    max_regions: int = 0

    @property
    def cold_ratio(self) -> float:
        return self.cold_bytes / self.resident_bytes if self.resident_bytes else 0.0

    @property
    def nr_regions(self) -> int:
        return len(self.regions)

    def to_dict(self, with_regions: bool = True) -> dict:
        d = {
            "name": self.name,
            "pids": list(self.pids),
            "resident_bytes": self.resident_bytes,
            "working_set_bytes": self.working_set_bytes,
            "cold_bytes": self.cold_bytes,
            "cold_ratio": round(self.cold_ratio, 6),
            "nr_regions": self.nr_regions,
            "idle_age_histogram": [[_bound(b), v] for b, v in self.idle_age_histogram],
            "frequency_histogram": [[_bound(b), v] for b, v in self.frequency_histogram],
            "aggregated_at": self.aggregated_at,
        }
        if self.labels:
            d["labels"] = dict(self.labels)
        if self.errors:
            d["errors"] = list(self.errors)
        if with_regions:
            d["regions"] = [r.to_dict() for r in self.regions]
        return d


def _bound(b: float) -> float | str:
    return "+Inf" if math.isinf(b) else b


def summarize_target(
    name: str,
    pids: Sequence[int],
    regions: Sequence[RegionStat],
    *,
    cold_age: float,
    working_set_window: float,
    aggregated_at: float,
    labels: tuple[tuple[str, str], ...] = (),
    errors: tuple[str, ...] = (),
    max_regions: int = 0,
) -> TargetSnapshot:
    """Working set, cold bytes and the two distributions, from resident bytes only.

    Non-resident memory is in no numerator and no denominator: a region's weight is its
    resident bytes, never its size.
    """
    resident = sum(r.resident_bytes for r in regions)
    working = sum(r.resident_bytes for r in regions if r.idle_seconds < working_set_window)
    cold = sum(r.resident_bytes for r in regions if r.idle_seconds >= cold_age)
    return TargetSnapshot(
        name=name,
        pids=tuple(sorted(set(pids))),
        regions=tuple(regions),
        resident_bytes=resident,
        working_set_bytes=working,
        cold_bytes=cold,
        idle_age_histogram=cumulative_histogram(((r.idle_seconds, r.resident_bytes) for r in regions), IDLE_AGE_BUCKETS),
        frequency_histogram=cumulative_histogram(((r.frequency, r.resident_bytes) for r in regions), FREQUENCY_BUCKETS),
        aggregated_at=aggregated_at,
        labels=labels,
        errors=errors,
        max_regions=max_regions,
    )


@dataclass(frozen=True)
class MonitorStats:
    """Counters since the monitor started (monotonic, for ``_total`` metrics)."""

    checks_total: int = 0
    discarded_total: int = 0
    aggregations_total: int = 0
    errors_total: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class MonitorSnapshot:
    """Everything one aggregation produced. Immutable; publish by reference swap."""

    backend: str
    taken_at: float  # wall clock
    sample_interval: float
    aggregation_interval: float
    targets: tuple[TargetSnapshot, ...]
    stats: MonitorStats = field(default_factory=MonitorStats)
    warnings: tuple[str, ...] = ()

    def target(self, name: str) -> TargetSnapshot | None:
        for t in self.targets:
            if t.name == name:
                return t
        return None

    def to_dict(self, with_regions: bool = True) -> dict:
        return {
            "backend": self.backend,
            "taken_at": self.taken_at,
            "sample_interval": self.sample_interval,
            "aggregation_interval": self.aggregation_interval,
            "warnings": list(self.warnings),
            "targets": [t.to_dict(with_regions) for t in self.targets],
        }
