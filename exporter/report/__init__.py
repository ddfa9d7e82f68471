"""Rendering of a finished ``damon-exporter snapshot`` run: table + heatmap, JSON.

Pure functions of a :class:`~exporter.report.run.Recording` (no I/O, no clock), so that the
output is testable byte for byte with synthetic summaries.
"""

from exporter.report.heatmap import render_heatmap
from exporter.report.jsonout import render_json
from exporter.report.run import Frame, Recording
from exporter.report.table import render_table
from exporter.report.units import format_bytes

__all__ = ["Frame", "Recording", "format_bytes", "render_heatmap", "render_json", "render_table"]
