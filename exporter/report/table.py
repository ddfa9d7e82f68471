"""The ``--format table`` output: a per-target summary in human units, then its heatmap."""

from __future__ import annotations

from exporter.model.durations import format_duration
from exporter.report.heatmap import render_heatmap
from exporter.report.run import Recording
from exporter.report.units import format_bytes, format_percent


def _pids(pids: tuple[int, ...], limit: int = 8) -> str:
    if not pids:
        return "none (all exited)"
    shown = ", ".join(str(p) for p in pids[:limit])
    return shown if len(pids) <= limit else f"{shown}, ... ({len(pids)} processes)"


def render_table(run: Recording, *, width: int = 80, max_rows: int = 30, colour: bool = False) -> str:
    """Summary lines ("key: value") for every target of the last aggregation, each followed by
    the heatmap of that target over the whole run."""
    last = run.last
    if last is None:
        return "no aggregation completed: nothing to report\n"
    a = run.attrs
    lines: list[str] = []
    for t in last.targets:
        lines += [
            f"target:       {t.name}",
            f"pids:         {_pids(t.pids)}",
            f"backend:      {run.backend} ({run.backend_reason})" if run.backend_reason else f"backend:      {run.backend}",
            f"duration:     {run.elapsed:.1f}s, {run.aggregations} aggregations, {run.samples} samples "
            f"(sample {format_duration(a.sample_interval)}, aggregation {format_duration(a.aggregation_interval)})",
            f"resident:     {format_bytes(t.resident_bytes)}",
            f"working set:  {format_bytes(t.working_set_bytes)} (accessed in the last {format_duration(run.working_set_window)})",
            f"cold:         {format_bytes(t.cold_bytes)} (idle for at least {format_duration(run.cold_age)})",
            f"cold ratio:   {format_percent(t.cold_ratio)}",
            f"regions:      {t.nr_regions} (min {a.min_regions}, max {t.max_regions or a.max_regions})",
        ]
        for err in t.errors:
            lines.append(f"error:        {err}")
        lines.append("")
        frames = [(f.elapsed, ft) for f in run.frames if (ft := f.summary.target(t.name)) is not None]
        lines += render_heatmap(frames, width=width, max_rows=max_rows, colour=colour)
        lines.append("")
    for w in last.warnings:
        lines.append(f"warning: {w}")
    for note in run.notes:
        lines.append(f"note: {note}")
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
