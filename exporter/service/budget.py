"""The sampler's CPU budget: measure our own CPU share, and trade resolution for it.

DAMON's promise is a bounded overhead whatever the size of the monitored memory; the
kernel bounds it with ``max_nr_regions``. From user space one access check costs tens of
microseconds, so we also need a feedback loop: after each aggregation the sampler feeds
its thread CPU time here, and when the share of one core over a sliding window exceeds
``cpu_budget`` we give up resolution, in this order:

1. *Time*: the sample interval grows (the aggregation interval stays, down to
   ``MIN_SAMPLES_PER_AGGREGATION`` samples per aggregation), then both grow together, until
   the shortest window the metrics answer for (``working_set_window``, or ``cold_age`` if
   shorter) holds ``MIN_SAMPLES_PER_WINDOW`` samples and ``MIN_AGGREGATIONS_PER_WINDOW``
   aggregations (and never past ``MAX_STRETCH``). Where the kernel samples
   (``per_aggregation``: kernel DAMON), the exporter's own work is reading the regions back
   once per aggregation, which a longer sample interval does not lower: there the
   aggregation interval grows with the sample interval from the first step, as far as the
   windows allow (under emulation, on five forked processes sharing 128 MiB, that work was
   20 times the kdamond's). Time costs little: an accessed bit stays
   set until we look, so a longer sample interval still catches every access to the
   sampled page; what it costs is how finely access frequency and idle time are resolved,
   and how many pages of each region are looked at per window.
2. *Region caps*, only once time is spent: every target's cap is lowered in proportion,
   never below its floor: ``REGION_FLOOR`` x ``min_regions``, and ``SPLIT_ROOM`` x the
   regions it had left after merging (nor above ``max_regions``). Fewer regions cost
   accuracy directly, because DAMON moves region boundaries onto the edges between used
   and idle memory by splitting regions and merging alike neighbours, and it splits only
   while the regions after merging number at most half the cap. Below that, boundaries
   freeze where they are and a whole region (up to total / ``min_regions``) can be
   misplaced at each edge; a cap under which splitting has stopped anyway (the pattern
   grew edges) is raised back to the floor at once, over budget or not. ``bench/region_floor.py``
   (simulated 512 MiB, one or two hot ranges): worst working-set error 152% of the true
   working set at 3 x, 0.5% at 4 x. The bound we state: within 10% at the floor, for
   targets with up to two hot ranges (``tests/service/test_budget_truth.py`` holds it,
   within 2%, while the budget stretches, cuts and relaxes repeatedly).
3. Nothing else: a budget that still does not hold is reported once ("every knob at its
   limit"); the numbers stay true and the exporter uses more CPU than asked.

Under 70% of the budget it relaxes in the reverse order (caps back first, then time), a
step at a time. Idle times are kept in seconds (:mod:`exporter.engines.page_idle.regions`), so a change
of intervals never moves a working set or cold figure by itself.

After every action the window restarts, so each decision is based only on time spent with
the current settings (no oscillation from stale samples). The controller is pure: it
takes times as arguments and returns what to change, so it is unit-tested without a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from exporter.model.attrs import MonitoringAttrs
from exporter.model.policy import DEFAULT_WORKING_SET_WINDOW

#: relax when below this share of the budget
RELAX_BELOW = 0.7
#: aim this far under the budget when cutting, so one cut usually suffices
OVERSHOOT = 1.1
#: the sample interval never grows beyond this multiple of the configured one
MAX_STRETCH = 50.0
#: while stretching, keep at least this many samples per aggregation (frequency
#: resolution 20%); the aggregation interval grows with the sample interval past that
MIN_SAMPLES_PER_AGGREGATION = 5
#: samples and aggregations the shortest metric window must hold, however stretched
MIN_SAMPLES_PER_WINDOW = 10
MIN_AGGREGATIONS_PER_WINDOW = 2
#: region caps never go below this multiple of min_regions (see the module docstring)
REGION_FLOOR = 4
#: nor below this multiple of the regions left after merging: DAMON splits only while
#: those are at most half the cap; the rest is room for new edges
SPLIT_ROOM = 2.5
#: relax steps: sample interval shrinks by this factor, region caps grow by its inverse
RELAX_STEP = 0.8


@dataclass(frozen=True)
class TargetLoad:
    """What the controller needs to know about one target after an aggregation."""

    key: Hashable  # the target's (name, labels): group_by groups of one name are apart
    nr_regions: int
    max_regions: int  # cap in effect
    nr_merged: int = 0  # regions after merging, before the split (0: not known)


@dataclass
class Decision:
    """What to apply to the monitor. Empty when nothing changes."""

    ratio: float | None  # used share / budget over the window; None while measuring
    max_regions: dict[Hashable, int | None] = field(default_factory=dict)  # None = back to config
    attrs: MonitoringAttrs | None = None
    message: str = ""


class CpuBudget:
    """Feedback controller from the sampler's CPU share to region caps and sample interval."""

    def __init__(self, budget: float, base: MonitoringAttrs, window: float = 10.0,
                 resolution: float = DEFAULT_WORKING_SET_WINDOW, per_aggregation: bool = False) -> None:
        self.budget = budget
        self.base = base
        self.window = window
        #: the shortest time the metrics answer for: min(working_set_window, cold_age)
        self.resolution = resolution
        #: the engine's own work comes once per aggregation (the kernel samples)
        self.per_aggregation = per_aggregation
        self.stretch = 1.0
        self.caps: dict[Hashable, int] = {}  # lowered caps only, by target key; absent = configured max
        self._points: deque[tuple[float, float]] = deque()
        self.last_ratio = 0.0
        self._at_limit_reported = False

    # -- configuration -------------------------------------------------------------------

    def reset(self, budget: float, base: MonitoringAttrs, resolution: float | None = None,
              per_aggregation: bool | None = None) -> None:
        """A reloaded config (or another engine): keep what we learnt (caps, stretch),
        re-clamped to it."""
        self.budget = budget
        self.base = base
        if resolution is not None:
            self.resolution = resolution
        if per_aggregation is not None:
            self.per_aggregation = per_aggregation
        floor = self.region_floor()
        self.caps = {n: max(floor, c) for n, c in self.caps.items() if max(floor, c) < base.max_regions}
        self.stretch = min(self.stretch, self.max_stretch())
        self._points.clear()

    def _per_aggregation(self) -> float:
        b = self.base
        return min(MIN_SAMPLES_PER_AGGREGATION, b.aggregation_interval / b.sample_interval)

    def _longest_aggregation(self) -> float:
        b = self.base
        return max(b.aggregation_interval, self.resolution / MIN_AGGREGATIONS_PER_WINDOW)

    def max_stretch(self) -> float:
        """How far time may stretch: the shortest metric window keeps its samples and
        aggregations (1.0 where the configured intervals already use that up)."""
        b = self.base
        si = min(b.sample_interval * MAX_STRETCH, self.resolution / MIN_SAMPLES_PER_WINDOW,
                 self._longest_aggregation() / self._per_aggregation())
        return max(1.0, si / b.sample_interval)

    def region_floor(self, t: TargetLoad | None = None) -> int:
        """The lowest region cap the budget may set for ``t``: 4 x ``min_regions``, and room
        for DAMON to keep splitting the target's regions (2.5 x those left after merging);
        the configured max if that is lower."""
        b = self.base
        floor = REGION_FLOOR * b.min_regions
        if t is not None:
            floor = max(floor, math.ceil(SPLIT_ROOM * t.nr_merged))
        return min(b.max_regions, floor)

    def effective_attrs(self) -> MonitoringAttrs:
        """The configured attributes with the current stretch applied."""
        b = self.base
        stretch = min(self.stretch, self.max_stretch())
        if stretch <= 1.0:
            return b
        si = b.sample_interval * stretch
        aggr = max(b.aggregation_interval, si * self._per_aggregation())
        if self.per_aggregation:  # what costs us is reading back: fewer aggregations
            aggr = max(aggr, min(b.aggregation_interval * stretch, self._longest_aggregation()))
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
        d = self._keep_splitting(targets, adaptive)
        if d.max_regions:
            d.ratio = ratio
            pts.clear()
            pts.append((now, cpu_seconds))
            return d
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

    def _keep_splitting(self, targets: list[TargetLoad], adaptive: bool) -> Decision:
        """Raise, at once, any lowered cap under which DAMON has stopped splitting (more
        than half of it left after merging: the target's pattern grew edges) back to the
        target's floor: frozen regions would cost accuracy. Cuts stop at 2.5 x, this acts
        below 2 x, so a merged count that moves a little does not toggle the cap."""
        d = Decision(self.last_ratio)
        if not adaptive:
            return d
        for t in targets:
            cap = self.caps.get(t.key)
            floor = self.region_floor(t)
            if cap is not None and cap < min(floor, 2 * t.nr_merged):
                if floor >= self.base.max_regions:
                    del self.caps[t.key]
                    d.max_regions[t.key] = None
                else:
                    self.caps[t.key] = floor
                    d.max_regions[t.key] = floor
        if d.max_regions:
            d.message = "region caps raised to their floor: the regions must keep room to split"
        return d

    def _cut(self, ratio: float, targets: list[TargetLoad], adaptive: bool) -> Decision:
        scale = 1.0 / (ratio * OVERSHOOT)
        d = Decision(ratio)
        # 1. time resolution, as far as the metric windows allow
        limit = self.max_stretch()
        if self.stretch < limit * 0.999:
            self.stretch = min(limit, self.stretch / scale)
            d.attrs = self.effective_attrs()
            d.message = (
                f"over CPU budget ({ratio:.2f}x): sample interval now "
                f"{d.attrs.sample_interval:.3g}s, aggregation {d.attrs.aggregation_interval:.3g}s"
            )
            return d
        # 2. region caps, never below the floor
        floors = []
        if adaptive:
            for t in targets:
                floor = self.region_floor(t)
                cap = min(t.max_regions, max(t.nr_regions, floor))
                new = max(floor, int(cap * scale))
                if new < t.max_regions:
                    self.caps[t.key] = new
                    d.max_regions[t.key] = new
                    floors.append(floor)
        if d.max_regions:
            d.message = (
                f"over CPU budget ({ratio:.2f}x) at the shortest resolution the metric windows allow: "
                f"region caps lowered by up to {1 - scale:.0%} (floor {min(floors)}"
                + (f"-{max(floors)})" if max(floors) > min(floors) else ")")
            )
        elif not self._at_limit_reported:
            self._at_limit_reported = True
            d.message = (
                f"over CPU budget ({ratio:.2f}x) with every knob at its limit; raise cpu_budget, "
                "lengthen working_set_window or monitor less"
            )
        return d

    def _relax(self, targets: list[TargetLoad], adaptive: bool) -> Decision:
        d = Decision(self.last_ratio)
        self._at_limit_reported = False
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
        if self.stretch > 1.0:
            self.stretch = max(1.0, min(self.stretch, self.max_stretch()) * RELAX_STEP)
            d.attrs = self.effective_attrs()
            d.message = (f"under CPU budget: sample interval back to {d.attrs.sample_interval:.3g}s, "
                         f"aggregation {d.attrs.aggregation_interval:.3g}s")
        return d

    def forget(self, keys: set[Hashable]) -> None:
        """Drop caps of targets that no longer exist."""
        for k in list(self.caps):
            if k not in keys:
                del self.caps[k]
