"""The clear_refs engine: page-exact referenced-bytes curves from ``clear_refs`` and ``smaps``.

On kernels without idle page tracking (Debian's, most cloud images) this is what ``auto``
picks. Writing ``1`` to ``/proc/PID/clear_refs`` clears the accessed (young) bit of every
PTE of the process and the Referenced flag of its pages; from then on, ``Referenced:`` in
``/proc/PID/smaps`` is, per mapping, the number of bytes touched since (a page whose PTE is
young, or whose page is Young or Referenced; a PMD-mapped THP counts 2 MiB). Read again
without clearing, it only grows: it is the exact size of the set of pages touched since the
clear. That curve, bytes touched within τ of the clear for every τ up to the clear period,
is the working-set-size profile (Brendan Gregg's wss tools), and under a steady pattern it
is also the distribution of idle time: bytes not touched within τ are idle for at least τ.

So, per process, the engine clears once per **clear period** (``max(working_set_window,
2 * cold_age)``, 4 minutes by default, stretched by up to a half so that clears fall
aperiodically: a first touch later than ``cold_age`` after a clear is a proven return from
idleness, so at least half of each period proves returns; each clear comes one sample
interval before an aggregation, see :meth:`ReferencedBytesEngine._aggregates_next`), reads
``smaps`` at every aggregation and at exactly each horizon after the clear, and hands back
one record per mapping whose idle distribution is that curve. A figure at horizon τ is
exact once τ has passed since the clear (:attr:`TargetRecords.measured_at` says when). At
every other aggregation the figure is an estimate held within what the reads prove *now*
(Referenced's growth within τ: touched within τ; Referenced since the clear: at most that),
with the distance to the farther bound in the record's ``present_error_bytes``, so a load
that starts shows at the next aggregation (see :func:`present`, docs/freshness.md). A load
that ends is seen only after the next clear, unless the process stops running: where two
reads find every thread's run time unchanged (:mod:`exporter.procfs.activity`), its private
anonymous memory was touched by nobody in between, and each horizon that quiet spell covers
is exact at once (:func:`only_its_own`). A process (or a mapping) seen for less than τ
has no figure for τ: none of its bytes is called idle that long (the convention of DAMON's
age: idleness is never invented).

Clearing once per period instead of twice a second also spares reclaim: the referenced
information the LRU uses to keep hot pages in memory is erased once per period per page, not
continuously.

What disturbs it (see docs/freshness.md): reclaim, MGLRU aging and the kernel's own DAMON
schemes clear accessed bits too, and so does another writer of ``clear_refs`` for the same
process (a second monitor, CRIU). Each shows as Referenced going *down* between two reads
without the resident bytes going down as much. That is a condition of the node, not an
error of the exporter: the engine counts it per target
(``damon_target_accessed_bits_reset_total``, at every read that sees one, for as long as it
goes on), restarts the period, and until the restarted period is long enough publishes no
figure from before it: what the erased bits said is unknown, so the bytes they concerned
are in the figures' errors (see :meth:`ReferencedBytesEngine._records`).
"""

from __future__ import annotations

import logging
from collections import deque
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from exporter.engines.bookkeeping import Failures
from exporter.engines.clear_refs.curves import (
    MAX_PERIODS,
    period_length,
    period_touched,
    proven_idle,
    fold,
    group_starts,
    RESET_MIN_BYTES,
    Curve,
    Period,
    Point,
    by_share,
    idle_distribution,
    present,
    record_points,
    window_bounds,
    reset_bytes,
)
from exporter.engines.clear_refs.smaps import ProcSmaps, SmapsSource
from exporter.engines.identity import FileMaps, with_frames
from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import Engine, TargetSpec
from exporter.model.errors import OpsError
from exporter.model.policy import DEFAULT_COLD_AGE, DEFAULT_WORKING_SET_WINDOW
from exporter.model.process import ProcessRef
from exporter.model.records import (
    Aggregation,
    EngineStats,
    RegionRecord,
    TargetKey,
    TargetRecords,
)
from exporter.procfs.parsers import SmapsEntry

log = logging.getLogger(__name__)


# -- the engine -------------------------------------------------------------------------------


def only_its_own(m: SmapsEntry) -> bool:
    """Whether only the process' own threads can have touched this mapping's pages: all of
    them anonymous and mapped by it alone (no other process' page tables or read(2) reach
    them). Where the process has not run, such memory is proven untouched; shared memory and
    file pages (the page cache, which any process reads) are not."""
    private = m.private if m.private >= 0 else (m.rss if m.proportional >= m.rss else 0)
    return m.rss > 0 and m.anonymous >= m.rss and private >= m.rss


@dataclass
class _Proc:
    ref: ProcessRef
    period: Period | None = None  # None until the first clear
    previous: Period | None = None  # the last complete period
    smaps: list[SmapsEntry] = field(default_factory=list)  # the last read (folded)
    #: where mappings are folded into groups, the start of each group, fixed for a period
    #: (curves are kept per group); None while the process has few enough mappings
    groups: list[int] | None = None
    regroup: bool = True  # choose the groups again at the next read (set by a clear)
    #: completed periods, newest first: (when it was cleared, {mapping start: bytes
    #: referenced by its end}); what they prove carries idle time past one period
    history: deque = field(default_factory=lambda: deque(maxlen=MAX_PERIODS))
    clears: int = 0  # how many periods began: each one's length (see period_length)
    resets: int = 0  # resets seen on this process (logged loudly once, quietly after)
    #: how much its threads had run at the last read (exporter.procfs.activity), when that
    #: read was, and since when it has provably not run (None: not proven at all)
    activity: object | None = None
    activity_at: float = float("-inf")
    quiet_since: float | None = None


@dataclass
class _Target:
    spec: TargetSpec
    refs: set[ProcessRef] = field(default_factory=set)
    #: reads of its processes that found the accessed bits cleared by someone else
    resets: int = 0


class ReferencedBytesEngine(Engine):
    """Referenced-bytes curves per mapping, one clear per period, for any number of targets."""

    name = "clear_refs"
    uses_region_cap = False  # regions are the mappings; the cost is one smaps read each

    def shortest_counted_return(self, aggregation_interval: float) -> float:
        """Any: a page's Referenced bit keeps a touch of any length until the next clear."""
        return 0.0

    def __init__(
        self,
        source: SmapsSource | None = None,
        attrs: MonitoringAttrs | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.source: SmapsSource = source or ProcSmaps()
        self._attrs = attrs or MonitoringAttrs()
        self._pending_attrs: MonitoringAttrs | None = None
        self.clock = clock
        self.wall_clock = wall_clock
        self._file_maps = FileMaps(clock)
        self.sleep = sleep
        self.horizons: tuple[float, ...] = (DEFAULT_WORKING_SET_WINDOW, DEFAULT_COLD_AGE)
        self.returns_after: float = DEFAULT_COLD_AGE
        self._targets: dict[TargetKey, _Target] = {}
        # one state per process, shared by every target that lists it: two clears of one
        # process would erase each other's curves
        self._procs: dict[ProcessRef, _Proc] = {}
        self._failures = Failures()
        self._reads = 0
        self._aggregations = 0
        self._steps = 0
        self._next_aggregation = clock() + self._attrs.aggregation_interval

    # -- configuration ---------------------------------------------------------------------

    @property
    def attrs(self) -> MonitoringAttrs:
        return self._attrs

    @property
    def clear_period(self) -> float:
        """Seconds between clears: the longest horizon, and twice ``returns_after`` (a
        first touch past ``returns_after`` since the clear proves a return, so half of
        every period counts returns exactly; see summary/promotion.py), at least one
        aggregation."""
        longest = max(max(self.horizons, default=0.0), 2 * self.returns_after)
        return max(longest, self._attrs.aggregation_interval)

    def set_attrs(self, attrs: MonitoringAttrs) -> None:
        if self._steps == 0:
            self._attrs = attrs
            self._next_aggregation = self.clock() + attrs.aggregation_interval
        else:
            self._pending_attrs = attrs

    def set_horizons(self, seconds: Iterable[float], *, returns_after: float | None = None) -> None:
        """A longer period applies from the next clear; a shorter one ends the current
        period at once if it is already that old (both at the next read)."""
        self.horizons = tuple(sorted({float(s) for s in seconds if s > 0}))
        self.returns_after = float(returns_after) if returns_after and returns_after > 0 else 0.0

    def set_targets(self, specs: Iterable[TargetSpec]) -> None:
        specs = list(specs)
        wanted = {s.key: s for s in specs}
        for key in list(self._targets):
            if key not in wanted:
                del self._targets[key]
        listed: set[ProcessRef] = set()
        for spec in specs:
            t = self._targets.get(spec.key)
            if t is None:
                t = self._targets[spec.key] = _Target(spec)
            t.spec = spec
            refs = {r for r in spec.processes if not self._failures.has_failed(r)}
            listed |= set(spec.processes)
            t.refs = refs
            for ref in refs:
                if ref not in self._procs:
                    self._procs[ref] = _Proc(ref)
        for ref in list(self._procs):
            if ref not in listed:
                self._forget(ref)
        self._failures.set_targets(specs)

    def _forget(self, ref: ProcessRef) -> None:
        self._procs.pop(ref, None)
        for t in self._targets.values():
            t.refs.discard(ref)
        self.source.forget(ref)

    def probe(self, proc: ProcessRef) -> None:
        self.source.probe(proc)

    def live_processes(self, key: TargetKey) -> int:
        t = self._targets.get(key)
        return len(t.refs) if t else 0

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> Aggregation | None:
        """Wait one sample interval (the engine's tick); clear, read at horizons and hand
        back the records when due."""
        self._steps += 1
        self.sleep(self._attrs.sample_interval)
        now = self.clock()
        aggregate = now >= self._next_aggregation
        for p in list(self._procs.values()):
            try:
                self._tick(p, now, aggregate)
            except OpsError as e:
                self._fail(p.ref, e)
        if not aggregate:
            return None
        self._next_aggregation = max(self._next_aggregation + self._attrs.aggregation_interval, now)
        agg = self._aggregate(now)
        if self._pending_attrs is not None:
            self._attrs, self._pending_attrs = self._pending_attrs, None
        return agg

    def _clear(self, p: _Proc, now: float) -> None:
        self.source.clear(p.ref)
        p.period = Period(cleared_at=now, cleared_wall=self.wall_clock() - (self.clock() - now))
        p.regroup = True
        p.clears += 1

    def _period_length(self, p: _Proc) -> float:
        """This process' current period: watching for returns, aperiodic (see
        :func:`period_length`); otherwise exactly the clear period."""
        base = self.clear_period
        return period_length(base, p.clears) if self.returns_after > 0 else base

    def _read(self, p: _Proc, now: float) -> list[SmapsEntry]:
        """smaps of ``p``, its mappings folded into at most ``max_regions`` groups: a
        process with 60,000 mappings must not cost 60,000 curves and records. How much its
        threads have run is read first: equal at two reads, it did not run in between."""
        activity = self.source.activity(p.ref)
        if activity is None:
            p.quiet_since = None
        elif activity != p.activity or p.quiet_since is None:
            p.quiet_since = now  # it ran before this read (or nothing is known before it)
        p.activity, p.activity_at = activity, now
        smaps = self.source.read(p.ref)
        cap = max(1, self._attrs.max_regions)
        if p.regroup:
            p.groups = group_starts(smaps, cap) if len(smaps) > cap else None
            p.regroup = False
        return fold(smaps, p.groups) if p.groups is not None else smaps

    def _tick(self, p: _Proc, now: float, aggregate: bool) -> None:
        if p.period is None:
            self._clear(p, now)  # a process' curve starts at its first clear
            if aggregate:
                p.smaps = self._read(p, now)
            return
        elapsed = now - p.period.cleared_at
        due = [h for h in self.horizons if h <= elapsed and h not in p.period.horizons_read]
        end = elapsed >= self._period_length(p) and self._aggregates_next(now, aggregate)
        if not (aggregate or due or end):
            return
        smaps = self._read(p, now)
        self._reads += 1
        lost = reset_bytes(p.period.curves, smaps)
        if lost > max(RESET_MIN_BYTES, sum(c.points[-1].referenced for c in p.period.curves.values() if c.points) // 100):
            self._reset(p, smaps, now, lost)
            return
        # a read made for a horizon stands for the horizon itself: it comes within a tick of
        # it, and the bytes touched in that tick are too few to matter, where recording the
        # read a little late would leave the figure at the horizon to an earlier point
        at = max(due) if due and elapsed - max(due) <= 2 * self._attrs.sample_interval else elapsed
        self._add_points(p.period, smaps, at)
        p.period.horizons_read.update(due)
        p.smaps = smaps
        if end:
            p.previous = p.period
            p.history.appendleft(period_touched(p.period))
            self._clear(p, now)

    def _aggregates_next(self, now: float, aggregate: bool) -> bool:
        """Whether the next tick reads for an aggregation. A period ends only there: right
        after a clear, the memory in use touches itself again, which smaps cannot tell from
        a return; clearing one sample interval before an aggregation confines that doubt to
        the sample interval the aggregation's read ends (see summary/promotion.py), where a
        clear anywhere in an aggregation interval left the whole interval in doubt."""
        upcoming = max(self._next_aggregation + self._attrs.aggregation_interval, now) if aggregate \
            else self._next_aggregation
        return now + self._attrs.sample_interval >= upcoming - 1e-9

    def _reset(self, p: _Proc, smaps: list[SmapsEntry], now: float, lost: int) -> None:
        """Someone else cleared ``p``'s accessed bits: count it for every target that lists
        ``p`` and start again from a clear of our own. The previous periods end before a gap
        nobody measured, so they are dropped: a page touched only in the gap would
        otherwise be proven idle across it."""
        for t in self._targets.values():
            if p.ref in t.refs:
                t.resets += 1
        p.resets += 1
        (log.warning if p.resets == 1 else log.debug)(
            "pid %d: Referenced went down by %d KiB since the last read (reclaim, a kernel DAMON "
            "scheme or another clear_refs writer cleared its accessed bits); its figures restart "
            "(damon_target_accessed_bits_reset_total counts every such read)", p.ref.pid, lost >> 10)
        p.previous = None
        p.history.clear()
        self._clear(p, now)
        # read back at once: the next clear by someone else is then seen at the next read,
        # however soon it comes (a baseline read later would miss one that fell before it)
        p.smaps = self._read(p, now)
        self._reads += 1
        self._add_points(p.period, p.smaps, 0.0)

    def _add_points(self, period: Period, smaps: list[SmapsEntry], elapsed: float) -> None:
        wall = self.wall_clock()
        curves: dict[int, Curve] = {}
        starts = {m.start for m in smaps}
        # a mapping that grew downwards (a merged mmap below it) keeps its end and its curve
        by_end = {c.end: c for s, c in period.curves.items() if s not in starts}
        for m in smaps:
            c = period.curves.get(m.start) or by_end.pop(m.end, None)
            if c is None:
                c = Curve(origin=period.last_read, end=m.end)  # new since the last read
            c.end = m.end
            c.points.append(Point(elapsed - c.origin, m.rss, m.referenced, wall))
            curves[m.start] = c
        period.curves = curves  # mappings that vanished are dropped with their curves
        period.last_read = elapsed

    def _aggregate(self, now: float) -> Aggregation:
        out: list[TargetRecords] = []
        for t in self._targets.values():
            records: list[RegionRecord] = []
            oldest: dict[float, float] = {}
            for ref in sorted(t.refs):
                records += self._records(self._procs[ref], now, oldest)
            refs = {ref.pid: ref for ref in t.refs}
            records = with_frames(records, lambda pid, addrs: self.source.frames(refs[pid], addrs))
            files = self._file_maps.of(records, lambda pid: self.source.maps_text(refs[pid]), self._attrs.update_interval)
            out.append(
                TargetRecords(
                    name=t.spec.name,
                    pids=tuple(sorted({ref.pid for ref in t.refs})),
                    regions=tuple(records),
                    file_mappings=files,
                    aggregated_at=self.wall_clock(),
                    labels=t.spec.labels,
                    errors=self._failures.errors(t.spec.key),
                    not_monitored=self._failures.not_monitored(t.spec),
                    measured_at=tuple(sorted(oldest.items())),
                    max_regions=self._attrs.max_regions,
                    accessed_bits_resets=t.resets,
                )
            )
        self._aggregations += 1
        return Aggregation(
            backend=self.name,
            taken_at=self.wall_clock(),
            sample_interval=self._attrs.sample_interval,
            aggregation_interval=self._attrs.aggregation_interval,
            targets=tuple(out),
            stats=self.stats(),
        )

    def _records(self, p: _Proc, now: float, oldest: dict[float, float]) -> list[RegionRecord]:
        period = p.period
        if period is None:
            return []
        elapsed = now - period.cleared_at
        prev = p.previous.curves if p.previous is not None else {}
        # how long the process has provably not run, up to this aggregation's read (dated by it)
        quiet = now - p.quiet_since if p.quiet_since is not None and p.activity_at == now else 0.0
        read_wall = self.wall_clock()
        out = []
        for m in p.smaps:
            if not m.rss:
                continue
            cur = period.curves.get(m.start)
            at_now = elapsed - (cur.origin if cur else period.last_read)  # in the curve's seconds
            prev_curve = prev.get(m.start)
            pts = record_points(cur, prev_curve, at_now)
            bounds = {h: window_bounds(cur, prev_curve, at_now, h, m.rss) for h in self.horizons}
            dist = proven_idle(idle_distribution(pts, m.rss), cur, p.history, m.start, m.rss, now)
            still = [h for h in self.horizons if h <= quiet] if only_its_own(m) else []
            for h in still:  # touched by nobody within h: exact, whatever the clears' phase
                bounds[h] = (0, 0, 0)
            if still and (not dist or dist[-1][0] < max(still)):
                dist = dist + ((max(still), m.rss),)
            dist, errors = present(dist, bounds, m.rss)
            dist = dist or ((0.0, m.rss),)
            first = next((q for q in pts if q.elapsed > 0), None)  # not a baseline read at the clear
            out.append(
                by_share(RegionRecord(
                    pid=p.ref.pid,
                    start=m.start,
                    end=m.end,
                    resident_bytes=m.rss,
                    # nothing measured yet since the clear: not known touched, not known idle
                    idle_distribution=dist,
                    present_error_bytes=errors,
                    accessed_bytes=first.referenced if first else 0,
                    period_start=period.cleared_wall,
                    period_referenced=cur.points[-1].referenced if cur is not None and cur.points else 0,
                    closed_referenced=prev_curve.points[-1].referenced if prev_curve is not None and prev_curve.points else 0,
                ), m)
            )
            for h in self.horizons:
                at = read_wall if h in still else next((q.wall for q in pts if q.elapsed >= h), None)
                if at is not None and (h not in oldest or at < oldest[h]):
                    oldest[h] = at
        return out

    def _fail(self, ref: ProcessRef, e: OpsError) -> None:
        """A process we cannot watch: drop it quietly if gone, remember why otherwise."""
        owners = [t for t in self._targets.values() if ref in t.refs]
        self._forget(ref)
        self._failures.fail([t.spec.key for t in owners], ref, e)

    def stats(self) -> EngineStats:
        return EngineStats(
            checks_total=self._reads,
            aggregations_total=self._aggregations,
            errors_total=self._failures.totals(),
        )

    def close(self) -> None:
        self.source.close()
