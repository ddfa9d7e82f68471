"""The HTML landing page at ``/``: what this is, where the metrics are, what it watches.

One row per target group (a target, or one of its group_by / name-template groups) with the
labels that tell groups apart and the numbers an operator looks for first: resident memory,
working set, cold bytes and the cold ratio, as of the latest aggregation, each figure with
how far it may be off and how long ago it was measured (clear_refs measures some only once
per clear period). A cold figure nothing has been watched long enough to prove reads "not
known yet", never 0%. The intervals in effect stand beside the configured ones, with the
reason when they differ (the CPU budget), in units people read.
"""

from __future__ import annotations

import time
from html import escape

from exporter.config.default import DEFAULT_CONFIG_YAML, DEFAULT_TOP_PROGRAMS
from exporter.metrics.targets import target_up
from exporter.service.state import ServiceState


NOT_KNOWN = "not known yet"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _with_error(n: int, error: int) -> str:
    return _mib(n) + (f" ± {_mib(error)}" if error else "")


def human_seconds(seconds: float) -> str:
    """A duration as people read it: 1.69435 s is "1.7 s", 0.1 s "100 ms", 300 s "5 min"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min".replace(".0 min", " min")
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def _age(measured_at: float, now: float) -> str:
    return "now" if now - measured_at < 0.5 else f"{human_seconds(now - measured_at)} ago"


def intervals(state: ServiceState) -> str:
    """The intervals in effect, beside the configured ones and why they differ."""
    si, ai = state.sample_interval, state.aggregation_interval
    csi = state.configured_sample_interval or si
    cai = state.configured_aggregation_interval or ai
    text = f"Sample interval: {human_seconds(si)}, aggregation interval: {human_seconds(ai)}"
    if (round(si, 3), round(ai, 3)) == (round(csi, 3), round(cai, 3)):
        return text + " (as configured)"
    why = (f"stretched by the CPU budget of {state.cpu_budget:.0%} of a core, {state.budget_ratio:.0%} of it in use"
           if state.cpu_budget else "as the backend runs them")
    return f"{text}; configured {human_seconds(csi)} and {human_seconds(cai)}: {why}"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    """Only labels with a value: every target carries every label name, mostly empty."""
    return ", ".join(f'{k}="{v}"' for k, v in labels if v)


def default_config_notice() -> str:
    """Said at the top of the page while the embedded default config is in use: what it
    watches, and how to write a real config (the default itself, as a starting point)."""
    return f"""<div id="default-config" style="border:2px solid #c90;background:#fff8e0;padding:.5em 1em;margin:1em 0">
<p><strong>No config file: the embedded default config is in use.</strong> It watches the {DEFAULT_TOP_PROGRAMS} programs with the most
resident memory on this machine, one target per program name, chosen again at every discovery.</p>
<p>To choose what to watch, write a config file and start the exporter with <code>--config.file FILE</code>:
<code>config.example.yaml</code> documents every key, and the README's <em>Configuration</em> section
(<code>README.md#configuration</code>) explains them; <code>damon-exporter check-config FILE</code> checks a file before you use it.
The default, as a file to start from:</p>
<pre>{escape(DEFAULT_CONFIG_YAML)}</pre>
</div>
"""


COLUMNS = ("target", "labels", "processes", "state", "resident", "working set", "working set measured",
           "cold", "cold measured", "cold ratio")


def _state(t) -> str:
    """up, or down with the reason a user can act on: processes not monitored and why, the
    first error, or no process at all."""
    if target_up(t):
        return "up"
    if t.not_monitored:
        why = ", ".join(f"{n} {kind}" for kind, n in t.not_monitored)
        first = f": {t.errors[0]}" if t.errors else ""
        return f"down: not monitored: {why}{first}"
    if t.errors:
        return f"down: {t.errors[0]}"
    return "down: no process matches"


def landing_page(state: ServiceState, metrics_path: str, now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    rows = []
    summary = state.summary
    for t in summary.targets if summary is not None else ():
        known = t.cold_known
        rows.append((
            t.name,
            _labels(t.labels),
            str(len(t.pids)),
            _state(t),
            _mib(t.resident_bytes),
            _with_error(t.working_set_bytes, t.working_set_error_bytes),
            _age(t.working_set_measured_at or t.aggregated_at, now),
            _with_error(t.cold_bytes, t.cold_error_bytes) if known else NOT_KNOWN,
            _age(t.cold_measured_at or t.aggregated_at, now) if known else NOT_KNOWN,
            f"{t.cold_ratio:.0%}" if known else NOT_KNOWN,
        ))
    for p in state.pending:
        rows.append((p.name, _labels(p.labels), str(p.nr_processes), "waiting for first aggregation", *[""] * (len(COLUMNS) - 4)))
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(COLUMNS)}">no targets</td></tr>'
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    html = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>DAMON Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style>
</head><body>
<h1>DAMON Exporter</h1>
<p>Memory access patterns (working set, idle age, cold memory) of processes and cgroups, sampled with DAMON's region-based algorithm from user space.</p>
{default_config_notice() if state.default_config else ""}<ul>
<li>Version: {escape(state.version)}</li>
<li>Backend: {escape(state.backend)}{f" ({escape(state.backend_reason)})" if state.backend_reason else ""}</li>
<li id="intervals">{escape(intervals(state))}</li>
<li><a href="{escape(metrics_path, quote=True)}">Metrics</a> &middot; <a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></li>
</ul>
<h2>Targets</h2>
<table><tr>{head}</tr>{body}</table>
</body></html>
"""
    return html.encode("utf-8")
