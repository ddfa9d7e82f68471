"""A terminal heatmap of access frequency over address and time (like damo's ``report heatmap``).

Rows are time (one per aggregation, or consecutive aggregations averaged together so that
there are at most ``max_rows``), columns are the monitored address space of the target. A
process' address space is mostly unmapped, so only the spans that some region covered at
some point are drawn, one after the other (per process, in pid then address order) with the
gaps between them squeezed out; every column then stands for the same number of bytes and
the legend says which address range each column range shows.

A cell is the byte-weighted mean access frequency (``nr_accesses / nr_checks``) of the
regions overlapping its bytes in its time row, drawn with a character ramp; a cell that no
region covered in that row is blank.
"""

from __future__ import annotations

from typing import Sequence

from exporter.report.units import format_bytes
from exporter.summary import TargetSummary

#: '.' is exactly 0; then one character per eighth of the frequency range
RAMP = ".:-=+*#%@"
#: ANSI foreground colours per ramp level (grey, then blue -> red), used on terminals only
COLOURS = ("90", "34", "36", "32", "92", "33", "93", "31", "91")
RESET = "\x1b[0m"
MAX_LEGEND_LINES = 16


def level(freq: float) -> int:
    """Ramp index of an access frequency: 0 for none, 1..8 for each eighth (8 includes 1.0)."""
    if freq <= 0.0:
        return 0
    return 1 + min(7, int(freq * 8))


def ramp_legend() -> str:
    steps = ", ".join(f"'{RAMP[i]}' <{i * 12.5:g}%" for i in range(1, 8))
    return f"ramp (access frequency): ' ' no region, '{RAMP[0]}' 0%, {steps}, '{RAMP[8]}' >=87.5%"


def _spans(targets: Sequence[TargetSummary]) -> list[tuple[int, int, int]]:
    """Union of every region of every frame, as sorted (pid, start, end) spans."""
    by_pid: dict[int, list[tuple[int, int]]] = {}
    for t in targets:
        for r in t.regions:
            by_pid.setdefault(r.pid, []).append((r.start, r.end))
    out: list[tuple[int, int, int]] = []
    for pid in sorted(by_pid):
        cur_s = cur_e = None
        for s, e in sorted(by_pid[pid]):
            if cur_e is not None and s <= cur_e:
                cur_e = max(cur_e, e)
                continue
            if cur_s is not None:
                out.append((pid, cur_s, cur_e))
            cur_s, cur_e = s, e
        if cur_s is not None:
            out.append((pid, cur_s, cur_e))
    return out


class _Layout:
    """Squeezed coordinates: span i occupies [offset[i], offset[i] + size) of ``total`` bytes,
    and column c shows squeezed bytes [c * total // width, (c + 1) * total // width)."""

    def __init__(self, spans: list[tuple[int, int, int]], width: int) -> None:
        self.spans = spans
        self.offsets: list[int] = []
        off = 0
        for _pid, s, e in spans:
            self.offsets.append(off)
            off += e - s
        self.total = off
        self.width = max(1, min(width, self.total // 4096 or 1))
        self._index = {}
        for i, (pid, _s, _e) in enumerate(spans):
            self._index.setdefault(pid, []).append(i)

    def squeeze(self, pid: int, start: int, end: int) -> tuple[int, int] | None:
        for i in self._index.get(pid, ()):
            _p, s, e = self.spans[i]
            if s <= start and end <= e:
                return self.offsets[i] + start - s, self.offsets[i] + end - s
        return None

    def col_lo(self, off: int) -> int:
        return off * self.width // self.total

    def col_start(self, c: int) -> int:
        return c * self.total // self.width


def _accumulate(layout: _Layout, t: TargetSummary, sums: list[float], weights: list[int]) -> None:
    """Add one frame's byte-weighted frequencies into per-column sums."""
    for r in t.regions:
        sq = layout.squeeze(r.pid, r.start, r.end)
        if sq is None:
            continue
        a, b = sq
        f = r.frequency
        c = layout.col_lo(a)
        while c < layout.width and layout.col_start(c) < b:
            lo, hi = max(a, layout.col_start(c)), min(b, layout.col_start(c + 1))
            if hi > lo:
                sums[c] += f * (hi - lo)
                weights[c] += hi - lo
            c += 1


def _row(sums: list[float], weights: list[int], colour: bool) -> str:
    out = []
    current = None
    for s, w in zip(sums, weights):
        if w == 0:
            ch, code = " ", None
        else:
            lv = level(s / w)
            ch, code = RAMP[lv], COLOURS[lv]
        if colour and code != current:
            out.append(RESET if code is None else f"\x1b[{code}m")
            current = code
        out.append(ch)
    if colour and current is not None:
        out.append(RESET)
    return "".join(out)


def render_heatmap(
    frames: Sequence[tuple[float, TargetSummary]],
    *,
    width: int = 80,
    max_rows: int = 30,
    colour: bool = False,
) -> list[str]:
    """The heatmap of one target as lines of text. ``frames`` are (seconds since the start,
    target summary) in time order; ``width`` counts the cell columns only (the time labels
    come on top of it)."""
    targets = [t for _e, t in frames]
    spans = _spans(targets)
    if not frames or not spans:
        return ["heatmap: no regions were monitored"]
    layout = _Layout(spans, width)
    n = len(frames)
    rows = min(n, max(1, max_rows))
    labels = []
    cells = []
    for i in range(rows):
        lo, hi = i * n // rows, (i + 1) * n // rows
        sums = [0.0] * layout.width
        weights = [0] * layout.width
        for _elapsed, t in frames[lo:hi]:
            _accumulate(layout, t, sums, weights)
        labels.append(f"{frames[hi - 1][0]:.1f}s")
        cells.append(_row(sums, weights, colour))
    lw = max(len("time"), max(len(x) for x in labels))
    per_col = layout.total / layout.width
    lines = [
        f"heatmap: {format_bytes(layout.total)} of address space in {layout.width} columns "
        f"({format_bytes(per_col)} each, unmonitored gaps squeezed out); "
        f"{rows} rows of time ({n} aggregations)",
        f"{'time':>{lw}} |",
    ]
    lines += [f"{lab:>{lw}} |{row}" for lab, row in zip(labels, cells)]
    lines.append(ramp_legend())
    lines.append("address ranges (columns, pid, range, size):")
    lines += _legend(layout)
    return lines


def _legend(layout: _Layout) -> list[str]:
    """One line per span, largest spans first when there are too many to list."""
    entries = []
    for i, (pid, s, e) in enumerate(layout.spans):
        a = layout.offsets[i]
        first, last = layout.col_lo(a), layout.col_lo(a + (e - s) - 1)
        entries.append((first, last, pid, s, e))
    shown = entries
    if len(entries) > MAX_LEGEND_LINES:
        shown = sorted(sorted(entries, key=lambda x: x[4] - x[3], reverse=True)[:MAX_LEGEND_LINES])
    cw = len(str(layout.width - 1))
    pw = max(len(str(x[2])) for x in shown)
    lines = [
        f"  {first:>{cw}}-{last:<{cw}}  pid {pid:<{pw}}  {s:#014x}-{e:#014x}  {format_bytes(e - s)}"
        for first, last, pid, s, e in shown
    ]
    if len(shown) < len(entries):
        rest = [x for x in entries if x not in shown]
        lines.append(f"  ... and {len(rest)} smaller ranges ({format_bytes(sum(x[4] - x[3] for x in rest))})")
    return lines
