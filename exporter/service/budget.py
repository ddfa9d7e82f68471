"""The sampler's CPU budget: measure our own CPU share, and trade resolution for it.

DAMON's promise is a bounded overhead whatever the size of the monitored memory; the
kernel bounds it with ``max_nr_regions``. From user space one access check costs tens of
microseconds, so we also need a feedback loop: after each aggregation the sampler feeds
its thread CPU time here, and when the share of one core over a sliding window exceeds
``cpu_budget`` we lower the region cap of every target in proportion (never below
``min_regions``); when that no longer helps (caps at ``min_regions``, or a backend whose
regions are whole mappings and ignore the cap) we lengthen the sample interval. Below 70%
of the budget we relax in the reverse order, a step at a time.

After every action the window restarts, so each decision is based only on time spent with
the current settings (no oscillation from stale samples). The controller is pure: it
takes times as arguments and returns what to change, so it is unit-tested without a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from ..core.attrs import MonitoringAttrs

#: relax when below this share of the budget
RELAX_BELOW = 0.7
#: aim this far under the budget when cutting, so one cut usually suffices
OVERSHOOT = 1.1
#: the sample interval never grows beyond this multiple of the configured one
MAX_STRETCH = 50.0
#: while stretching, keep at least this many samples per aggregation (frequency
#: resolution 20%); the aggregation interval grows with the sample interval past that
MIN_SAMPLES_PER_AGGREGATION = 5
#: relax steps: sample interval shrinks by this factor, region caps grow by its inverse
RELAX_STEP = 0.8


@dataclass(frozen=True)
class TargetLoad:
    """What the controller needs to know about one target after an aggregation."""

    key: Hashable  # the target's (name, labels): group_by groups of one name are apart
    nr_regions: int
    max_regions: int  # cap in effect


@dataclass
class Decision:
    """What to apply to the monitor. Empty when nothing changes."""

    ratio: float | None  # used share / budget over the window; None while measuring
    max_regions: dict[Hashable, int | None] = field(default_factory=dict)  # None = back to config
    attrs: MonitoringAttrs | None = None
    message: str = ""


class CpuBudget:
    """Feedback controller from the sampler's CPU share to region caps and sample interval."""

    def __init__(self, budget: float, base: MonitoringAttrs, window: float = 10.0) -> None:
        self.budget = budget
        self.base = base
        self.window = window
        self.stretch = 1.0
        self.caps: dict[Hashable, int] = {}  # lowered caps only, by target key; absent = configured max
        self._points: deque[tuple[float, float]] = deque()
        self.last_ratio = 0.0
        self._at_limit_reported = False

    # -- configuration -------------------------------------------------------------------

    def reset(self, budget: float, base: MonitoringAttrs) -> None:
        """A reloaded config: keep what we learnt (caps, stretch), re-clamped to it."""
        self.budget = budget
        self.base = base
        self.caps = {n: max(base.min_regions, c) for n, c in self.caps.items() if c < base.max_regions}
        self._points.clear()

    def effective_attrs(self) -> MonitoringAttrs:
        """The configured attributes with the current stretch applied."""
        b = self.base
        if self.stretch <= 1.0:
            return b
        si = b.sample_interval * self.stretch
        per_aggr = min(MIN_SAMPLES_PER_AGGREGATION, b.aggregation_interval / b.sample_interval)
        aggr = max(b.aggregation_interval, si * per_aggr)
        return b.with_changes(sample_interval=si, aggregation_interval=aggr, update_interval=max(b.update_interval, aggr))

    def min_span(self) -> float:
        """Shortest window worth a decision: two aggregations, and at least 2 s."""
        return max(2.0, 2 * self.effective_attrs().aggregation_interval)

    # -- the loop ------------------------------------------------------------------------

    def observe(self, now: float, cpu_seconds: float, targets: list[TargetLoad], adaptive: bool) -> Decision:
        """Feed one measurement (monotonic time, sampler CPU seconds) after an aggregation."""
        pts = self._points
        pts.append((now, cpu_seconds))
        window = max(self.window, 2 * self.min_span())  # a stretched aggregation needs more
        while len(pts) > 2 and now - pts[1][0] >= window:
            pts.popleft()
        span = pts[-1][0] - pts[0][0]
        if self.budget <= 0 or span <= 0:
            return Decision(None)
        ratio = (pts[-1][1] - pts[0][1]) / span / self.budget
        self.last_ratio = ratio
        if span < self.min_span():
            return Decision(ratio)
        if ratio > 1.0:
            d = self._cut(ratio, targets, adaptive)
        elif ratio < RELAX_BELOW:
            d = self._relax(targets, adaptive)
        else:
            d = Decision(ratio)
        d.ratio = ratio
        if d.max_regions or d.attrs is not None:
            pts.clear()
            pts.append((now, cpu_seconds))
        return d

    def _cut(self, ratio: float, targets: list[TargetLoad], adaptive: bool) -> Decision:
        scale = 1.0 / (ratio * OVERSHOOT)
        d = Decision(ratio)
        floor = self.base.min_regions
        if adaptive:
            for t in targets:
                cap = min(t.max_regions, max(t.nr_regions, floor))
                new = max(floor, int(cap * scale))
                if new < t.max_regions:
                    self.caps[t.key] = new
                    d.max_regions[t.key] = new
        if d.max_regions:
            d.message = f"over CPU budget ({ratio:.2f}x): region caps lowered by {1 - scale:.0%}"
            return d
        stretch = min(MAX_STRETCH, self.stretch / scale)
        if stretch > self.stretch * 1.001:
            self.stretch = stretch
            d.attrs = self.effective_attrs()
            d.message = (
                f"over CPU budget ({ratio:.2f}x) at min regions: sample interval now "
                f"{d.attrs.sample_interval:.3g}s, aggregation {d.attrs.aggregation_interval:.3g}s"
            )
        elif not self._at_limit_reported:
            self._at_limit_reported = True
            d.message = f"over CPU budget ({ratio:.2f}x) with every knob at its limit; raise cpu_budget or monitor less"
        return d

    def _relax(self, targets: list[TargetLoad], adaptive: bool) -> Decision:
        d = Decision(self.last_ratio)
        self._at_limit_reported = False
        if self.stretch > 1.0:
            self.stretch = max(1.0, self.stretch * RELAX_STEP)
            d.attrs = self.effective_attrs()
            d.message = f"under CPU budget: sample interval back to {d.attrs.sample_interval:.3g}s"
            return d
        if adaptive and self.caps:
            for key, cap in list(self.caps.items()):
                new = math.ceil(cap / RELAX_STEP)
                if new >= self.base.max_regions:
                    del self.caps[key]
                    d.max_regions[key] = None
                else:
                    self.caps[key] = new
                    d.max_regions[key] = new
            d.message = "under CPU budget: region caps raised"
        return d

    def forget(self, keys: set[Hashable]) -> None:
        """Drop caps of targets that no longer exist."""
        for k in list(self.caps):
            if k not in keys:
                del self.caps[k]
