"""The HTML landing page at ``/``: what this is, where the metrics are, what it watches."""

from __future__ import annotations

from html import escape

from ..service.state import ServiceState
from ..metrics.targets import target_up


def landing_page(state: ServiceState, metrics_path: str) -> bytes:
    rows = []
    summary = state.summary
    for t in summary.targets if summary is not None else ():
        rows.append((t.name, str(len(t.pids)), "up" if target_up(t) else "down", f"{t.resident_bytes / 2**20:.1f} MiB", f"{t.cold_ratio:.0%}"))
    for p in state.pending:
        rows.append((p.name, str(p.nr_processes), "waiting for first aggregation", "", ""))
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = '<tr><td colspan="5">no targets</td></tr>'
    html = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>DAMON Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style>
</head><body>
<h1>DAMON Exporter</h1>
<p>Memory access patterns (working set, idle age, cold memory) of processes and cgroups, sampled with DAMON's region-based algorithm from user space.</p>
<ul>
<li>Version: {escape(state.version)}</li>
<li>Backend: {escape(state.backend)}{f" ({escape(state.backend_reason)})" if state.backend_reason else ""}</li>
<li>Sample interval: {state.sample_interval:g} s, aggregation interval: {state.aggregation_interval:g} s</li>
<li><a href="{escape(metrics_path, quote=True)}">Metrics</a> &middot; <a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></li>
</ul>
<h2>Targets</h2>
<table><tr><th>target</th><th>processes</th><th>state</th><th>resident</th><th>cold</th></tr>{body}</table>
</body></html>
"""
    return html.encode("utf-8")
