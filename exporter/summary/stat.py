"""Working set, cold bytes and distributions, computed from raw region records.

Every number is weighted by resident bytes, never by region size: non-resident memory is in
no numerator and no denominator, whatever the engine. A record either carries one idle time
for the whole region (DAMON's engines) or a distribution of idle time over its bytes (the
referenced-bytes engine); both give the same kind of answer here.

Memory nobody has seen accessed is never in the working set: a region new to us (a new
mapping, a process that just joined, the first minute after start) counts in it only once a
sample sees it accessed, and counts as cold only once it has been watched for ``cold_age``
without one. Until it has been watched for ``working_set_window`` it is in neither figure,
and the working set's error estimate includes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from exporter.model.policy import Policy
from exporter.model.records import Aggregation, EngineStats, PageWindow, RegionRecord, TargetRecords
from exporter.summary.bands import IDLE_AGE_BUCKETS, idle_bands
from exporter.summary.promotion import PromotionTracker, Promotions
from exporter.summary.sampling import share_bounds, used_lower
from exporter.summary.sharing import share_access

#: Upper bounds of ``damon_access_frequency_ratio`` buckets; part of the metrics contract.
FREQUENCY_BUCKETS: tuple[float, ...] = (0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, math.inf)

def idle_at_least(r: RegionRecord, seconds: float) -> int:
    """Resident bytes of ``r`` not accessed for at least ``seconds`` (idle time being a
    lower bound: what is not known to be idle that long is not counted)."""
    if not r.idle_distribution:
        return r.resident_bytes if r.idle_seconds >= seconds else 0
    return sum(b for s, b in idle_bands(r) if s >= seconds)


def seen_within(r: RegionRecord, window: float) -> bool:
    """A point record seen accessed within ``window`` seconds."""
    return r.nr_accesses > 0 or (r.seen_accessed and r.idle_seconds < window)


def untouched_by(r: RegionRecord, window: float) -> tuple[int, bool]:
    """For a distribution record: bytes not known to be touched within ``window`` (those
    untouched at its last point at or before ``window``), and whether that is exact (a
    point lies at or beyond ``window``, so the rest are known idle that long)."""
    untouched = r.resident_bytes
    for s, nbytes in r.idle_distribution:
        if s > window:
            return min(untouched, r.resident_bytes), True
        untouched = nbytes
    exact = bool(r.idle_distribution) and r.idle_distribution[-1][0] >= window
    return min(untouched, r.resident_bytes), exact


def in_working_set(r: RegionRecord, window: float) -> int:
    """Resident bytes of ``r`` seen accessed within ``window`` seconds."""
    if r.idle_distribution:
        return r.resident_bytes - untouched_by(r, window)[0]
    return r.resident_bytes if seen_within(r, window) else 0


def unknown_bytes(r: RegionRecord, window: float) -> int:
    """Resident bytes of ``r`` whose working-set membership is unknown: never seen accessed,
    and watched for less than ``window``."""
    if r.idle_distribution:
        untouched, exact = untouched_by(r, window)
        return 0 if exact else untouched
    if r.nr_accesses > 0 or r.seen_accessed or r.idle_seconds >= window:
        return 0
    return r.resident_bytes


def edge_error(regions: Sequence[RegionRecord], member: Callable[[RegionRecord], bool], sample_interval: float,
               unknown: Callable[[RegionRecord], int] = lambda r: 0, shared_doubt: float = 0.0,
               horizon: float = 0.0, aggregation_interval: float = 0.0) -> float:
    """How far a figure counting the ``member`` regions whole may be off: resident bytes on
    the wrong side of its threshold because a region holds memory of both sides (DAMON's
    spatial error, :func:`edge_shares`; ``shared_doubt`` is the same doubt the sharing pass
    carried to pieces of shared memory), bytes that ``unknown`` says cannot be classified
    at all (whole), and on the members' side at least what their samples do not prove used
    (:func:`unproven_bytes`). The members' edge doubt and their unproven bytes are doubts
    about the same bytes: the larger counts."""
    shares = edge_shares(regions, member, sample_interval)
    inside = outside = 0.0
    for r, x in zip(regions, shares):
        doubt = max(unknown(r), r.resident_bytes * x)
        if member(r):
            inside += doubt
        else:
            outside += doubt
    return outside + max(inside + shared_doubt, unproven_bytes(regions, member, horizon, aggregation_interval))


def edge_shares(regions: Sequence[RegionRecord], member: Callable[[RegionRecord], bool],
                sample_interval: float) -> list[float]:
    """For each region, the expected share of its bytes on the wrong side of a threshold
    because it holds memory of both sides (DAMON's spatial error).

    All bytes of a region are classified alike (in or out of the working set; cold or not).
    Where two contiguous regions of one process are classified differently, the true edge
    lies inside one of them or exactly between, and the samples say how likely each is:

    - the side classified as recently used (``member``), if sampled this aggregation: a
      share ``1 - f / f_ref`` of it is likely idle, where ``f`` is its access frequency and
      ``f_ref`` the highest of its own and its other neighbour's (memory used alike reads
      alike; a region straddling the edge reads proportionally less). A member that reads
      no access now, beside one that does, is in the working set by an earlier hit only
      (a region straddling the edge that a sample happened to catch): all of it may be idle;
    - the other side has gone ``n = idle_seconds / sample_interval`` samples without a
      hit; the expected share of it that is used after that is ``1 / (n + 1)``: small for
      regions watched long at fine resolution, large where the budget stretched the sample
      interval or the region is young.

    Each region counts at most once, with the larger of its shares. Records with an
    idle-time distribution are classified per byte and never counted at an edge.
    """
    share: dict[int, float] = {}

    def blame(i: int, x: float) -> None:
        share[i] = max(share.get(i, 0.0), min(1.0, max(0.0, x)))

    def contiguous(a: RegionRecord, b: RegionRecord) -> bool:
        return a.pid == b.pid and a.end == b.start and not a.idle_distribution and not b.idle_distribution

    n = len(regions)
    for i in range(1, n):
        a, b = regions[i - 1], regions[i]
        if not contiguous(a, b) or member(a) == member(b):
            continue
        (hot, hi, other), (cold, ci) = ((a, i - 1, i - 2), (b, i)) if member(a) else ((b, i, i + 1), (a, i - 1))
        if hot.nr_checks:
            ref = hot.frequency
            if 0 <= other < n and contiguous(*sorted((hot, regions[other]), key=lambda r: (r.pid, r.start))) and member(regions[other]):
                ref = max(ref, regions[other].frequency)
            if ref > 0:  # a member that reads idle now beside one in use: in by an earlier hit only
                blame(hi, 1.0 - hot.frequency / ref)
        blame(ci, sample_interval / (cold.idle_seconds + sample_interval) if sample_interval > 0 else 0.0)
    return [share.get(i, 0.0) for i in range(n)]


#: checks pooled per region at most (the exact binomial bound's cost grows with them; past a
#: few thousand checks it moves by less than a tenth of a percent)
MAX_POOLED_CHECKS = 2000


def pooled_checks(r: RegionRecord, horizon: float, aggregation_interval: float) -> tuple[int, int]:
    """The hits and checks behind ``r``'s access share within ``horizon``: this
    aggregation's, and those of the earlier aggregations in which its pattern held (DAMON's
    age: the aggregations its access count stayed within the merge threshold, so at the
    same share), as far back as the horizon reaches. Without the aggregation interval,
    this aggregation's alone."""
    k, n = r.nr_accesses, r.nr_checks
    if aggregation_interval <= 0 or n <= 0:
        return k, n
    held = min(r.age + 1, max(1, int(horizon / aggregation_interval + 1e-9)))
    pooled = min(n * held, max(n, MAX_POOLED_CHECKS))
    return round(k * pooled / n), pooled


def unproven_bytes(regions: Sequence[RegionRecord], member: Callable[[RegionRecord], bool],
                   horizon: float = 0.0, aggregation_interval: float = 0.0) -> float:
    """Bytes of the point records counted recently used (``member``) that their samples do
    not prove used: a region counts whole once a sample hits it, but its hits prove only a
    share of its pages used per interval (:func:`used_lower`, over the checks of
    :func:`pooled_checks`); the rest may have gone unused for as long as the figure's horizon.
    This is the error of a region whose pages are not used alike (a heap with its used
    objects scattered over it), which the contiguous edges of :func:`edge_shares` cannot
    see: every region holds used pages, all are members, and no edge lies between two.
    Pieces of shared memory that carry one region's samples are counted as that one draw."""
    draws: dict[tuple[int, int, int], list[int]] = {}  # evidence -> [bytes, hits, checks]
    for r in regions:
        if not r.idle_distribution and r.resident_bytes and member(r):
            k, n = pooled_checks(r, horizon, aggregation_interval)
            d = draws.setdefault(r.evidence or (r.pid, r.start, r.end), [0, k, n])
            d[0] += r.resident_bytes
    counted = sum(b for b, _, _ in draws.values())
    return counted - used_lower((b, k, n) for b, k, n in draws.values())


def window_figure(w: PageWindow, used: bool) -> tuple[int, float]:
    """The bytes a page window found used within its horizon (``used``) or idle through
    it, and how far that may be off (the wider side of its two-sided bounds at the model's
    rate, :func:`exporter.summary.sampling.share_bounds`)."""
    point, below, above = share_bounds(
        (s.resident_bytes, s.accessed_share if used else 1.0 - s.accessed_share, s.pages) for s in w.strata)
    return round(point), max(below, above)


def frequency_bands(r: RegionRecord) -> Iterable[tuple[float, int]]:
    """(accesses per sample, bytes): one value per region, or for a distribution record
    its accessed bytes at 1 and the rest at 0 (one sample: the first aggregation)."""
    if not r.idle_distribution:
        yield r.frequency, r.resident_bytes
        return
    seen = min(r.accessed_bytes, r.resident_bytes)
    yield 1.0, seen
    yield 0.0, r.resident_bytes - seen


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
class TargetSummary:
    """One target's numbers at the end of an aggregation, with the records they came from."""

    name: str
    pids: tuple[int, ...]
    regions: tuple[RegionRecord, ...]
    resident_bytes: int
    working_set_bytes: int
    cold_bytes: int
    idle_age_histogram: tuple[tuple[float, int], ...]
    frequency_histogram: tuple[tuple[float, int], ...]
    idle_age_sum: float  # byte-seconds (the gauge histogram's _gsum)
    frequency_sum: float
    aggregated_at: float  # wall clock (seconds since the epoch)
    labels: tuple[tuple[str, str], ...] = ()
    errors: tuple[str, ...] = ()
    max_regions: int = 0
    #: wall time the working-set / cold figure was measured (= aggregated_at where the
    #: engine measures at every aggregation; earlier for clear_refs between its points)
    working_set_measured_at: float = 0.0
    cold_measured_at: float = 0.0
    #: how far working_set_bytes / cold_bytes may be off (see :func:`edge_error`); the
    #: working set's includes memory watched too briefly to say (:func:`unknown_bytes`)
    working_set_error_bytes: int = 0
    cold_error_bytes: int = 0
    nr_merged: int = 0  # regions after merging, before the split (see TargetRecords)
    not_monitored: tuple[tuple[str, int], ...] = ()  # processes found but not monitored, by kind
    #: returns from idleness since the target was first watched (None: no tracker ran)
    promotions: Promotions | None = None
    accessed_bits_resets: int = 0  # see TargetRecords
    #: resident bytes not known cold or warm yet: never seen accessed, watched for less
    #: than cold_age (in cold_error_bytes); with cold_bytes 0, the cold figure is not known
    cold_unknown_bytes: int = 0

    @property
    def cold_ratio(self) -> float:
        return self.cold_bytes / self.resident_bytes if self.resident_bytes else 0.0

    @property
    def cold_known(self) -> bool:
        """False while nothing is proven cold and some bytes have not been watched for
        cold_age: a cold figure of 0 then means "not known yet", not "all warm"."""
        return self.cold_bytes > 0 or self.cold_unknown_bytes == 0

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
            "working_set_error_bytes": self.working_set_error_bytes,
            "cold_error_bytes": self.cold_error_bytes,
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


def summarize_target(t: TargetRecords, policy: Policy, sample_interval: float = 0.0,
                     access_per_page: bool = False, aggregation_interval: float = 0.0) -> TargetSummary:
    """Working set, cold bytes and the two distributions of one target, from resident bytes
    (each page by its share; shared pages as recently used as their most recent user in the
    target, see :mod:`exporter.summary.sharing`): a function of the records alone."""
    return _summarize_target(t, policy, sample_interval, access_per_page, aggregation_interval)[0]


def _summarize_target(t: TargetRecords, policy: Policy, sample_interval: float, access_per_page: bool,
                      aggregation_interval: float = 0.0) -> tuple[TargetSummary, tuple[RegionRecord, ...]]:
    """:func:`summarize_target`, and the regions it counted (shared memory cut into the
    pieces each page was counted by), which the promotion tracker follows."""
    window, cold_age = policy.working_set_window, policy.cold_age
    in_ws = lambda r: seen_within(r, window)  # noqa: E731
    is_warm = lambda r: r.idle_seconds < cold_age  # noqa: E731
    # each process' own edge evidence: a shared piece taking one process' view takes its doubt
    ws_doubt = dict(zip(map(id, t.regions), edge_shares(t.regions, in_ws, sample_interval)))
    cold_doubt = dict(zip(map(id, t.regions), edge_shares(t.regions, is_warm, sample_interval)))
    regions, shared_ws_error, shared_cold_error = share_access(
        t.regions,
        lambda r: in_working_set(r, window) / r.resident_bytes if r.resident_bytes else 0.0,
        lambda r: idle_at_least(r, cold_age) / r.resident_bytes if r.resident_bytes else 0.0,
        per_page=access_per_page,
        doubt=(lambda r: ws_doubt.get(id(r), 0.0), lambda r: cold_doubt.get(id(r), 0.0)),
        files=t.file_mappings)
    resident = sum(r.resident_bytes for r in regions)
    share_error = sum(r.share_error_bytes for r in t.regions)  # counts scaled from Rss to Pss
    # figures an engine holds between its exact points (clear_refs), off by up to these
    ws_present = sum(dict(r.present_error_bytes).get(window, 0) for r in t.regions)
    cold_present = sum(dict(r.present_error_bytes).get(cold_age, 0) for r in t.regions)
    working = sum(in_working_set(r, window) for r in regions)
    cold = sum(idle_at_least(r, cold_age) for r in regions)
    ws_error = edge_error(regions, in_ws, sample_interval, lambda r: unknown_bytes(r, window), shared_ws_error,
                          window, aggregation_interval)
    cold_unknown = sum(unknown_bytes(r, cold_age) for r in regions)
    cold_error = edge_error(regions, is_warm, sample_interval, lambda r: unknown_bytes(r, cold_age), shared_cold_error,
                            cold_age, aggregation_interval)
    measured = dict(t.measured_at)
    ws_share_error = cold_share_error = share_error
    # page windows, where the engine has them: the share of each region used within the
    # horizon, read from random pages, instead of whole regions (regions whose pages are not
    # used alike); the figure is the window's, measured when it was read
    windows = {w.horizon: w for w in t.windows}
    if window in windows:
        working, ws_error = window_figure(windows[window], used=True)
        working, ws_share_error, ws_present = min(resident, working), 0, 0
        measured[window] = windows[window].read_at
    if cold_age in windows:
        cold, cold_error = window_figure(windows[cold_age], used=False)
        # two windows' samples: the truth holds cold <= resident - working set where cold_age
        # is the longer horizon, and two estimates may not (one window's add up)
        seen = sum(s.resident_bytes for s in windows[cold_age].strata)
        cold = min(cold, seen - working) if cold_age > window and window in windows else cold
        cold, cold_unknown, cold_present, cold_share_error = max(0, cold), 0, 0, 0
        measured[cold_age] = windows[cold_age].read_at
    bands = [band for r in regions for band in idle_bands(r)]
    freq = [band for r in regions for band in frequency_bands(r)]
    return TargetSummary(
        name=t.name,
        pids=tuple(sorted(set(t.pids))),
        regions=t.regions,
        resident_bytes=resident,
        working_set_bytes=working,
        cold_bytes=cold,
        idle_age_histogram=cumulative_histogram(bands, IDLE_AGE_BUCKETS),
        frequency_histogram=cumulative_histogram(freq, FREQUENCY_BUCKETS),
        idle_age_sum=float(sum(s * b for s, b in bands)),
        frequency_sum=float(sum(f * b for f, b in freq)),
        aggregated_at=t.aggregated_at,
        labels=t.labels,
        errors=t.errors,
        max_regions=t.max_regions,
        working_set_measured_at=measured.get(policy.working_set_window, t.aggregated_at),
        cold_measured_at=measured.get(policy.cold_age, t.aggregated_at),
        working_set_error_bytes=min(resident, round(ws_error) + ws_share_error + ws_present),
        cold_error_bytes=min(resident, round(cold_error) + cold_share_error + cold_present),
        nr_merged=t.nr_merged,
        not_monitored=t.not_monitored,
        accessed_bits_resets=t.accessed_bits_resets,
        cold_unknown_bytes=min(resident, cold_unknown),
    ), tuple(regions)


@dataclass(frozen=True)
class Summary:
    """One aggregation, summarized: what the exporter publishes and the CLI prints. The raw
    aggregation rides along (its backend, intervals, counters, warnings)."""

    raw: Aggregation
    targets: tuple[TargetSummary, ...]
    policy: Policy = field(default_factory=Policy)

    @property
    def backend(self) -> str:
        return self.raw.backend

    @property
    def taken_at(self) -> float:
        return self.raw.taken_at

    @property
    def sample_interval(self) -> float:
        return self.raw.sample_interval

    @property
    def aggregation_interval(self) -> float:
        return self.raw.aggregation_interval

    @property
    def stats(self) -> EngineStats:
        return self.raw.stats

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.raw.warnings

    def target(self, name: str) -> TargetSummary | None:
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


def summarize(agg: Aggregation, policy: Policy, tracker: PromotionTracker | None = None) -> Summary:
    """The summary of every target of one aggregation; with ``tracker`` (the caller's, fed
    every aggregation in order), each target's returns from idleness too."""
    targets = []
    for t in agg.targets:
        summary, counted = _summarize_target(t, policy, agg.sample_interval, agg.access_per_page,
                                              agg.aggregation_interval)
        if tracker is not None:
            summary = replace(summary, promotions=tracker.observe(
                (t.name, t.labels), counted, t.aggregated_at, policy.cold_age, agg.aggregation_interval))
        targets.append(summary)
    if tracker is not None:
        tracker.retain((t.name, t.labels) for t in agg.targets)
    return Summary(raw=agg, targets=tuple(targets), policy=policy)
