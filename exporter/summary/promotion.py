"""Cold memory that comes back: bytes that had been idle, seen accessed again, by how long
they had been idle (the *promotion rate* of far-memory systems at any threshold T).

The engines' records say, at each aggregation, which memory is accessed *now*; whether it
was idle *before*, and for how long, is history the records do not carry. This tracker
keeps that history per target, per process, per address range: an inventory of bytes, each
band with the time it was last known accessed (``since``). At every aggregation it matches
the new records against the previous inventory and moves bytes between "accessed" and
"idle", so that

- bytes accessed now are taken first from the youngest bands (memory that was hot stays
  hot: a region accessed at the last aggregation and again now returns from nothing);
- bytes taken from bands that were idle at the last aggregation *return from idleness*,
  once, with the idle time they had then (``since`` to the last aggregation: a lower bound,
  as every idle time here is).

How much is accessed now depends on what the engine sees:

- **DAMON's regions** (page_idle, damon_sysfs): a region with an access in its samples is
  accessed as a whole, which for a coarse region just revived is mostly not true. So bytes
  a region brings back are *pending* for ``settle`` aggregations while DAMON splits the
  region: pieces that read idle again give their bytes back to the idle age they had
  (they were not the part that was used), and only what is still in accessed regions at the
  end counts. A revived region that never splits finer is counted whole; the share of its
  samples that saw no access (``1 - nr_accesses / nr_checks``) is counted as the error.
- **Referenced bytes** (clear_refs): first touches since the last clear are exact byte
  counts per mapping, and bytes untouched since a clear are proven idle since it. Bytes
  touched in one clear period are known idle only since the next clear (their last touch
  in the period is not visible), which makes every idle age a lower bound and counts
  nothing twice; a return is seen once per clear period at most. A first touch at least
  ``cold_age`` after a clear is a proven return; before that, returns are estimated at the
  rate the last periods proved them (see :meth:`PromotionTracker._referenced`).

Memory that leaves (freed, reclaimed) leaves from the oldest bands first, as reclaim takes
it; memory that appears is accessed now (a fault is an access) and returns from nothing.
Everything is bounded by the records: at most ``MAX_BANDS`` bands per record kept, and state
only for the targets and processes of the last aggregation.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from exporter.model.records import RegionRecord
from exporter.summary.bands import IDLE_AGE_BUCKETS, idle_bands
from exporter.summary.sampling import rate_lower, rate_upper

#: bands kept per address range (the closest in age merge, their ages averaged by bytes)
MAX_BANDS = 6
#: pieces of history smaller than a page are folded into their neighbours
SLIVER_BYTES = 4096
#: aggregations a revived region's bytes stay pending while DAMON splits it
SETTLE_AGGREGATIONS = 5
#: referenced bytes: the returns expected before cold_age after a clear, as a multiple of
#: what the proved rate gives. The estimate is capped by the first touches seen as well, so
#: a rate read low (a few returns in a short window) would bias it low; what is counted
#: past the rate is never more than was touched first, and all of it is in the error
ESTIMATE_MARGIN = 1.5


@dataclass(frozen=True)
class Promotions:
    """A target's returns from idleness since the exporter began watching it (counters)."""

    #: bytes that had been idle at least ``cold_age`` when seen accessed again
    promoted_bytes: float = 0.0
    #: how many of those the evidence does not pin down (see the module docstring)
    promoted_error_bytes: float = 0.0
    #: cumulative (le, bytes) by the idle time they returned from; IDLE_AGE_BUCKETS
    histogram: tuple[tuple[float, float], ...] = tuple((b, 0.0) for b in IDLE_AGE_BUCKETS)
    #: byte-seconds (the histogram's _sum); the _count is the +Inf bucket
    idle_sum: float = 0.0

    @property
    def count(self) -> float:
        return self.histogram[-1][1]


@dataclass(slots=True)
class _Band:
    nbytes: float
    since: float  # wall time last known accessed
    #: pending (DAMON regions): the idle age the bytes returned from, and when they did
    pending_age: float | None = None
    revived_at: float = 0.0
    idle_since: float = 0.0  # pending: ``since`` before the return, restored if it was not one
    #: pending: the region that came back (when, where) and the share of its samples that
    #: saw the access then; its pieces are told apart from other returns by it
    origin: tuple[float, int, int] = (0.0, 0, 0)
    revived_frequency: float = 1.0
    #: referenced bytes: touched in the current clear period (known idle only since the next)
    touched: bool = False
    #: pending: bytes of the region that came back that were in use at the last aggregation
    #: (a region that grew over idle memory at the edge of what is used holds some), and
    #: their share of it. Its hits may all be theirs: a total of the return, not of this
    #: band, so :meth:`part` copies it whole
    in_use_bytes: float = 0.0
    in_use_share: float = 0.0
    #: pending: bytes of the region that came back that may have been in use all along
    #: while they read idle, unseen: ``n`` checks of it in that time that saw nothing leave
    #: up to ``rate_upper(n, 0)`` of its idle pages used per interval (a few hot pages in a
    #: region mostly idle: the edge of a used part). A later split may isolate exactly those
    #: pages, hit at every sample; their hits are then no return. A total of the return,
    #: like ``in_use_bytes``
    unseen_bytes: float = 0.0
    #: the bytes of the region these bytes were last seen idle in: the unseen use its
    #: checks leave possible may lie anywhere in it, all of it in these bytes
    watched: float = 0.0
    #: pending: what the same samples prove of that share at the least (``rate_lower``): one
    #: hit in twenty checks is a share of 5% as counted, and of 0.26% as proven
    revived_lower: float = 1.0

    def part(self, nbytes: float) -> "_Band":
        return _Band(nbytes, self.since, self.pending_age, self.revived_at, self.idle_since, self.origin,
                     self.revived_frequency, self.touched, self.in_use_bytes, self.in_use_share, self.unseen_bytes,
                     self.watched, self.revived_lower)


@dataclass(slots=True)
class _Segment:
    start: int
    end: int
    bands: list[_Band]
    frequency: float = 1.0  # share of the record's samples that saw an access
    referenced: float = 0.0  # distribution records: bytes referenced in the period
    #: referenced bytes: returns proven this period (first touches at least ``cold_age``
    #: after the clear), the same over past periods, and the returns that rate leads to
    #: expect in the part of the current period before ``cold_age`` (see _referenced)
    proven: float = 0.0
    proven_sum: float = 0.0  # proven per period, halved at each clear (a smoothed sum)
    expected: float = 0.0


@dataclass
class _Process:
    segments: list[_Segment]
    observed_at: float
    period_start: float = 0.0
    #: referenced bytes: seconds of the current period in which a first touch proves a
    #: return (those at least ``cold_age`` after the clear)
    proving: float = 0.0
    proving_sum: float = 0.0  # the same over past periods, halved at each clear


@dataclass
class _Counts:
    promoted: float = 0.0
    error: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(IDLE_AGE_BUCKETS))
    idle_sum: float = 0.0

    def add(self, age: float, nbytes: float, cold_age: float, error: float = 0.0) -> None:
        age = max(0.0, age)
        if age >= cold_age:
            self.promoted += max(0.0, nbytes)
            self.error += max(0.0, error)
        if nbytes <= 0:
            return
        self.buckets[bisect.bisect_left(IDLE_AGE_BUCKETS, age)] += nbytes
        self.idle_sum += age * nbytes

    def frozen(self) -> Promotions:
        acc, out = 0.0, []
        for b, c in zip(IDLE_AGE_BUCKETS, self.buckets):
            acc += c
            out.append((b, acc))
        return Promotions(self.promoted, self.error, tuple(out), self.idle_sum)


@dataclass
class _Target:
    processes: dict[int, _Process] = field(default_factory=dict)
    counts: _Counts = field(default_factory=_Counts)


def _frequency(r: RegionRecord) -> float:
    if r.nr_accesses <= 0:
        return 0.0
    return min(1.0, r.nr_accesses / r.nr_checks) if r.nr_checks else 1.0


def _first_bands(r: RegionRecord, now: float) -> list[_Band]:
    """What a record says of its bytes' idle times the first time its range is seen."""
    if r.idle_distribution:  # bytes touched before its first point: touched this period
        return [_Band(float(b), now - s, touched=(s == 0)) for s, b in idle_bands(r) if b > 0]
    if r.nr_accesses > 0:
        return [_Band(float(r.resident_bytes), now)]
    return [_Band(float(r.resident_bytes), now - r.idle_seconds)]


def _take(bands: list[_Band], nbytes: float) -> tuple[list[_Band], list[_Band]]:
    """``nbytes`` from the front of ``bands`` (split where needed) and the rest."""
    taken: list[_Band] = []
    rest: list[_Band] = []
    for b in bands:
        if nbytes <= 0:
            rest.append(b)
        elif b.nbytes <= nbytes:
            taken.append(b)
            nbytes -= b.nbytes
        else:
            taken.append(b.part(nbytes))
            rest.append(b.part(b.nbytes - nbytes))
            nbytes = 0
    return taken, rest


def _share(bands: Sequence[_Band], weights: Sequence[float]) -> list[list[_Band]]:
    """``bands`` split over records in proportion to ``weights``."""
    total = sum(weights)
    out: list[list[_Band]] = []
    for w in weights:
        f = w / total if total > 0 else 0.0
        out.append([b.part(b.nbytes * f) for b in bands if b.nbytes * f > 0])
    return out


def _compact(bands: list[_Band]) -> list[_Band]:
    """At most MAX_BANDS bands: equal ones joined, slivers under a page folded into the
    largest, then the two closest in age averaged (by bytes) until few enough remain."""
    merged: dict[tuple, _Band] = {}
    for b in bands:
        if b.nbytes <= 0:
            continue
        k = (b.since, b.pending_age, b.revived_at, b.idle_since, b.origin, b.touched)
        if k in merged:
            merged[k].nbytes += b.nbytes
        else:
            merged[k] = b.part(b.nbytes)
    out = sorted(merged.values(), key=lambda b: (b.pending_age is not None, b.touched, b.since))
    slivers = [b for b in out if b.nbytes < SLIVER_BYTES]
    if slivers and len(slivers) < len(out):
        out = [b for b in out if b.nbytes >= SLIVER_BYTES]
        max(out, key=lambda b: b.nbytes).nbytes += sum(b.nbytes for b in slivers)
    while len(out) > MAX_BANDS:
        best, at = math.inf, -1
        for i in range(len(out) - 1):
            a, c = out[i], out[i + 1]
            if (a.pending_age is None) != (c.pending_age is None) or a.touched != c.touched:
                continue
            if c.since - a.since < best:
                best, at = c.since - a.since, i
        if at < 0:  # one pending band and the rest not: join the two oldest of the rest
            at = 0
        out[at:at + 2] = [_average(out[at], out[at + 1])]
    return out


def _average(a: _Band, c: _Band) -> _Band:
    n = a.nbytes + c.nbytes
    wa, wc = a.nbytes / n, c.nbytes / n
    out = _Band(n, a.since * wa + c.since * wc, touched=a.touched and c.touched, watched=max(a.watched, c.watched))
    if a.pending_age is not None and c.pending_age is not None:
        out.pending_age = a.pending_age * wa + c.pending_age * wc
        out.revived_at = max(a.revived_at, c.revived_at)
        out.idle_since = a.idle_since * wa + c.idle_since * wc
        big = a if a.nbytes >= c.nbytes else c
        out.origin, out.revived_frequency, out.revived_lower = big.origin, big.revived_frequency, big.revived_lower
        out.in_use_bytes, out.in_use_share = big.in_use_bytes, big.in_use_share
        out.unseen_bytes = big.unseen_bytes
    return out


def _inherit(old: Sequence[_Segment], starts: Sequence[int], r: RegionRecord) -> tuple[list[_Band], _Segment]:
    """The bands of the old segments ``r`` overlaps, each in proportion to the share of its
    address range inside ``r`` (and, likewise shared, their per-period sums in a segment
    for ``r``): history follows addresses through DAMON's splits and merges, and never
    spreads beyond them."""
    bands: list[_Band] = []
    acc = _Segment(r.start, r.end, [])
    i = bisect.bisect_right(starts, r.start) - 1  # starts: the old segments', sorted
    for seg in old[max(0, i):]:
        if seg.start >= r.end:
            break
        lo, hi = max(seg.start, r.start), min(seg.end, r.end)
        if hi <= lo:
            continue
        f = (hi - lo) / (seg.end - seg.start)
        bands += [b.part(b.nbytes * f) for b in seg.bands]
        acc.referenced += seg.referenced * f
        acc.proven += seg.proven * f
        acc.proven_sum += seg.proven_sum * f
        acc.expected += seg.expected * f
    return bands, acc


def _count_return(members: Sequence[tuple[_Band, _Segment]], cold_age: float, counts: _Counts) -> None:
    """One return's idle bytes, decided (see :meth:`PromotionTracker._settle`): each band
    counted at its largest frequency, with an error that reaches both the bytes proven back
    (the hits beyond what the memory in use explains, youngest band first) and every byte.
    In a piece that reads idle again, the bytes counted back were used when it was last seen
    accessed (``since``); the rest keeps the idle time it had, so that it is not counted
    as back twice."""
    head = members[0][0]
    keep = 1.0 - head.in_use_share
    hit = sum(b.nbytes * b.revived_lower for b, _ in members) / keep if keep > 0 else 0.0
    left = max(0.0, hit - head.in_use_bytes - head.unseen_bytes)
    for b, seg in sorted(members, key=lambda m: m[0].pending_age or 0.0):
        proven = min(b.nbytes, left)
        left -= proven
        back = b.nbytes * b.revived_frequency
        counts.add(b.pending_age or 0.0, back, cold_age, error=max(back - proven, b.nbytes - back))
        b.pending_age = None
        if seg.frequency <= 0 and back < b.nbytes:
            rest = b.part(b.nbytes - back)
            rest.since = b.idle_since
            b.nbytes = back
            seg.bands.append(rest)


class PromotionTracker:
    """Per target history of idle times, fed each aggregation's records (post-sharing, as
    the summary counts them). Owned by the sampler (or a CLI run) and called from one
    thread; what it returns is immutable."""

    def __init__(self, settle_aggregations: int = SETTLE_AGGREGATIONS) -> None:
        self.settle_aggregations = settle_aggregations
        self._targets: dict[object, _Target] = {}

    def retain(self, keys: Iterable[object]) -> None:
        """Forget targets not in ``keys`` (a target that comes back starts from zero, which
        Prometheus reads as a counter reset)."""
        keep = set(keys)
        for k in [k for k in self._targets if k not in keep]:
            del self._targets[k]

    def observe(self, key: object, regions: Sequence[RegionRecord], now: float, cold_age: float,
                aggregation_interval: float) -> Promotions:
        t = self._targets.setdefault(key, _Target())
        by_pid: dict[int, list[RegionRecord]] = {}
        for r in regions:
            if r.resident_bytes > 0 and r.end > r.start:
                by_pid.setdefault(r.pid, []).append(r)
        settle = self.settle_aggregations * aggregation_interval
        for pid in [p for p in t.processes if p not in by_pid]:
            del t.processes[pid]  # exited: pending bytes go with it
        for pid, recs in by_pid.items():
            p = t.processes.get(pid)
            if p is None:
                t.processes[pid] = _Process([self._fresh(r, now) for r in sorted(recs, key=lambda r: r.start)], now,
                                            max((r.period_start for r in recs), default=0.0))
                continue
            self._advance(p, recs, now, cold_age, t.counts, aggregation_interval)
        self._settle([seg for p in t.processes.values() for seg in p.segments], now, settle, cold_age, t.counts)
        for p in t.processes.values():
            for seg in p.segments:
                seg.bands = _compact(seg.bands)
        return t.counts.frozen()

    @staticmethod
    def _fresh(r: RegionRecord, now: float) -> _Segment:
        return _Segment(r.start, r.end, _first_bands(r, now), _frequency(r), float(r.period_referenced))

    def _advance(self, p: _Process, recs: list[RegionRecord], now: float, cold_age: float, counts: _Counts,
                 aggregation_interval: float = 0.0) -> None:
        prev = p.observed_at
        period = max((r.period_start for r in recs), default=0.0)
        new_period = period > p.period_start
        if new_period and p.period_start > 0 and any(r.closed_referenced for r in recs):
            # first touches between the last period's last aggregation and its clear are
            # seen only by its last read: taken as of the clear, in that period, first
            closing = [replace(r, period_start=p.period_start, period_referenced=r.closed_referenced)
                       if r.idle_distribution else r for r in recs]
            self._advance(p, closing, max(prev, period), cold_age, counts, aggregation_interval)
            prev = p.observed_at
        if new_period and p.period_start > 0:
            # a clear: what was touched in the last period is known idle since the clear only;
            # the returns proved in the last periods give those expected before cold_age
            p.proving_sum = p.proving_sum / 2 + p.proving
            for seg in p.segments:
                for b in seg.bands:
                    if b.touched:
                        b.since, b.touched = period, False
                seg.proven_sum = seg.proven_sum / 2 + seg.proven
                if seg.proven_sum < SLIVER_BYTES:  # long past: expect nothing
                    seg.proven_sum = 0.0
                seg.proven = 0.0
                seg.expected = ESTIMATE_MARGIN * seg.proven_sum / p.proving_sum * cold_age if p.proving_sum > 0 else 0.0
            p.proving = 0.0
        segments: list[_Segment] = []
        starts = [seg.start for seg in p.segments]  # once per process, not once per record
        proving = period > 0 and prev - period >= cold_age  # a first touch now proves a return
        if proving:
            p.proving += now - prev
        for r in sorted(recs, key=lambda r: r.start):
            inv, old = _inherit(p.segments, starts, r)
            if not inv:
                segments.append(self._fresh(r, now))  # a range new to us: no history, no return
                continue
            have, total = sum(b.nbytes for b in inv), float(r.resident_bytes)
            if total < have:  # memory left: reclaim and frees take the oldest first
                inv.sort(key=lambda b: b.since)
                _, inv = _take(inv, have - total)
            elif total > have:  # memory came: faulted in now
                inv.append(_Band(total - have, now))
            if r.idle_distribution:
                if new_period:
                    old.referenced = 0.0
                segments.append(self._referenced(r, inv, old, now, prev, period, cold_age, counts, aggregation_interval))
            else:
                segments.append(self._sampled(r, inv, now, prev))
        p.segments, p.observed_at = segments, now
        p.period_start = max(p.period_start, period)

    @staticmethod
    def _sampled(r: RegionRecord, inv: list[_Band], now: float, prev: float) -> _Segment:
        """A DAMON region: accessed as a whole, or idle as a whole, as DAMON sees it; what
        comes back is pending until the splits tell (see :meth:`_settle`)."""
        f = _frequency(r)
        lower = rate_lower(r.nr_checks, min(r.nr_accesses, r.nr_checks)) if r.nr_checks else f
        total = sum(b.nbytes for b in inv)
        if f > 0:
            back = [b.pending_age is None and b.since < prev for b in inv]  # idle at the last aggregation
            in_use = total - sum(b.nbytes for b, k in zip(inv, back) if k)
            per_second = r.nr_checks / (now - prev) if now > prev else 0.0  # the region's checks
            unseen = sum(min(b.nbytes, max(b.nbytes, b.watched) * rate_upper(int((prev - b.since) * per_second), 0))
                         for b, k in zip(inv, back) if k)
            for b, k in zip(inv, back):
                if k:
                    b.pending_age, b.revived_at, b.idle_since = prev - b.since, now, b.since
                    b.origin, b.revived_frequency, b.revived_lower = (now, r.pid, r.start), f, lower
                    b.in_use_bytes, b.in_use_share = in_use, in_use / total if total > 0 else 0.0
                    b.unseen_bytes = unseen
                elif b.pending_age is not None:  # the aggregation it was used throughout tells best
                    b.revived_frequency = max(b.revived_frequency, f)
                    b.revived_lower = max(b.revived_lower, lower)
                b.since = now
        else:
            for b in inv:
                b.watched = total
        return _Segment(r.start, r.end, inv, f)

    @staticmethod
    def _settle(segments: list[_Segment], now: float, settle: float, cold_age: float, counts: _Counts) -> None:
        """Decide the pending returns, one return (its origin: the region that came back) at a
        time, from what DAMON's splits found since:

        - pieces that read idle while another piece of the same return is accessed were not
          the part that was used: back to the idle time they had;
        - once every piece reads idle (the access ended), or after ``settle`` seconds of
          access, the return is decided at once, by what the samples prove:

          - its pieces' bytes hit, each piece at the largest share of its pages the samples
            of one aggregation since prove used (``rate_lower``: one hit in twenty proves
            far less than the 5% it counts at; history spreads over a region by address,
            so the pieces hold the region's bytes in use in the same share as its idle
            ones: the hits of a piece are its idle bytes' hits over ``1 - in_use_share``);
          - less the bytes the region held that were in use at the last aggregation, which
            may be all that was hit (a region growing over idle memory at the edge of what
            is used reads as accessed with nothing back), and less what its idle bytes may
            have held in use unseen: the checks that found them idle bound that share
            (``unseen_bytes``), and hits no more than it prove nothing back;
          - what is left is proven back, given to the idle bands youngest first (what was
            used lately is the likelier to be used again, as clear_refs' lower bound takes
            it), so the oldest bytes, the promotions, are proven only where the hits leave
            no other explanation;
          - each band is counted at its frequency (the hits spread over its bytes as over
            the region's), with an error wide enough to reach down to what is proven and up
            to every byte of it, since any may have been used unseen. The counter minus its
            error is thus never above what the hits prove: memory in steady use that a
            merge mixed with idle memory brackets no return. A region that never split
            finer counts as much as its samples say: exact for memory used throughout the
            aggregation, an undercount, inside the error, for memory used part of it."""
        returns: dict[tuple[float, int, int], list[tuple[_Band, _Segment]]] = {}
        for seg in segments:
            for b in seg.bands:
                if b.pending_age is not None:
                    returns.setdefault(b.origin, []).append((b, seg))
        for members in returns.values():
            in_use = any(seg.frequency > 0 for _, seg in members)
            due = now - members[0][0].revived_at >= settle - 1e-9
            decided: list[tuple[_Band, _Segment]] = []
            for b, seg in members:
                if seg.frequency > 0 and not due:
                    continue
                if seg.frequency <= 0 and in_use:  # not the part that was used: idle as it was
                    b.since, b.pending_age = b.idle_since, None
                    continue
                decided.append((b, seg))
            if decided:
                _count_return(decided, cold_age, counts)

    @staticmethod
    def _referenced(r: RegionRecord, inv: list[_Band], seg: _Segment, now: float, prev: float, period: float,
                    cold_age: float, counts: _Counts, aggregation_interval: float = 0.0) -> _Segment:
        """A clear_refs mapping: bytes touched for the first time since the clear, taken
        from those untouched since it.

        A first touch at least ``cold_age`` after the clear proves a return: the byte was
        untouched since the clear. Before ``cold_age``, the bytes touched in the last
        period (idle less than ``cold_age``, as far as the counts tell) and bytes idle
        longer are alike to smaps; the lower bound takes the young ones first (what was
        used stays in use), which counts nothing there. The estimate counted instead
        assumes returns go on at the rate the last periods proved them: at the clear, that
        rate over ``cold_age`` (times ESTIMATE_MARGIN) is expected, and first touches count
        against it, no more than were seen and than old bytes there are, none in the
        aggregation whose interval holds the clear (its first touches are the memory in use
        touching itself again; the engine clears one sample interval before an aggregation,
        so that this is one sample interval's worth): a mapping whose memory in use only
        re-touches itself proves no returns and is estimated none. The error is the rest of
        the bracket: from the young-first lower bound to old-first (every first touch a
        return), in every aggregation after that one."""
        touched = max(0.0, r.period_referenced - seg.referenced)
        eligible = sorted((b for b in inv if not b.touched), key=lambda b: b.since, reverse=True)
        others = [b for b in inv if b.touched]
        is_old = [b.since < prev and prev - b.since >= cold_age for b in eligible]
        old = sum(b.nbytes for b, o in zip(eligible, is_old) if o)
        lower, left = 0.0, touched  # young first, as taken below without an estimate
        for b, o in zip(eligible, is_old):
            n = min(left, b.nbytes)
            lower, left = lower + (n if o else 0.0), left - n
        blind = prev - period < cold_age
        # the aggregation whose interval holds the clear is the memory in use touching
        # itself again: no estimate, no doubt (the engine clears one sample interval before
        # an aggregation, so that this is one sample interval's first touches)
        first = prev <= period
        estimate = min(seg.expected, touched, old) if blind and not first else 0.0
        estimate = max(0.0, estimate - lower)
        # the estimated returns come from the old bytes, the least idle of them first
        olds = [b for b, o in zip(eligible, is_old) if o]
        young = [b for b, o in zip(eligible, is_old) if not o]
        from_old, olds = _take(olds, estimate)
        taken, rest = _take(young + olds, touched - sum(b.nbytes for b in from_old))
        promoted = 0.0
        for b in from_old + taken:
            # idle for less than an aggregation is the resolution, not idleness: bytes of the
            # last period touched again right after the clear are not returns from anything
            if b.since < prev and prev - b.since >= min(aggregation_interval, cold_age):
                counts.add(prev - b.since, b.nbytes, cold_age)
                promoted += b.nbytes if prev - b.since >= cold_age else 0.0
            b.since, b.touched = now, True
        if blind:
            seg.expected = max(0.0, seg.expected - promoted)
        else:
            seg.proven, seg.expected = seg.proven + promoted, 0.0
        upper = min(touched, old)
        if not first:  # right after a clear, what was used before is used again first
            counts.add(cold_age, 0.0, cold_age, error=max(upper - promoted, promoted - lower))
        elif promoted > lower:
            counts.add(cold_age, 0.0, cold_age, error=promoted - lower)
        return _Segment(r.start, r.end, from_old + taken + rest + others, 1.0, float(r.period_referenced),
                        proven=seg.proven, proven_sum=seg.proven_sum, expected=seg.expected)
