"""The user-space DAMON engine: the kernel's kdamond loop, for many targets at once.

One :class:`Monitor` drives one operations set (page_idle; simulated memory in tests) over
any number of *targets*; a target is a named group of processes (a service, a pod, a
cgroup) whose results add up. Every process has its own sorted list of regions. Per
target, the region count is kept in ``[min_regions, max_regions]`` after each aggregation,
exactly as the kernel keeps one context's count, with two deliberate differences noted
where they happen. It is one :class:`~exporter.model.engine.Engine` among several: it hands
back raw records and knows nothing of working set or cold age.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from exporter.engines.bookkeeping import Failures
from exporter.engines.identity import FileMaps, with_frames
from exporter.engines.page_idle.operations import Operations
from exporter.engines.page_idle.ranges import AddressRange, three_regions
from exporter.engines.page_idle.windows import MAX_SPARSE_BOOST, OpenWindow, WindowPart, allocate, draw, stratum
from exporter.engines.page_idle.regions import (
    MIN_REGION,
    Region,
    force_merge,
    init_regions,
    merge_regions,
    process_size_limit,
    set_regions,
    split_evenly,
    split_regions,
    update_age,
)
from exporter.model.attrs import PAGE_SIZE, MonitoringAttrs
from exporter.model.engine import Engine, TargetSpec
from exporter.model.errors import OpsError
from exporter.model.process import ProcessRef
from exporter.model.records import (
    Aggregation,
    EngineStats,
    PageWindow,
    RegionRecord,
    TargetKey,
    TargetRecords,
)

log = logging.getLogger(__name__)

#: page windows per horizon at most (one per aggregation where aggregations are longer than
#: an eighth of it): a figure at most an eighth of its horizon older than a window ending now
WINDOWS_PER_HORIZON = 8



@dataclass
class _Process:
    ref: ProcessRef
    regions: list[Region] = field(default_factory=list)
    #: the resident bytes of each region the last aggregation read, with the regions' bounds
    #: they were read for: a window opened on the same regions allocates its pages by them
    residency: tuple[tuple[tuple[int, int], ...], list[int]] | None = None


@dataclass
class _Target:
    spec: TargetSpec
    processes: dict[ProcessRef, _Process] = field(default_factory=dict)
    last_nr_regions: int = 0
    max_regions: int | None = None  # lowered by the CPU budget; None = attrs.max_regions
    windows: list[OpenWindow] = field(default_factory=list)
    window_results: dict[float, PageWindow] = field(default_factory=dict)  # the last read

    def nr_regions(self) -> int:
        return sum(len(p.regions) for p in self.processes.values())

    def total_size(self) -> int:
        return sum(r.end - r.start for p in self.processes.values() for r in p.regions)


class Monitor(Engine):
    """DAMON's monitoring loop over an operations set.

    Call :meth:`set_targets` to say what to watch, then :meth:`step` repeatedly (one sample
    each; tests pass a virtual clock and sleep).
    """

    uses_region_cap = True

    def __init__(
        self,
        ops: Operations,
        attrs: MonitoringAttrs | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.ops = ops
        self.name = ops.name  # type: ignore[misc]  # the backend is the operations set's
        self._attrs = attrs or MonitoringAttrs()
        self._pending_attrs: MonitoringAttrs | None = None
        self.rng = rng or random.Random()
        # page windows draw from their own stream: the samples' draws stay what they were
        self._window_rng = random.Random(hash(self.rng.getstate()))
        self.clock = clock
        self._file_maps = FileMaps(clock)
        self.wall_clock = wall_clock
        self.sleep = sleep
        # keyed by (name, labels): a group_by target is several specs sharing one name
        self._targets: dict[TargetKey, _Target] = {}
        self._failures = Failures()
        self._checks = 0
        self._discarded = 0
        self._aggregations = 0
        self._warnings: tuple[str, ...] = ()
        self._steps = 0
        self._horizons: tuple[float, ...] = ()
        self._window_due: dict[float, float] = {}  # horizon -> clock time the next window opens
        now = clock()
        self._next_aggregation = now + self.attrs.aggregation_interval
        self._next_update = now + self.attrs.update_interval

    # -- configuration -------------------------------------------------------------------

    @property
    def attrs(self) -> MonitoringAttrs:
        return self._attrs

    def set_attrs(self, attrs: MonitoringAttrs) -> None:
        """New attributes take effect at the next aggregation, like an online commit; before
        the first step, at once (the attributes the engine starts with)."""
        if self._steps == 0:
            self._attrs = attrs
            now = self.clock()
            self._next_aggregation = now + attrs.aggregation_interval
            self._next_update = now + attrs.update_interval
            self._schedule_windows(now)
            return
        self._pending_attrs = attrs

    def set_horizons(self, seconds: Iterable[float], *, returns_after: float | None = None) -> None:
        """Page windows of these lengths (see :mod:`.windows`), where the operations set has
        them; a horizon no longer asked for stops being measured at once."""
        self._horizons = tuple(sorted({float(s) for s in seconds if s > 0})) if self.ops.page_windows else ()
        self._schedule_windows(self.clock())
        for t in self._targets.values():
            for w in [w for w in t.windows if w.horizon not in self._horizons]:
                self._close_window(t, w)
            for h in list(t.window_results):
                if h not in self._horizons:
                    del t.window_results[h]

    def set_region_cap(self, key: TargetKey, cap: int | None) -> None:
        """Lower one target's region cap (the CPU budget uses this); None restores it."""
        t = self._targets.get(key)
        if t is not None:
            t.max_regions = cap

    def region_cap(self, key: TargetKey) -> int:
        t = self._targets.get(key)
        return self._max_regions(t) if t else self.attrs.max_regions

    def probe(self, proc: ProcessRef) -> None:
        self.ops.mappings(proc)

    def live_processes(self, key: TargetKey) -> int:
        t = self._targets.get(key)
        return len(t.processes) if t else 0

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
            new = [r for r in sorted(refs) if r not in t.processes and not self._failures.has_failed(r)]
            self._add_processes(t, new)
        # forget failures of processes nobody lists any more (a reused pid is a new ref anyway)
        self._failures.set_targets(specs)

    def _add_processes(self, t: _Target, refs: list[ProcessRef]) -> None:
        ranges: dict[ProcessRef, list[AddressRange]] = {}
        for ref in refs:
            try:
                ranges[ref] = self._ranges_of(ref)
            except OpsError as e:
                self._fail(t, ref, e)
        total = t.total_size() + sum(r.size for rs in ranges.values() for r in rs)
        now = self.clock()
        a, cap = self.attrs, self._max_regions(t)
        for ref, rs in ranges.items():
            limit = process_size_limit(sum(r.size for r in rs), total, a.min_regions, cap)
            t.processes[ref] = _Process(ref, init_regions(rs, a.min_regions, limit, now=now))

    def _ranges_of(self, ref: ProcessRef) -> list[AddressRange]:
        maps = self.ops.mappings(ref)
        return three_regions(maps)

    def _fail(self, t: _Target, ref: ProcessRef, e: OpsError) -> None:
        """A process we cannot watch: drop it quietly if gone, remember why otherwise."""
        t.processes.pop(ref, None)
        self.ops.forget(ref)
        self._failures.fail([t.spec.key], ref, e)

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
        """Read back the pages prepared last time; count hits and valid samples. A hit also
        stamps the region's last access with the time of this check: the access happened
        during the sample interval that ends now, so idle time is never overstated."""
        now = self.clock()
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
                        r.last_access = now
                        r.seen = True
                self._checks += len(results)

    # -- aggregation ---------------------------------------------------------------------

    def aggregate(self) -> Aggregation:
        """Age, merge, split; hand back the raw records; reset the counters."""
        attrs = self.attrs
        max_acc = attrs.max_nr_accesses
        if self._horizons:
            self._read_due_windows(self.clock())
        targets: list[TargetRecords] = []
        for t in self._targets.values():
            procs = list(t.processes.values())
            max_regions = self._max_regions(t)
            threshold = max_acc // 10
            for p in procs:
                update_age(p.regions, threshold)
            total = t.total_size()
            limits = [process_size_limit(sum(r.size for r in p.regions), total, attrs.min_regions, max_regions)
                      for p in procs]
            while True:
                for p, limit in zip(procs, limits):
                    p.regions = merge_regions(p.regions, threshold, limit)
                nr = t.nr_regions()
                threshold = max(1, threshold * 2)
                if nr <= max_regions or threshold // 2 >= max_acc:
                    break
            if nr > max_regions:
                lists = [p.regions for p in procs]
                force_merge(lists, max_regions)
            self._ensure_min_regions(t)
            nr_merged = t.nr_regions()
            self._split(t, max_regions)
            targets.append(self._target_records(t, max_regions, nr_merged))
            for p in procs:
                for r in p.regions:
                    r.last_nr_accesses = r.nr_accesses
                    r.nr_accesses = 0
                    r.nr_checks = 0
        self._aggregations += 1
        agg = Aggregation(
            backend=self.ops.name,
            taken_at=self.wall_clock(),
            sample_interval=attrs.sample_interval,
            aggregation_interval=attrs.aggregation_interval,
            targets=tuple(targets),
            stats=self.stats(),
            warnings=self._warnings,
            access_per_page=self.ops.access_per_page,
        )
        if self._pending_attrs is not None:
            old = self.attrs
            self._attrs, self._pending_attrs = self._pending_attrs, None
            if (old.aggregation_interval, old.max_nr_accesses) != (
                self.attrs.aggregation_interval,
                self.attrs.max_nr_accesses,
            ):
                self._rescale(
                    old.aggregation_interval / self.attrs.aggregation_interval,
                    self.attrs.max_nr_accesses / old.max_nr_accesses,
                )
        return agg

    def _rescale(self, age_factor: float, accesses_factor: float) -> None:
        """Keep counters meaning the same when the intervals change, as the kernel's
        ``damon_update_monitoring_results()`` does: ages count aggregations, and
        ``last_nr_accesses`` is compared with counts on the new scale at the next
        aggregation, where an unscaled value would restart ages for no reason.

        Idle time does not depend on this: it is kept as a clock time per region
        (:attr:`Region.last_access`), which means the same at any interval. The rounding
        here (an age of 1 at a factor of 0.5 becomes 0) touches only the reported ``age``."""
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

    def _target_records(self, t: _Target, max_regions: int, nr_merged: int = 0) -> TargetRecords:
        stats: list[RegionRecord] = []
        now = self.clock()
        for p in list(t.processes.values()):
            bounds = tuple((r.start, r.end) for r in p.regions)
            try:
                resident = self.ops.resident_bytes(p.ref, list(bounds))
            except OpsError as e:
                self._fail(t, p.ref, e)
                continue
            p.residency = (bounds, [res.bytes for res in resident])
            for r, res in zip(p.regions, resident):
                stats.append(
                    RegionRecord(
                        pid=p.ref.pid,
                        start=r.start,
                        end=r.end,
                        nr_accesses=r.nr_accesses,
                        nr_checks=r.nr_checks,
                        age=r.age,
                        idle_seconds=r.idle_seconds(now),
                        seen_accessed=r.seen,
                        resident_bytes=res.bytes,
                        shared_bytes=res.shared,
                    )
                )
        refs = {ref.pid: ref for ref in t.processes}
        return TargetRecords(
            name=t.spec.name,
            pids=tuple(sorted({ref.pid for ref in t.processes})),
            regions=tuple(with_frames(stats, lambda pid, addrs: self.ops.frames(refs[pid], addrs))),
            file_mappings=self._file_maps.of(stats, lambda pid: self.ops.maps_text(refs[pid]), self.attrs.update_interval),
            aggregated_at=self.wall_clock(),
            labels=t.spec.labels,
            errors=self._failures.errors(t.spec.key),
            not_monitored=self._failures.not_monitored(t.spec),
            max_regions=max_regions,
            nr_merged=nr_merged,
            windows=tuple(t.window_results[h] for h in sorted(t.window_results)),
        )

    # -- page windows --------------------------------------------------------------------

    def _window_period(self, horizon: float) -> float:
        """Seconds between two windows of ``horizon``: one aggregation, or as many as make an
        eighth of the horizon where aggregations are shorter (the test guest's 100 ms), so
        windows cost a bounded share of the samples' work whatever the intervals."""
        a = self.attrs.aggregation_interval
        return a * max(1, math.ceil(horizon / WINDOWS_PER_HORIZON / a - 1e-9))

    def _schedule_windows(self, now: float) -> None:
        """Open a window per horizon ``h`` at times ``T - h`` where ``T`` is an upcoming
        aggregation: every window is read at an aggregation, exactly ``h`` old (to a sample
        interval), so that aggregation publishes the last ``h`` seconds, as a window
        ending then would; the ones between republish it (at most one period old)."""
        # a window opened up to a sample interval late is read on time (see _read_due_windows)
        earliest = now - self.attrs.sample_interval
        for h in self._horizons:
            if self._window_due.get(h, -math.inf) >= earliest:
                continue  # one is already planned: keep its rhythm
            period = self._window_period(h)
            due = self._next_aggregation - h
            if due < earliest:
                due += math.ceil((earliest - due) / period) * period
            self._window_due[h] = due

    def _open_due_windows(self, now: float) -> None:
        for h in self._horizons:
            if now >= self._window_due.get(h, float("inf")):
                for t in self._targets.values():
                    t.windows.append(self._open_window(t, h, now))
                self._window_due[h] += self._window_period(h)

    def _read_due_windows(self, now: float) -> None:
        """At an aggregation: read the windows a horizon old (a sample interval's slack: a
        window opens at the first step at or after its time)."""
        slack = self.attrs.sample_interval
        for t in self._targets.values():
            for w in [w for w in t.windows if now >= w.opened_at + w.horizon - slack]:
                t.window_results[w.horizon] = self._read_window(t, w)
                self._close_window(t, w)

    def _open_window(self, t: _Target, horizon: float, now: float) -> OpenWindow:
        w = OpenWindow(horizon, now, self.wall_clock())
        procs = [p for p in list(t.processes.values()) if p.regions]
        resident: dict[ProcessRef, list[int]] = {}
        for p in procs:
            bounds = tuple((r.start, r.end) for r in p.regions)
            if p.residency is not None and p.residency[0] == bounds:
                resident[p.ref] = p.residency[1]  # what the aggregation just read: only to allocate
                continue
            try:
                resident[p.ref] = [r.bytes for r in self.ops.resident_bytes(p.ref, list(bounds))]
            except OpsError as e:
                self._fail(t, p.ref, e)
        live = [p for p in procs if p.ref in resident]
        flat = [(r.start, r.end, res) for p in live for r, res in zip(p.regions, resident[p.ref])]
        present = self.ops.draws_present
        counts = allocate(flat, boost=1 if present else MAX_SPARSE_BOOST)
        at = 0
        for p in live:
            strata, addrs = [], []
            mine, at = counts[at:at + len(p.regions)], at + len(p.regions)
            for r, n in zip(p.regions, mine):
                found: tuple[list[int], float] | None = None
                if n and present:
                    try:
                        found = self.ops.present_pages(p.ref, r.start, r.end, n, self._window_rng)
                    except OpsError as e:
                        self._fail(t, p.ref, e)
                        break
                picked, count = found if found is not None else (draw(r.start, r.end, n, self._window_rng) if n else [], None)
                strata.append((r.start, r.end, len(picked), count))
                addrs.extend(picked)
            else:
                try:
                    w.parts[p.ref] = WindowPart(self.ops.open_window(p.ref, addrs), strata)
                except OpsError as e:
                    self._fail(t, p.ref, e)
        return w

    def _read_window(self, t: _Target, w: OpenWindow) -> PageWindow:
        out = []
        for ref, part in w.parts.items():
            if ref not in t.processes:
                continue
            try:
                results = self.ops.read_window(part.handle)
                pieces, i = [], 0
                for start, end, n, count in part.strata:
                    got = results[i:i + n]
                    # a stratum drawn among present pages counts its resident bytes from the
                    # pages it read; only the others need the sampled residency
                    pieces.append((start, end, got, count, count is None or all(a is None for a, _ in got)))
                    i += n
                need = [(s, e) for s, e, _, _, sampled in pieces if sampled]
                resident = iter(self.ops.resident_bytes(ref, need) if need else ())
            except OpsError as e:
                self._fail(t, ref, e)
                continue
            for start, end, got, count, sampled in pieces:
                out.append(stratum(ref.pid, start, end, next(resident).bytes if sampled else 0, got, count))
        return PageWindow(w.horizon, w.opened_wall, self.wall_clock(), tuple(out))

    def _close_window(self, t: _Target, w: OpenWindow) -> None:
        for ref, part in w.parts.items():
            if ref in t.processes:
                self.ops.close_window(part.handle)
        if w in t.windows:
            t.windows.remove(w)

    # -- updates -------------------------------------------------------------------------

    def update(self) -> None:
        """Re-read every process' mappings and fit its regions to them (set-regions); memory
        that is new to us starts fresh, watched from now."""
        now = self.clock()
        for t in self._targets.values():
            for p in list(t.processes.values()):
                try:
                    ranges = self._ranges_of(p.ref)
                except OpsError as e:
                    self._fail(t, p.ref, e)
                    continue
                p.regions = set_regions(p.regions, ranges, now)
        self._warnings = tuple(self.ops.interference())

    # -- driving -------------------------------------------------------------------------

    def step(self) -> Aggregation | None:
        """One sample: prepare, wait one sample interval, check; aggregate and update the
        regions to the mappings when due. Returns the records when this step ended an
        aggregation."""
        if self._steps == 0:
            self._warnings = tuple(self.ops.interference())
        self._steps += 1
        self.prepare()
        self.sleep(self.attrs.sample_interval)
        self.check()
        now = self.clock()
        agg = None
        if now >= self._next_aggregation:
            agg = self.aggregate()
            self._next_aggregation = max(self._next_aggregation + self.attrs.aggregation_interval, now)
            self._schedule_windows(now)
        if self._horizons:
            self._open_due_windows(now)
        if now >= self._next_update:
            self.update()
            self._next_update = now + self.attrs.update_interval
        return agg

    def interference(self) -> list[str]:
        return self.ops.interference()

    def close(self) -> None:
        self.ops.close()

    def stats(self) -> EngineStats:
        return EngineStats(
            checks_total=self._checks,
            discarded_total=self._discarded,
            aggregations_total=self._aggregations,
            errors_total=self._failures.totals(),
        )

    def regions_of(self, name: str) -> dict[ProcessRef, list[tuple[int, int]]]:
        """Current region boundaries of every target called ``name`` (for tests and debugging)."""
        return {
            ref: [(r.start, r.end) for r in p.regions]
            for t in self._targets.values()
            if t.spec.name == name
            for ref, p in t.processes.items()
        }
