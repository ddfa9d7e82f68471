"""The curve bookkeeping of clear_refs (pure): referenced bytes of each mapping, read at known times since a clear, turned into idle-time distributions.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import Iterable

from exporter.model.records import RegionRecord
from exporter.procfs.parsers import SmapsEntry

#: a drop of Referenced (net of freed memory) above this is someone else's reset, not noise
RESET_MIN_BYTES = 256 << 10


# -- the curve bookkeeping (pure) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """One read of one mapping: ``elapsed`` seconds after the mapping's curve began."""

    elapsed: float
    rss: int
    referenced: int
    wall: float

    @property
    def untouched(self) -> int:
        return max(0, self.rss - self.referenced)


@dataclass
class Curve:
    """The referenced-bytes curve of one mapping within one clear period.

    ``origin`` is when the curve began, in seconds after the period's clear: 0 for a mapping
    that existed at the clear; for one that appeared later, the time of the last read that
    did not see it (its pages cannot have been idle for longer than that)."""

    origin: float
    end: int
    points: list[Point] = field(default_factory=list)


@dataclass
class Period:
    """One process' curves since one clear."""

    cleared_at: float  # monotonic
    #: wall time of the clear, read once: records name their period by it, so it must not
    #: drift by the jitter of computing it again from the monotonic clock at every read
    cleared_wall: float = 0.0
    curves: dict[int, Curve] = field(default_factory=dict)  # by mapping start
    last_read: float = 0.0  # seconds after the clear
    horizons_read: set[float] = field(default_factory=set)


def reset_bytes(before: dict[int, Curve], now: list[SmapsEntry]) -> int:
    """How far Referenced of private anonymous memory went down between two reads, net of
    memory that was freed.

    Referenced only grows between clears, except where pages leave the mapping (munmap,
    MADV_DONTNEED, reclaim), which lowers Rss by as much. Whatever is left is someone
    clearing the accessed bits: another clear_refs writer, or reclaim's own aging. Shared
    file pages (libc, the page cache) are left out: their Referenced and Young flags are
    shared by every process mapping them, and any process' clear_refs, or the kernel's
    DAMON or reclaim, resets them routinely (measured here every few seconds)."""
    lost = 0
    for m in now:
        c = before.get(m.start)
        if c is None or not c.points or m.anonymous * 2 < m.rss:
            continue
        p = c.points[-1]
        lost += max(0, (p.referenced - m.referenced) - max(0, p.rss - m.rss))
    return lost


def record_points(current: Curve | None, previous: Curve | None, elapsed: float) -> list[Point]:
    """The points that describe a mapping now: the current period's up to ``elapsed``, and
    beyond it the previous period's (each figure as of the last time it was exact)."""
    pts = list(current.points) if current is not None else []
    if previous is not None:
        last = pts[-1].elapsed if pts else 0.0
        pts += [p for p in previous.points if p.elapsed > max(last, elapsed)]
    return pts


def window_bounds(current: Curve | None, previous: Curve | None, now: float, window: float,
                  rss: int) -> tuple[int, int, int | None]:
    """What the reads prove of the bytes touched within the last ``window`` seconds, now
    (at least, at most), and the estimate they support (None: the previous period's figure
    at ``window``, the only one measured over a whole window). ``now`` is in the current
    curve's seconds.

    Referenced only grows between clears, and what it adds between two reads is pages
    touched for the first time in between: its growth since the first read no older than
    ``window`` was touched within the window (at least). Everything touched within the
    window was touched since the clear, once the clear is older than the window (at most:
    Referenced now). While the clear is younger, everything referenced since it is within the
    window (at least), and the part of the window before it can have touched only what the
    previous period saw referenced (at most: both together); with no previous period,
    anything (all of Rss).

    The estimate, once the clear is older than the window, is the most Referenced grew
    within any ``window`` of the period (its first is the exact figure at the horizon): a
    steady pattern touches as much in every window as in its first, a scan as much new
    memory in every window as in any, and a load that began after the first window shows
    the moment it has touched its memory, where the first window alone would hide it
    until the next clear."""
    pts = current.points if current is not None else []
    if not pts:
        return 0, rss, None
    last = pts[-1].referenced
    if now < window:
        if current.origin > 0:  # the mapping is younger than the curve: nothing before it
            return last, last, last
        before = previous.points[-1].referenced if previous is not None and previous.points else rss
        return last, min(rss, last + before), None
    base = next((q.referenced for q in pts if q.elapsed >= now - window), last)
    starts = ([(0.0, 0)] if current.origin == 0 else []) + [(q.elapsed, q.referenced) for q in pts]
    best, j = 0, 0
    for s, r in starts:
        while j + 1 < len(pts) and pts[j + 1].elapsed <= s + window:
            j += 1
        if pts[j].elapsed > s:
            best = max(best, pts[j].referenced - r)
    return max(0, last - base), max(0, last), best


def _untouched_within(dist: tuple[tuple[float, int], ...], seconds: float, rss: int) -> int:
    """Bytes of ``dist`` not touched within ``seconds`` (its last point at or below it)."""
    return next((b for s, b in reversed(dist) if s <= seconds), rss)


def present(dist: tuple[tuple[float, int], ...], bounds: dict[float, tuple[int, int, int | None]],
            rss: int) -> tuple[tuple[tuple[float, int], ...], tuple[tuple[float, int], ...]]:
    """``dist`` with its figure at each horizon brought within what the reads prove now
    (``bounds``: horizon -> bytes touched within it, at least and at most; see
    :func:`window_bounds`), and how far each figure may be off.

    The estimate is :func:`window_bounds`' (or, early in a period, the previous period's
    point at the horizon), kept where the proofs allow it: a load that began since shows
    in the growth of Referenced (the figure rises to it at the next read); a figure above
    what has been referenced at all is lowered to it. The error is the distance to the farther proven
    bound, so it brackets the truth. A horizon the distribution does not reach yet is left
    alone: nothing is proven idle that long, and the summary counts those bytes unknown.
    Longest horizon first, so a shorter one's figure is never moved by a longer one's (what
    is touched within the shorter is touched within the longer: the bounds nest)."""
    out = list(dist)
    reached = [h for h in sorted(bounds, reverse=True) if dist and dist[-1][0] >= h]
    for h in reached:
        low, high, estimate = bounds[h]
        low, high = min(low, rss), min(max(high, low), rss)
        if estimate is None:
            estimate = rss - _untouched_within(tuple(out), h, rss)
        cap = rss - min(max(estimate, low), high)
        out = ([(s, max(b, cap)) for s, b in out if s < h] + [(h, cap)]
               + [(s, min(b, cap)) for s, b in out if s > h])
    errors = []
    for h in sorted(reached):
        low, high, _ = bounds[h]
        low, high = min(low, rss), min(max(high, low), rss)
        estimate = rss - _untouched_within(tuple(out), h, rss)
        errors.append((h, max(estimate - low, high - estimate)))
    return tuple(out), tuple(errors)


def idle_distribution(points: list[Point], rss_now: int) -> tuple[tuple[float, int], ...]:
    """(seconds, bytes untouched within seconds), non-increasing in bytes, at most Rss now."""
    out: list[tuple[float, int]] = []
    cap = rss_now
    for p in points:
        if p.elapsed <= 0:
            continue
        cap = min(cap, p.untouched)
        out.append((p.elapsed, cap))
    return tuple(out)


def by_share(r: RegionRecord, m: SmapsEntry) -> RegionRecord:
    """The record of a mapping with its pages counted by share, as every engine counts them.

    smaps counts referenced and idle bytes over Rss, where a page five processes map counts
    five times; Pss counts it once over the five. Which of the mapping's pages are shared is
    not known per page, so every figure is scaled by Pss / Rss: exact where the shared and
    private pages of the mapping are alike in use, and the part in shared pages
    (``shared_bytes``: Pss less the private pages) lets the summary count a page its target's
    processes share as recently used as its most recent user.
    """
    pss = m.proportional
    if pss == m.rss or not m.rss:
        return replace(r, shared_bytes=m.shared_share)
    f = pss / m.rss
    return replace(
        r,
        resident_bytes=pss,
        shared_bytes=m.shared_share,
        idle_distribution=tuple((s, int(round(b * f))) for s, b in r.idle_distribution),
        accessed_bytes=int(round(r.accessed_bytes * f)),
        period_referenced=int(round(r.period_referenced * f)),
        closed_referenced=int(round(r.closed_referenced * f)),
        present_error_bytes=tuple((s, int(round(b * f))) for s, b in r.present_error_bytes),
        share_error_bytes=share_scaling_error(m.rss, m.private, pss),
    )


def share_scaling_error(rss: int, private: int, pss: int) -> int:
    """How far ``touched * Pss / Rss`` can be from the touched bytes' true share, for any
    number of touched bytes: all of them private pages (weight 1) or all shared ones (weight
    ``(Pss - Private) / Shared``) at the extremes. The deviation is piecewise linear in the
    touched bytes with its corners where the private or the shared pages run out, so its
    largest value is at one of those two. 0 where the mapping is all private or all shared
    (one weight for every page: the scaling is exact), or where smaps gives no Private."""
    if private < 0 or rss <= 0:
        return 0
    private = min(private, rss)
    shared = rss - private
    if private == 0 or shared == 0:
        return 0
    w = max(0.0, (pss - private) / shared)  # the share of a shared page
    f = pss / rss

    def deviation(touched: float) -> float:
        private_first = min(touched, private) + max(0.0, touched - private) * w
        shared_first = min(touched, shared) * w + max(0.0, touched - shared)
        est = touched * f
        return max(abs(private_first - est), abs(est - shared_first))

    return int(round(max(deviation(private), deviation(shared))))


def group_starts(smaps: list[SmapsEntry], cap: int) -> list[int]:
    """Starts of at most ``cap`` groups of consecutive mappings, equal in number of
    mappings: the boundaries of a fold (see :func:`fold`)."""
    n = len(smaps)
    return sorted({smaps[i * n // cap].start for i in range(cap)})


def fold(smaps: list[SmapsEntry], starts: list[int]) -> list[SmapsEntry]:
    """``smaps`` summed into one entry per group: a mapping belongs to the last group
    starting at or below it (the first group takes what lies below every start). Every
    count of smaps is a sum over pages, so a group's figures are exact sums, and its curve
    is the referenced bytes of all its mappings; only which of them was touched is lost.
    A group is keyed by its fixed start, so its curve survives mappings coming and going."""
    acc: dict[int, list[int]] = {}
    for m in smaps:
        i = max(0, bisect.bisect_right(starts, m.start) - 1)
        g = acc.get(i)
        pss = m.proportional
        private = m.private if m.private >= 0 else pss  # unknown: nothing known shared
        if g is None:
            acc[i] = [m.end, m.rss, m.referenced, m.anonymous, pss, private]
        else:
            g[0] = max(g[0], m.end)
            g[1] += m.rss
            g[2] += m.referenced
            g[3] += m.anonymous
            g[4] += pss
            g[5] += private
    return [SmapsEntry(starts[i], g[0], g[1], g[2], g[3], g[4], g[5]) for i, g in sorted(acc.items())]


#: how much longer than its base a clear period may be (a half: 2 to 3 cold_age) (see :func:`period_length`)
PERIOD_JITTER = 0.5
_GOLDEN = (5 ** 0.5 - 1) / 2


def period_length(base: float, n: int) -> float:
    """The length of a process' ``n``-th clear period: ``base`` stretched by a share of
    ``PERIOD_JITTER`` that no two nearby periods share (the golden-ratio sequence).

    Memory used on a rhythm that divides the clear period would otherwise meet every clear
    at the same phase: returns that fall right at a clear look like memory in use touching
    itself again, for ever. Aperiodic clears meet every phase alike, so what each part of a
    period sees is, over a few periods, a fair sample (and deterministic: tests can follow)."""
    return base * (1.0 + PERIOD_JITTER * ((n * _GOLDEN) % 1.0))


#: completed clear periods remembered per process: enough to prove idle times past the
#: largest finite bucket of damon_idle_age_seconds (3600 s) at the 2-minute default period
MAX_PERIODS = 32

Touched = tuple[float, dict[int, int]]  # (cleared at, {mapping start: bytes referenced by the end})


def period_touched(period: Period) -> Touched:
    """What a completed period proves: per mapping that existed all through it, how many of
    its bytes were referenced by its end (the rest went untouched for the whole period)."""
    return period.cleared_at, {start: c.points[-1].referenced for start, c in period.curves.items()
                               if c.origin == 0 and c.points}


def proven_idle(dist: tuple[tuple[float, int], ...], current: Curve | None, history: "Iterable[Touched]",
                start: int, rss: int, now: float) -> tuple[tuple[float, int], ...]:
    """``dist`` extended past the current clear period with what earlier periods prove.

    Referenced counts say how many bytes were touched, not which, so the bytes untouched in
    the current period *and* in the k periods before it are at least ``rss`` minus all those
    touched counts together (a page touched in any of them is in one of the counts): a lower
    bound, as every idle time here is. Each completed period adds a point at the time it was
    cleared. Without this the distribution stopped at one period: memory idle for ten
    minutes read as idle for under one (cold_age 1m: every bucket from 60 s up equal)."""
    if current is None or current.origin != 0 or not current.points:
        return dist
    touched = current.points[-1].referenced
    last_s = dist[-1][0] if dist else 0.0
    last_b = dist[-1][1] if dist else rss
    out = list(dist)
    for cleared_at, by_start in history:
        t = by_start.get(start)
        if t is None:  # the mapping did not exist all through that period: nothing proven
            break
        touched += t
        bytes_ = min(last_b, max(0, rss - touched))
        seconds = now - cleared_at
        if seconds <= last_s:
            continue
        out.append((seconds, bytes_))
        last_s, last_b = seconds, bytes_
        if bytes_ == 0:
            break
    return tuple(out)
