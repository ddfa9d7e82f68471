"""The monitoring loop: DAMON's kdamond, in user space, for many targets at once.

One :class:`Monitor` drives one operations set over any number of *targets*; a target is a
named group of processes (a service, a pod, a cgroup) whose results add up. Every process
has its own sorted list of regions. Per target, the region count is kept in
``[min_regions, max_regions]`` after each aggregation, exactly as the kernel keeps one
context's count, with two deliberate differences noted where they happen.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from ..ops.base import Operations, OpsError, ProcessGone, ProcessRef
from .attrs import PAGE_SIZE, MonitoringAttrs
from .ranges import AddressRange, normalize, three_regions
from .regions import (
    MIN_REGION,
    Region,
    fixed_regions,
    force_merge,
    init_regions,
    merge_regions,
    region_size_limit,
    set_regions,
    split_evenly,
    split_regions,
    update_age,
)
from .snapshot import (
    DEFAULT_COLD_AGE,
    DEFAULT_WORKING_SET_WINDOW,
    MonitorSnapshot,
    MonitorStats,
    RegionStat,
    TargetSnapshot,
    idle_seconds,
    summarize_target,
)

log = logging.getLogger(__name__)

MAX_ERRORS_PER_TARGET = 5


@dataclass(frozen=True)
class TargetSpec:
    """What to monitor under one name: the processes, and labels to carry along."""

    name: str
    processes: tuple[ProcessRef, ...]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class _Process:
    ref: ProcessRef
    regions: list[Region] = field(default_factory=list)


@dataclass
class _Target:
    spec: TargetSpec
    processes: dict[ProcessRef, _Process] = field(default_factory=dict)
    last_nr_regions: int = 0
    max_regions: int | None = None  # lowered by the CPU budget; None = attrs.max_regions
    errors: dict[ProcessRef, str] = field(default_factory=dict)

    def nr_regions(self) -> int:
        return sum(len(p.regions) for p in self.processes.values())

    def total_size(self) -> int:
        return sum(r.end - r.start for p in self.processes.values() for r in p.regions)


class Monitor:
    """DAMON's monitoring loop over an operations set.

    Call :meth:`set_targets` to say what to watch, then either :meth:`run` (a loop until a
    stop event) or :meth:`step` (one sample; used by tests with a virtual clock).
    """

    def __init__(
        self,
        ops: Operations,
        attrs: MonitoringAttrs | None = None,
        *,
        cold_age: float = DEFAULT_COLD_AGE,
        working_set_window: float = DEFAULT_WORKING_SET_WINDOW,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.ops = ops
        self.attrs = attrs or MonitoringAttrs()
        self._pending_attrs: MonitoringAttrs | None = None
        self.cold_age = cold_age
        self.working_set_window = working_set_window
        self.rng = rng or random.Random()
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        # keyed by (name, labels): a group_by target is several specs sharing one name
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], _Target] = {}
        self._failed: dict[ProcessRef, str] = {}
        self._checks = 0
        self._discarded = 0
        self._aggregations = 0
        self._errors: Counter[str] = Counter()
        self._warnings: tuple[str, ...] = ()
        now = clock()
        self._next_aggregation = now + self.attrs.aggregation_interval
        self._next_update = now + self.attrs.update_interval
        self.last_snapshot: MonitorSnapshot | None = None

    # -- configuration -------------------------------------------------------------------

    def set_attrs(self, attrs: MonitoringAttrs) -> None:
        """New attributes take effect at the next aggregation, like an online commit."""
        self._pending_attrs = attrs

    def set_target_max_regions(self, name: str, max_regions: int | None) -> None:
        """Lower one target's region cap (the CPU budget uses this); None restores it."""
        for t in self._named(name):
            t.max_regions = max_regions

    def max_regions_of(self, name: str) -> int:
        t = next(iter(self._named(name)), None)
        return self._max_regions(t) if t else self.attrs.max_regions

    def _named(self, name: str) -> list[_Target]:
        return [t for t in self._targets.values() if t.spec.name == name]

    def _max_regions(self, t: _Target) -> int:
        m = self.attrs.max_regions if t.max_regions is None else t.max_regions
        return max(self.attrs.min_regions, min(self.attrs.max_regions, m))

    def set_targets(self, specs: Iterable[TargetSpec]) -> None:
        """Replace the set of targets. Processes already watched keep their regions; new
        ones get initial regions now; processes no longer listed are dropped."""
        specs = list(specs)
        wanted = {(s.name, s.labels): s for s in specs}
        for key in list(self._targets):
            if key not in wanted:
                for ref in self._targets.pop(key).processes:
                    self.ops.forget(ref)
        listed: set[ProcessRef] = set()
        for spec in specs:
            t = self._targets.get((spec.name, spec.labels))
            if t is None:
                t = self._targets[(spec.name, spec.labels)] = _Target(spec)
            t.spec = spec
            refs = set(spec.processes)
            listed |= refs
            for ref in list(t.processes):
                if ref not in refs:
                    del t.processes[ref]
                    self.ops.forget(ref)
            t.errors = {r: e for r, e in t.errors.items() if r in refs}
            new = [r for r in sorted(refs) if r not in t.processes and r not in self._failed]
            self._add_processes(t, new)
        # forget failures of processes nobody lists any more (a reused pid is a new ref anyway)
        self._failed = {r: e for r, e in self._failed.items() if r in listed}

    def _add_processes(self, t: _Target, refs: list[ProcessRef]) -> None:
        ranges: dict[ProcessRef, list[AddressRange]] = {}
        for ref in refs:
            try:
                ranges[ref] = self._ranges_of(ref)
            except OpsError as e:
                self._fail(t, ref, e)
        total = t.total_size() + sum(r.size for rs in ranges.values() for r in rs)
        for ref, rs in ranges.items():
            if self.ops.adaptive:
                regions = init_regions(rs, self.attrs.min_regions, total)
            else:
                regions = [Region(a, b) for a, b in rs]
            t.processes[ref] = _Process(ref, regions)

    def _ranges_of(self, ref: ProcessRef) -> list[AddressRange]:
        maps = self.ops.mappings(ref)
        return three_regions(maps) if self.ops.adaptive else normalize(maps, join_touching=False)

    def _fail(self, t: _Target, ref: ProcessRef, e: OpsError) -> None:
        """A process we cannot watch: drop it quietly if gone, remember why otherwise."""
        t.processes.pop(ref, None)
        self.ops.forget(ref)
        if isinstance(e, ProcessGone):
            return
        self._errors[e.kind] += 1
        msg = f"pid {ref.pid}: {e}"
        self._failed[ref] = msg
        t.errors[ref] = msg
        log.warning("target %s: %s", t.spec.name, msg)

    # -- sampling ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Pick one random page per region and clear its accessed state."""
        page = PAGE_SIZE
        rnd = self.rng.randrange
        for t in self._targets.values():
            for p in list(t.processes.values()):
                addrs = []
                for r in p.regions:
                    r.sampling_addr = r.start + rnd((r.end - r.start) // page) * page
                    addrs.append(r.sampling_addr)
                if not addrs:
                    continue
                try:
                    self.ops.prepare_access_checks(p.ref, addrs)
                except OpsError as e:
                    self._fail(t, p.ref, e)

    def check(self) -> None:
        """Read back the pages prepared last time; count hits and valid samples."""
        for t in self._targets.values():
            for p in list(t.processes.values()):
                if not p.regions:
                    continue
                try:
                    results = self.ops.check_accesses(p.ref, [r.sampling_addr for r in p.regions])
                except OpsError as e:
                    self._fail(t, p.ref, e)
                    continue
                for r, hit in zip(p.regions, results):
                    if hit is None:
                        self._discarded += 1
                        continue
                    r.nr_checks += 1
                    if hit:
                        r.nr_accesses += 1
                self._checks += len(results)

    # -- aggregation ---------------------------------------------------------------------

    def aggregate(self) -> MonitorSnapshot:
        """Age, merge, split; publish a snapshot; reset the counters."""
        attrs = self.attrs
        max_acc = attrs.max_nr_accesses
        targets: list[TargetSnapshot] = []
        for t in self._targets.values():
            procs = list(t.processes.values())
            max_regions = self._max_regions(t)
            if self.ops.adaptive:
                threshold = max_acc // 10
                for p in procs:
                    update_age(p.regions, threshold)
                size_limit = region_size_limit(t.total_size(), attrs.min_regions)
                while True:
                    for p in procs:
                        p.regions = merge_regions(p.regions, threshold, size_limit)
                    nr = t.nr_regions()
                    threshold = max(1, threshold * 2)
                    if nr <= max_regions or threshold // 2 >= max_acc:
                        break
                if nr > max_regions:
                    lists = [p.regions for p in procs]
                    force_merge(lists, max_regions)
                self._ensure_min_regions(t)
                self._split(t, max_regions)
            else:
                for p in procs:
                    update_age(p.regions, 0)
            targets.append(self._target_snapshot(t, max_regions))
            for p in procs:
                for r in p.regions:
                    r.last_nr_accesses = r.nr_accesses
                    r.nr_accesses = 0
                    r.nr_checks = 0
        self._aggregations += 1
        snap = MonitorSnapshot(
            backend=self.ops.name,
            taken_at=self.wall_clock(),
            sample_interval=attrs.sample_interval,
            aggregation_interval=attrs.aggregation_interval,
            targets=tuple(targets),
            stats=self.stats(),
            warnings=self._warnings,
        )
        if self._pending_attrs is not None:
            old = self.attrs
            self.attrs, self._pending_attrs = self._pending_attrs, None
            if (old.aggregation_interval, old.max_nr_accesses) != (
                self.attrs.aggregation_interval,
                self.attrs.max_nr_accesses,
            ):
                self._rescale(
                    old.aggregation_interval / self.attrs.aggregation_interval,
                    self.attrs.max_nr_accesses / old.max_nr_accesses,
                )
        self.last_snapshot = snap
        return snap

    def _rescale(self, age_factor: float, accesses_factor: float) -> None:
        """Keep counters meaning the same when the intervals change, as the kernel's
        ``damon_update_monitoring_results()`` does: ages count aggregations, so a longer
        aggregation (the CPU budget stretches it) would otherwise inflate every idle time;
        and ``last_nr_accesses`` is compared with counts on the new scale at the next
        aggregation, where an unscaled value would restart ages for no reason."""
        for t in self._targets.values():
            for p in t.processes.values():
                for r in p.regions:
                    r.age = int(round(r.age * age_factor))
                    r.last_nr_accesses = int(round(r.last_nr_accesses * accesses_factor))

    def _ensure_min_regions(self, t: _Target) -> None:
        """Split the largest regions in two until the target has ``min_regions``.

        The kernel relies on the merge size limit alone, which page rounding and very
        uneven ranges can defeat; we make the lower bound a guarantee (where the target
        has enough pages for it).
        """
        while t.nr_regions() < self.attrs.min_regions:
            best = None
            for p in t.processes.values():
                for i, r in enumerate(p.regions):
                    if r.end - r.start >= 2 * MIN_REGION and (best is None or r.end - r.start > best[2]):
                        best = (p, i, r.end - r.start)
            if best is None:
                return
            p, i, _ = best
            p.regions[i : i + 1] = split_evenly(p.regions[i], 2)

    def _split(self, t: _Target, max_regions: int) -> None:
        """``kdamond_split_regions()``: 2 pieces each, 3 if the count has not moved."""
        nr = t.nr_regions()
        if nr > max_regions // 2:
            t.last_nr_regions = nr
            return
        nr_subs = 3 if (t.last_nr_regions == nr and nr < max_regions // 3) else 2
        for p in t.processes.values():
            p.regions = split_regions(p.regions, nr_subs, self.rng)
        t.last_nr_regions = nr

    def _target_snapshot(self, t: _Target, max_regions: int) -> TargetSnapshot:
        stats: list[RegionStat] = []
        aggr = self.attrs.aggregation_interval
        for p in list(t.processes.values()):
            try:
                resident = self.ops.resident_bytes(p.ref, [(r.start, r.end) for r in p.regions])
            except OpsError as e:
                self._fail(t, p.ref, e)
                continue
            for r, res in zip(p.regions, resident):
                stats.append(
                    RegionStat(
                        pid=p.ref.pid,
                        start=r.start,
                        end=r.end,
                        nr_accesses=r.nr_accesses,
                        nr_checks=r.nr_checks,
                        age=r.age,
                        idle_seconds=idle_seconds(r.nr_accesses, r.age, aggr),
                        resident_bytes=res,
                    )
                )
        errors = tuple(list(t.errors.values())[:MAX_ERRORS_PER_TARGET])
        return summarize_target(
            t.spec.name,
            [ref.pid for ref in t.processes],
            stats,
            cold_age=self.cold_age,
            working_set_window=self.working_set_window,
            aggregated_at=self.wall_clock(),
            labels=t.spec.labels,
            errors=errors,
            max_regions=max_regions,
        )

    # -- updates -------------------------------------------------------------------------

    def update(self) -> None:
        """Re-read every process' mappings and fit its regions to them (set-regions)."""
        for t in self._targets.values():
            for p in list(t.processes.values()):
                try:
                    ranges = self._ranges_of(p.ref)
                except OpsError as e:
                    self._fail(t, p.ref, e)
                    continue
                if self.ops.adaptive:
                    p.regions = set_regions(p.regions, ranges)
                else:
                    p.regions = fixed_regions(p.regions, ranges)
        self._warnings = tuple(self.ops.interference())

    # -- driving -------------------------------------------------------------------------

    def step(self, discover: Callable[[], Iterable[TargetSpec]] | None = None) -> MonitorSnapshot | None:
        """One sample: prepare, wait one sample interval, check; aggregate and update when
        due. Returns the snapshot when this step ended an aggregation."""
        self.prepare()
        self.sleep(self.attrs.sample_interval)
        self.check()
        now = self.clock()
        snap = None
        if now >= self._next_aggregation:
            snap = self.aggregate()
            self._next_aggregation = max(self._next_aggregation + self.attrs.aggregation_interval, now)
        if now >= self._next_update:
            if discover is not None:
                self.set_targets(discover())
            self.update()
            self._next_update = now + self.attrs.update_interval
        return snap

    def run(
        self,
        stop: threading.Event,
        on_snapshot: Callable[[MonitorSnapshot], None],
        discover: Callable[[], Iterable[TargetSpec]] | None = None,
    ) -> None:
        """Sample until ``stop`` is set, handing each snapshot to ``on_snapshot``."""
        if self.sleep is time.sleep:
            self.sleep = stop.wait  # wake at once on stop
        if discover is not None:
            self.set_targets(discover())
        self._warnings = tuple(self.ops.interference())
        while not stop.is_set():
            snap = self.step(discover)
            if snap is not None:
                on_snapshot(snap)

    def stats(self) -> MonitorStats:
        return MonitorStats(
            checks_total=self._checks,
            discarded_total=self._discarded,
            aggregations_total=self._aggregations,
            errors_total=tuple(sorted(self._errors.items())),
        )

    def regions_of(self, name: str) -> dict[ProcessRef, list[tuple[int, int]]]:
        """Current region boundaries of one target (for tests and debugging)."""
        return {
            ref: [(r.start, r.end) for r in p.regions] for t in self._named(name) for ref, p in t.processes.items()
        }

    def target_names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _labels in self._targets))
