"""Shared pages of one file matched by file and offset, wherever each process maps it.

The sharing pass (:mod:`exporter.summary.sharing`) compares processes' views of shared
memory where they cover the same addresses: fork leaves a parent's memory at the same
addresses in every child, so that finds PostgreSQL's backends on their ``shared_buffers``.
Two programs that each map one file (a shared library's text, an LMDB or SQLite database,
a JVM's class-data archive, a SysV segment attached at different addresses) hold the same
page-cache pages at different addresses, and by address their views never meet: a page one
program reads and the other only maps is counted as half used, with no error.

A page of a file at one offset is one page wherever it is mapped (a private mapping's page
that copy-on-write replaced is no longer the file's; it is then the process' own, mapped
once, and not shared). So before the pass, the shared regions over a file that the
target's processes map at more than one base (address minus file offset) are moved into a
coordinate space of that file: the file's offset, far above every user address. There the
pass finds the same page by offset as it finds forked memory by address. A region that
covers both such a file and other memory is cut at the mapping's edges, its bytes shared
between the parts by length, as the pass cuts shared memory into pieces; each part keeps
its region's access (a region's samples say nothing of where in it they fell).

Files every process maps at one base are left where they are: there, address and offset
agree, and frames (where read) still tell unrelated programs at one address apart.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import Sequence

from exporter.model.records import FileMapping, RegionRecord

#: the first coordinate of the file space: above every user address (57-bit at most); file
#: ``i`` (of those moved) takes ``[(i + 1) << 64, (i + 2) << 64)``, its offset added
FILE_SPACE = 1 << 64


@dataclass(frozen=True, slots=True)
class Relocation:
    """Shared regions in coordinates: each either a region as it was, or a part of one
    (cut at a moved mapping's edge), moved by ``shift`` (coordinate minus address)."""

    regions: list[RegionRecord]
    #: id(part) -> (the region it was cut from, shift); regions left whole are not in it
    origin: dict[int, tuple[RegionRecord, int]]

    def source(self, r: RegionRecord) -> RegionRecord:
        """The region ``r`` is (a part of)."""
        o = self.origin.get(id(r))
        return r if o is None else o[0]

    def shift(self, r: RegionRecord) -> int:
        o = self.origin.get(id(r))
        return 0 if o is None else o[1]


def moved_mappings(mappings: Sequence[FileMapping]) -> dict[int, list[tuple[int, int, int]]]:
    """Per process, the mappings (sorted ``(start, end, shift)``) of files that the
    processes map at more than one base; none where every file sits at one base."""
    bases: dict[tuple[int, int], set[int]] = {}
    for m in mappings:
        bases.setdefault((m.device, m.inode), set()).add(m.start - m.offset)
    moved = sorted(f for f, b in bases.items() if len(b) > 1)
    index = {f: i for i, f in enumerate(moved)}
    out: dict[int, list[tuple[int, int, int]]] = {}
    for m in mappings:
        i = index.get((m.device, m.inode))
        if i is not None and m.end > m.start:
            out.setdefault(m.pid, []).append((m.start, m.end, ((i + 1) << 64) + m.offset - m.start))
    for spans in out.values():
        spans.sort()
    return out


def relocate(shared: Sequence[RegionRecord], mappings: Sequence[FileMapping]) -> Relocation:
    """``shared`` (regions with shared bytes) with every part over a moved file's mapping
    in that file's coordinates (see the module's docstring)."""
    spans = moved_mappings(mappings)
    if not spans:
        return Relocation(list(shared), {})
    starts = {pid: [s for s, _, _ in v] for pid, v in spans.items()}
    out: list[RegionRecord] = []
    origin: dict[int, tuple[RegionRecord, int]] = {}
    for r in shared:
        own = spans.get(r.pid)
        cuts = _cuts(r, own, starts[r.pid]) if own else [(r.start, r.end, 0)]
        if len(cuts) == 1 and cuts[0][2] == 0:
            out.append(r)
            continue
        for lo, hi, shift in cuts:
            part = _part(r, lo, hi, shift)
            if part.resident_bytes > 0 or part.shared_bytes > 0:
                origin[id(part)] = (r, shift)
                out.append(part)
    return Relocation(out, origin)


def _cuts(r: RegionRecord, own: list[tuple[int, int, int]], starts: list[int]) -> list[tuple[int, int, int]]:
    """``[lo, hi)`` pieces of ``r`` with their shift: a moved mapping's, or 0 between."""
    out: list[tuple[int, int, int]] = []
    at = r.start
    i = max(0, bisect_right(starts, r.start) - 1)
    while i < len(own) and own[i][0] < r.end:
        s, e, shift = own[i]
        i += 1
        if e <= at:
            continue
        s = max(s, at)
        if s > at:
            out.append((at, s, 0))
        e = min(e, r.end)
        out.append((s, e, shift))
        at = e
    if at < r.end:
        out.append((at, r.end, 0))
    return out


def _part(r: RegionRecord, lo: int, hi: int, shift: int) -> RegionRecord:
    """``[lo, hi)`` of ``r`` moved by ``shift``, its bytes in proportion to its length
    (cut by offset, so the parts of a region add up exactly)."""
    size = r.end - r.start

    def cut(n: int) -> int:
        return round(n * (hi - r.start) / size) - round(n * (lo - r.start) / size)

    resident = cut(r.resident_bytes)
    f = resident / r.resident_bytes if r.resident_bytes else 0.0
    frames = None if r.frames is None else tuple((a + shift, pfn) for a, pfn in r.frames if lo <= a < hi)
    return replace(
        r, start=lo + shift, end=hi + shift, resident_bytes=resident, shared_bytes=cut(r.shared_bytes),
        idle_distribution=tuple((s, round(b * f)) for s, b in r.idle_distribution),
        accessed_bytes=round(r.accessed_bytes * f), frames=frames)
