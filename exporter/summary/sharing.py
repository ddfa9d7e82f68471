"""A page the target's processes share is one page, and its access is judged once.

Every engine counts a page by its share (PSS's rule: ``PAGE_SIZE / mappers``), so the
target's processes together count a page they all map exactly once, and a page also mapped
outside the target in proportion. Each process' regions, though, are its own: they cut the
shared memory at different places, so each process' view of the same pages differs, and
what the views mean depends on the engine's check:

- **Per mapping** (kernel DAMON's vaddr checks read the process' own page-table entry,
  clear_refs' Referenced is the process' own young bits): a parent that forked workers reads
  the workers' hot copy-on-write pages as idle. A shared page is used when *any* of its
  users used it, so the shared part of each region takes the access of the most recently
  used covering region.
- **Per physical page** (page_idle's bitmap walks every mapping of a page): a check of a
  shared page already sees every mapper's access, so each process' regions are a complete
  estimate of the frames that process maps, and they need no reconciliation: counted by
  share, the target's figure for a shared frame is the share-weighted mean of its mappers'
  verdicts. The truth lies between the least and the most of those verdicts, so their
  spread over the same frames goes into the error (:func:`_disagreement`);
  :func:`share_access` leaves these records as they are.

For per-mapping counts of referenced bytes (clear_refs), the bytes the views disagree on are
counted whole: the truth lies between the views. Per mapping with DAMON's regions, a view
that says idle is no evidence against another process' use (the parent that forked readers
never reads their pages), so only the views of processes that use some shared memory doubt
each other where they disagree; and a piece takes the doubt of the region whose view it
took, as that region's own process sees it (its edge share: a region across the edge of the
used part reads fewer accesses than the used regions beside it), up to the bytes taken from
it.

Which regions are the same memory is decided first, for both kinds, by identity
(:func:`identity_groups`): regions of two processes over the same addresses are one memory
where the engine read one frame at one address in both, and two where every address both
read holds different frames (unrelated trees started without ASLR, a fixed-address mapping,
copy-on-write broken by a write). Where frames were not read (no CAP_SYS_ADMIN), the same
addresses in one target are taken as the same pages, as fork leaves them (gunicorn
``--preload`` workers, PostgreSQL backends and their ``shared_buffers``, Redis' fork,
multiprocessing), with the views' disagreement in the errors. Shared memory mapped at
different addresses (two unrelated programs mapping one file) keeps each process' own view,
still counted by share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Sequence

from exporter.model.records import FileMapping, RegionRecord
from exporter.summary.file_identity import FILE_SPACE, Relocation, relocate
from exporter.summary.sampling import ALPHA, at_least, rate_lower, rate_upper


def _freshness(r: RegionRecord) -> tuple[int, float]:
    """Sort key: the most recently used region first (point records)."""
    if r.nr_accesses > 0:
        return (0, -r.frequency)
    return (1 if r.seen_accessed else 2, r.idle_seconds)


def _untouched_fraction(r: RegionRecord, s: float) -> float:
    """Share of ``r``'s bytes not touched within ``s`` seconds (a distribution record): its
    figure at its first point at or beyond ``s``, else at its last point."""
    if not r.resident_bytes:
        return 1.0
    value = r.idle_distribution[-1][1]
    for at, nbytes in r.idle_distribution:
        if at >= s:
            value = nbytes
            break
    return min(1.0, value / r.resident_bytes)


def _scaled(r: RegionRecord, resident: int, shared: int) -> RegionRecord:
    """``r`` with ``resident`` bytes instead of its own, its figures in proportion."""
    if resident == r.resident_bytes:
        return replace(r, shared_bytes=shared)
    f = resident / r.resident_bytes if r.resident_bytes else 0.0
    return replace(
        r,
        resident_bytes=resident,
        shared_bytes=shared,
        idle_distribution=tuple((s, int(round(b * f))) for s, b in r.idle_distribution),
        accessed_bytes=int(round(r.accessed_bytes * f)),
    )


class _View:
    """What every process' piece of one stretch of shared memory takes from the regions
    covering it, worked out once per stretch (not once per covering region: with P
    processes that is P times less work, which matters at hundreds of workers)."""

    __slots__ = ("covering", "_fresh", "_dist", "_ids")

    def __init__(self, covering: Sequence[RegionRecord]) -> None:
        self.covering = covering
        self._fresh: RegionRecord | None = None
        self._dist: tuple[tuple[tuple[float, float], ...], float] | None = None
        self._ids: frozenset[int] | None = None

    def same_as(self, other: "_View", distribution: bool) -> bool:
        """Whether a piece taking this view may extend one taking ``other``: the same
        region decides (point records), or the same regions (distributions)."""
        if not distribution:
            return self.fresh() is other.fresh()
        if self._ids is None:
            self._ids = frozenset(map(id, self.covering))
        if other._ids is None:
            other._ids = frozenset(map(id, other.covering))
        return self._ids == other._ids

    def fresh(self) -> RegionRecord:
        """Point records: the most recently used of the covering regions."""
        if self._fresh is None:
            self._fresh = min(self.covering, key=_freshness)
        return self._fresh

    def dist(self) -> tuple[tuple[tuple[float, float], ...], float]:
        """Distribution records: the untouched share at each idle time, as the most used of
        the covering regions says, and the largest accessed share."""
        if self._dist is None:
            cov = self.covering
            points = sorted({s for r in cov for s, _ in r.idle_distribution})
            fracs = tuple((s, min(_untouched_fraction(r, s) for r in cov)) for s in points)
            accessed = max(min(1.0, r.accessed_bytes / r.resident_bytes) if r.resident_bytes else 0.0 for r in cov)
            self._dist = (fracs, accessed)
        return self._dist


@dataclass(slots=True)
class _Piece:
    """``nbytes`` of ``owner``'s shared memory in ``[lo, hi)``, to take ``view``; grown
    while the next stretch of the same region takes the same view."""

    owner: RegionRecord
    lo: int
    hi: int
    nbytes: int
    view: _View


def _piece(owner: RegionRecord, lo: int, hi: int, nbytes: int, view: _View) -> RegionRecord:
    """``nbytes`` of ``owner``'s shared memory in ``[lo, hi)``, used as ``view`` says: as
    the most recently used of the regions covering it (a distribution: as the most used of
    them, per idle time)."""
    if owner.idle_distribution:
        fracs, accessed = view.dist()
        return replace(owner, start=lo, end=hi, resident_bytes=nbytes, shared_bytes=nbytes,
                       idle_distribution=tuple((s, int(round(nbytes * f))) for s, f in fracs),
                       accessed_bytes=int(round(nbytes * accessed)))
    fresh = view.fresh()
    return replace(owner, start=lo, end=hi, resident_bytes=nbytes, shared_bytes=nbytes,
                   nr_accesses=fresh.nr_accesses, nr_checks=fresh.nr_checks, age=fresh.age,
                   idle_seconds=fresh.idle_seconds, seen_accessed=fresh.seen_accessed,
                   evidence=fresh.evidence or (fresh.pid, fresh.start, fresh.end))


Share = Callable[[RegionRecord], float]


def _union_length(spans: list[tuple[int, int]]) -> int:
    """Bytes covered by the union of ``[a, b)`` spans (which overlap where several
    processes' regions cover the same memory)."""
    covered, reach = 0, None
    for a, b in sorted(spans):
        if reach is not None:
            a = max(a, reach)
        if b > a:
            covered += b - a
            reach = b
    return covered


def _unexplained_hits(shared: Sequence[RegionRecord]) -> dict[int, float]:
    """Per-mapping access, point records: the regions whose hits memory that *other*
    processes use inside them accounts for, with the share of their bytes that would give
    the hits it does not account for.

    A region reads the accesses of a sample page picked anywhere in it, so a region of
    128 MiB of which others use 16 would see ~16/128 of their hit rate even if its own
    process used nothing else there. Kernel DAMON merges such regions whenever a worker's
    use of the hot part dips for an aggregation (it was descheduled; on a merge the
    weighted mean of its accesses stays above 0), and taking the union of the views would
    then call the whole shared buffer used. A region whose hits the others' use explains
    is no evidence of use elsewhere in it; one that sees more than that (a worker with
    memory of its own) is.

    Both are questions to the binomial model (:mod:`exporter.summary.sampling`): a region
    is explained where its hits are not unlikely had its process used only the others'
    memory inside it, at the highest rate the others' own samples allow, and unlikely had
    it used the whole region at the lowest such rate (so a region read about as often as
    the others' memory is evidence of its own). Only a region that is evidence explains:
    regions are judged from the most frequently hit down, each against the regions of other
    processes already found to be evidence (so two readers merged over the whole buffer at
    the same aggregation are both explained by a third reader's hot region, and neither by
    the other).
    """
    used = sorted((r for r in shared if r.nr_accesses > 0 and not r.idle_distribution and r.nr_checks),
                  key=lambda r: (-r.frequency, r.start, r.pid))
    evidence: list[RegionRecord] = []
    out: dict[int, float] = {}
    for r in used:
        spans, rate, upper, lower = [], 0.0, 0.0, 0.0
        for o in evidence:
            if o.pid != r.pid and o.start < r.end and o.end > r.start:
                spans.append((max(o.start, r.start), min(o.end, r.end)))
                rate = max(rate, o.frequency)
                upper = max(upper, rate_upper(o.nr_checks, o.nr_accesses))
                lower = max(lower, rate_lower(o.nr_checks, o.nr_accesses))
        share = _union_length(spans) / (r.end - r.start)
        # rounded: the same question is asked of many regions (cached)
        if (spans and at_least(r.nr_checks, round(upper * share, 4), r.nr_accesses) >= ALPHA
                and 1.0 - at_least(r.nr_checks, lower, r.nr_accesses + 1) < ALPHA):
            # the doubt left: the share of the region that would give the hits beyond the
            # expected ones at the others' rate
            out[id(r)] = min(1.0, max(0.0, r.nr_accesses - rate * share * r.nr_checks) / (rate * r.nr_checks))
        else:
            evidence.append(r)
    return out


def same_memory(a: RegionRecord, b: RegionRecord) -> bool | None:
    """Whether two regions of different processes over the same addresses are the same
    memory: True where both read one frame at one address, False where every address both
    read holds different frames, None where that is not known (a region's frames were not
    read, or no address was read by both)."""
    if a.frames is None or b.frames is None:
        return None
    theirs = _frame_map(b.frames)
    common = [(pfn, theirs[addr]) for addr, pfn in a.frames if addr in theirs]
    if not common:
        return None
    return any(x == y for x, y in common)


@lru_cache(maxsize=1024)
def _frame_map(frames: tuple[tuple[int, int], ...]) -> dict[int, int]:
    """Address -> PFN of one region's read frames (each region meets every overlapping
    region of every other process: built once)."""
    return dict(frames)


def _overlapping_pairs(shared: Sequence[RegionRecord]) -> Iterator[tuple[int, int]]:
    """Index pairs of regions (sorted by start) of different processes over common addresses."""
    active: list[int] = []
    for i, r in enumerate(shared):
        active = [j for j in active if shared[j].end > r.start]
        for j in active:
            if shared[j].pid != r.pid:
                yield j, i
        active.append(i)


def identity_groups(shared: Sequence[RegionRecord]) -> list[list[RegionRecord]]:
    """The regions (sorted by start) in groups that may be one memory: two regions of
    different processes over common addresses join unless frames prove them different
    memory (two unrelated programs at one address, copy-on-write broken by a write). Where
    two regions read no address in common, what their processes' other regions proved
    decides (one frame in common anywhere: the processes share by fork); where nothing was
    read, the same addresses in one target are taken as the same pages, as fork leaves
    them, and the regions' disagreement is in the errors."""
    if all(r.frames is None for r in shared):
        return [list(shared)]  # nothing read: one memory by address, as fork leaves it
    root = list(range(len(shared)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    def pids(j: int, i: int) -> frozenset[int]:
        return frozenset((shared[j].pid, shared[i].pid))

    proven: dict[frozenset[int], bool] = {}  # process pair -> one frame in common anywhere
    unknown: list[tuple[int, int]] = []
    for j, i in _overlapping_pairs(shared):
        if find(i) == find(j):
            continue  # one memory already (forked workers: nearly every pair after the first)
        v = same_memory(shared[j], shared[i])
        if v is None:
            unknown.append((j, i))
            continue
        proven[pids(j, i)] = proven.get(pids(j, i), False) or v
        if v:
            root[find(i)] = find(j)
    for j, i in unknown:
        if proven.get(pids(j, i)) is not False:
            root[find(i)] = find(j)
    groups: dict[int, list[RegionRecord]] = {}
    for i, r in enumerate(shared):
        groups.setdefault(find(i), []).append(r)
    return list(groups.values())


def share_access(regions: Sequence[RegionRecord], in_working_set: Share, cold: Share,
                 per_page: bool = False, doubt: tuple[Share, Share] | None = None,
                 files: Sequence[FileMapping] = ()) -> tuple[tuple[RegionRecord, ...], int, int]:
    """The target's regions with the shared part of each, where processes of the target
    overlap with shared memory at the same addresses (or at the same offsets of one file,
    ``files`` being the processes' mappings: :mod:`exporter.summary.file_identity`), split
    off into pieces used as the most recently used of them (``per_page``: the records as
    they are, see the module's docstring); and the bytes of those pieces on
    which the regions disagreed, for the working set and for the cold bytes
    (``in_working_set`` and ``cold`` give the share of a region's bytes in each figure;
    ``doubt`` the share of a region's bytes its own process' edge evidence puts on the
    wrong side, for the working set and for the cold bytes, used for point records).
    Resident bytes in total are unchanged; the pieces come after the regions they were cut
    from (they are nobody's neighbours in edge_error)."""
    moved = relocate([r for r in regions if r.shared_bytes > 0 and r.end > r.start], files)
    shared = sorted(moved.regions, key=lambda r: r.start)
    src = moved.source
    ws_share: Share = lambda r: in_working_set(src(r))  # noqa: E731
    cold_share: Share = lambda r: cold(src(r))  # noqa: E731
    if per_page:
        return tuple(regions), *_disagreement(shared, ws_share, cold_share)
    own_doubt = None if doubt is None else (lambda r: doubt[0](src(r)), lambda r: doubt[1](src(r)))
    by_id = {id(r): r for r in shared}
    evidence = {(r.pid, r.start, r.end): (o.pid, o.start, o.end) for r in shared if (o := src(r)) is not r}
    moved_bytes: dict[int, int] = {}  # id(region) -> shared bytes moved into pieces
    made: list[RegionRecord] = []
    ws_error = cold_error = 0.0
    for group in _groups(shared):
        if len({r.pid for r in group}) < 2:
            continue
        m, pieces, ws, cold_ = _share_group(group, ws_share, cold_share, own_doubt)
        for i, nbytes in m.items():
            k = id(src(by_id[i]))
            moved_bytes[k] = moved_bytes.get(k, 0) + nbytes
        made += (_back(moved, evidence, owner, piece) for owner, piece in pieces)
        ws_error += ws
        cold_error += cold_
    out = []
    for r in regions:
        m = moved_bytes.get(id(r))
        if m is None:
            out.append(r)
            continue
        out.append(_scaled(r, r.resident_bytes - m, r.shared_bytes - m))
    return tuple(out) + tuple(made), round(ws_error), round(cold_error)


def _groups(shared: Sequence[RegionRecord]) -> list[list[RegionRecord]]:
    """The regions (sorted by start) in groups that may be one memory: by address as
    :func:`identity_groups` says, and in the file space (:mod:`exporter.summary.file_identity`)
    all in one group, a file's page at one offset being one page."""
    by_address = [r for r in shared if r.start < FILE_SPACE]
    in_files = [r for r in shared if r.start >= FILE_SPACE]
    return (identity_groups(by_address) if by_address else []) + ([in_files] if in_files else [])


def _back(moved: Relocation, evidence: dict[tuple[int, int, int], tuple[int, int, int]],
          owner: RegionRecord, piece: RegionRecord) -> RegionRecord:
    """A piece cut from ``owner`` (maybe a part of a region, moved into a file's
    coordinates) at its process' own addresses, naming the region whose samples it took
    as the engine gave that region (``evidence``: a part's key -> its region's)."""
    ev = piece.evidence if piece.evidence is None else evidence.get(piece.evidence, piece.evidence)
    shift = moved.shift(owner)
    if not shift and ev == piece.evidence:
        return piece
    return replace(piece, start=piece.start - shift, end=piece.end - shift, evidence=ev,
                   frames=moved.source(owner).frames)


def _disagreement(shared: Sequence[RegionRecord], in_working_set: Share, cold: Share) -> tuple[int, int]:
    """Per physical page: the bytes on which the views of one memory disagree, for the
    working set and the cold bytes. Each process' regions estimate the frames it maps, and
    the target's figure is the share-weighted mean of those estimates; the truth lies
    between the most and the least of them (one region straddling the used part's edge
    overshoots it, another stops short), so each process' part of a stretch counts the
    spread of the views over it as its error."""
    ws_error = cold_error = 0.0
    for group in _groups(shared):
        if len({r.pid for r in group}) < 2:
            continue
        readings = {id(r): (in_working_set(r), cold(r)) for r in group}
        for lo, hi, covering in _stretches(group):
            ws = [readings[id(r)][0] for r in covering]
            cd = [readings[id(r)][1] for r in covering]
            nbytes = sum(r.shared_bytes * (hi - lo) / (r.end - r.start) for r in covering)
            ws_error += nbytes * (max(ws) - min(ws))
            cold_error += nbytes * (max(cd) - min(cd))
    return round(ws_error), round(cold_error)


def _stretches(shared: Sequence[RegionRecord]) -> Iterator[tuple[int, int, list[RegionRecord]]]:
    """``[lo, hi)`` between consecutive region edges of ``shared`` (sorted by start), with the
    regions covering it, where they belong to at least two processes."""
    bounds = sorted({x for r in shared for x in (r.start, r.end)})
    active: list[RegionRecord] = []
    nxt = 0
    for lo, hi in zip(bounds, bounds[1:]):
        while nxt < len(shared) and shared[nxt].start <= lo:
            active.append(shared[nxt])
            nxt += 1
        active = [r for r in active if r.end > lo]
        covering = [r for r in active if r.start <= lo]
        if len({r.pid for r in covering}) >= 2:
            yield lo, hi, covering


def _deciding(covering: list[RegionRecord], unexplained: dict[int, float]) -> tuple[list[RegionRecord], float]:
    """Per mapping: the views that decide a stretch, and the share of its bytes left in
    doubt. Where every view calling these bytes used has its hits from memory other
    processes use elsewhere in it (:func:`_unexplained_hits`), the views that saw none here
    decide, with the explained views' unexplained share as the doubt."""
    used = [c for c in covering if c.nr_accesses > 0 and not c.idle_distribution]
    if used and len(used) < len(covering) and all(id(c) in unexplained for c in used):
        ids = {id(c) for c in used}
        return [c for c in covering if id(c) not in ids], max(unexplained[i] for i in ids)
    return covering, 0.0


def _taken_doubt(taken: Iterable[tuple[RegionRecord, int, float, float]],
                 doubt: tuple[Share, Share]) -> tuple[float, float]:
    """Per mapping: the working-set and cold error of the bytes that took each view
    (``(view, bytes, working-set disagreement, cold disagreement)``). The view's doubt is
    a share of its own span; the bytes that took it are every sharer's part of the pages
    in it, so at most that span. The larger of the two doubts counts: they are doubts about
    the same bytes."""
    ws_doubt, cold_doubt = doubt
    ws_error = cold_error = 0.0
    for view, nbytes, ws_disagree, cold_disagree in taken:
        span = view.end - view.start
        ws_error += max(ws_disagree, min(nbytes, ws_doubt(view) * span))
        cold_error += max(cold_disagree, min(nbytes, cold_doubt(view) * span))
    return ws_error, cold_error


def _share_group(shared: Sequence[RegionRecord], in_working_set: Share, cold: Share,
                 doubt: tuple[Share, Share] | None,
                 ) -> tuple[dict[int, int], list[tuple[RegionRecord, RegionRecord]], float, float]:
    """:func:`share_access` for one group of regions that are the same memory where they
    overlap (sorted by start): the shared bytes each region gives to pieces, by id; the
    pieces, each with the region it was cut from; the working-set and cold errors."""
    moved: dict[int, int] = {}  # id(region) -> shared bytes moved into pieces
    #: id(view) -> (view, bytes that took it, their working-set and cold disagreement)
    taken: dict[int, tuple[RegionRecord, int, float, float]] = {}
    # what each region says, worked out once: a region is in as many stretches as it meets
    # other processes' edges
    readings = {id(r): (in_working_set(r), cold(r)) for r in shared}
    users = {r.pid for r in shared if readings[id(r)][0] > 0}
    per_mapping = doubt is not None
    unexplained = _unexplained_hits(shared) if doubt is not None else {}
    ws_error = cold_error = 0.0
    #: consecutive stretches of one region that take the same view are one piece (fewer
    #: records, the same bytes)
    pieces: list[_Piece] = []
    last_piece: dict[int, _Piece] = {}  # id(region) -> its latest piece
    for lo, hi, covering in _stretches(shared):
        views, residue = _deciding(covering, unexplained) if per_mapping else (covering, 0.0)
        ws_doubt_share = cold_doubt_share = 0.0
        ws = [readings[id(r)][0] for r in views]
        cd = [readings[id(r)][1] for r in views]
        stretch = _View(views)
        ws_split, cold_split = max(ws) - min(ws), max(cd) - min(cd)
        if per_mapping:
            # only the views of processes that use shared memory can doubt each other
            ws_u = [w for w, c in zip(ws, views) if c.pid in users] or [0.0]
            cd_u = [x for x, c in zip(cd, views) if c.pid in users] or [0.0]
            ws_doubt_share, cold_doubt_share = max(ws_u) - min(ws_u), max(cd_u) - min(cd_u)
        view = stretch.fresh() if doubt is not None else None
        for r in covering:
            size = r.end - r.start  # cut by offset, so a region's pieces add up exactly
            nbytes = round(r.shared_bytes * (hi - r.start) / size) - round(r.shared_bytes * (lo - r.start) / size)
            moved[id(r)] = moved.get(id(r), 0) + nbytes
            same = last_piece.get(id(r))
            if same is not None and same.hi == lo and stretch.same_as(same.view, bool(r.idle_distribution)):
                same.hi, same.nbytes = hi, same.nbytes + nbytes
            else:
                last_piece[id(r)] = piece = _Piece(r, lo, hi, nbytes, stretch)
                pieces.append(piece)
            if view is not None and not r.idle_distribution:
                ws_error += nbytes * residue
                cold_error += nbytes * residue
                v, b, dw, dc = taken.get(id(view), (view, 0, 0.0, 0.0))
                taken[id(view)] = (view, b + nbytes, dw + nbytes * ws_doubt_share, dc + nbytes * cold_doubt_share)
                continue
            ws_error += nbytes * ws_split
            cold_error += nbytes * cold_split
    if doubt is not None:
        ws_taken, cold_taken = _taken_doubt(taken.values(), doubt)
        ws_error += ws_taken
        cold_error += cold_taken
    made = [(p.owner, _piece(p.owner, p.lo, p.hi, p.nbytes, p.view)) for p in pieces if p.nbytes > 0]
    return moved, made, ws_error, cold_error
