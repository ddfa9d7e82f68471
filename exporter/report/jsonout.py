"""The ``--format json`` output: the last aggregation's targets plus how the run was made."""

from __future__ import annotations

import json

from exporter.report.run import Recording


def run_dict(run: Recording) -> dict:
    """``backend`` and ``targets`` (``TargetSummary.to_dict()``) are the contract; the rest
    says how the numbers were obtained."""
    a = run.attrs
    last = run.last
    return {
        "backend": run.backend,
        "backend_reason": run.backend_reason,
        "duration_seconds": round(run.elapsed, 3),
        "requested_duration_seconds": run.requested_duration,
        "samples": run.samples,
        "aggregations": run.aggregations,
        "attrs": {
            "sample_interval_seconds": a.sample_interval,
            "aggregation_interval_seconds": a.aggregation_interval,
            "update_interval_seconds": a.update_interval,
            "min_regions": a.min_regions,
            "max_regions": a.max_regions,
        },
        "cold_age_seconds": run.cold_age,
        "working_set_window_seconds": run.working_set_window,
        "warnings": list(last.warnings) if last else [],
        "notes": list(run.notes),
        "targets": [t.to_dict() for t in last.targets] if last else [],
    }


def render_json(run: Recording) -> str:
    return json.dumps(run_dict(run), indent=2) + "\n"
