"""Monitoring attributes and their validation (the kernel's ``damon_attrs``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from exporter.model.durations import format_duration

#: the machine's page size, read once: pagemap and the page_idle bitmap are indexed by it
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# User-space defaults, chosen from bench/engine_bench.py. The kernel's 5 ms / 100 ms / 60 s /
# 10 / 1000 assume an access check costs well under a microsecond; from Python a page_idle
# check costs ~18 us of CPU on the host (several syscalls per region and sample). At 500 ms
# and at most 100 regions one target costs at most 100 * 2/s * 18 us = 0.36% of a core (plus
# ~0.06% for residency at each 10 s aggregation), and a steady target usually sits well below
# the cap. 20 samples per aggregation still resolve access frequency in steps of 5%, and a
# 10 s aggregation is shorter than the usual 15 s scrape interval.
DEFAULT_SAMPLE_INTERVAL = 0.5
DEFAULT_AGGREGATION_INTERVAL = 10.0
DEFAULT_UPDATE_INTERVAL = 60.0
DEFAULT_MIN_REGIONS = 10
DEFAULT_MAX_REGIONS = 100


class AttrsError(ValueError):
    """Monitoring attributes the kernel would refuse too; the message says which and why."""


@dataclass(frozen=True)
class MonitoringAttrs:
    """Times are in seconds. Validated on construction, like ``damon_set_attrs()``."""

    sample_interval: float = DEFAULT_SAMPLE_INTERVAL
    aggregation_interval: float = DEFAULT_AGGREGATION_INTERVAL
    update_interval: float = DEFAULT_UPDATE_INTERVAL
    min_regions: int = DEFAULT_MIN_REGIONS
    max_regions: int = DEFAULT_MAX_REGIONS

    def __post_init__(self) -> None:
        for name in ("sample_interval", "aggregation_interval", "update_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise AttrsError(f"{name} must be a positive duration, got {value!r}")
        for name in ("min_regions", "max_regions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise AttrsError(f"{name} must be an integer, got {value!r}")
        if self.min_regions < 3:
            raise AttrsError(f"min_regions must be at least 3, got {self.min_regions}")
        if self.min_regions > self.max_regions:
            raise AttrsError(
                f"min_regions ({self.min_regions}) must not exceed max_regions ({self.max_regions})"
            )
        if self.sample_interval > self.aggregation_interval:
            raise AttrsError(
                f"sample_interval ({format_duration(self.sample_interval)}) must not exceed "
                f"aggregation_interval ({format_duration(self.aggregation_interval)})"
            )

    @property
    def max_nr_accesses(self) -> int:
        """Samples per aggregation: the largest value ``nr_accesses`` can reach."""
        return max(1, int(round(self.aggregation_interval / self.sample_interval)))

    def with_changes(self, **changes: float | int) -> "MonitoringAttrs":
        """A validated copy with some attributes changed."""
        return replace(self, **changes)
