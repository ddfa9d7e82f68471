"""The exporter's own metrics: build, backend, sampler cost and budget, errors, config reloads.

``damon_exporter_build_info`` carries only what is fixed at build time (as node_exporter's
does); the backend is chosen at run time and may change on reload, so it has its own gauge,
``damon_sampler_backend_info``, next to the sampler's other run-time gauges.
"""

from __future__ import annotations

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from exporter.build import build_info
from exporter.model.errors import ERROR_KINDS
from exporter.service.state import WEB_REJECT_REASONS, ServiceState

#: HELP of damon_sampler_errors_total, from the one declaration of the kinds
ERRORS_HELP = "Problems met by the sampler, by kind: " + "; ".join(f"{k}: {v}" for k, v in ERROR_KINDS.items()) + ". Exited processes are not errors."

SELF_METRIC_NAMES: tuple[str, ...] = (
    "damon_exporter_build_info",
    "damon_sampler_backend_info",
    "damon_sampler_backend_passed_over",
    "damon_sampler_checks_total",
    "damon_sampler_cpu_seconds_total",
    "damon_sampler_kernel_cpu_seconds_total",
    "damon_sampler_budget_ratio",
    "damon_sampler_cpu_budget_ratio",
    "damon_sampler_sample_interval_seconds",
    "damon_sampler_aggregation_interval_seconds",
    "damon_sampler_errors_total",
    "damon_config_cold_age_seconds",
    "damon_config_working_set_window_seconds",
    "damon_config_last_reload_successful",
    "damon_config_last_reload_success_timestamp_seconds",
    "damon_web_config_last_reload_successful",
    "damon_web_config_last_reload_success_timestamp_seconds",
    "damon_web_rejected_total",
)



def self_families(state: ServiceState) -> list[Metric]:
    info = build_info()
    build = GaugeMetricFamily(
        "damon_exporter_build_info",
        "A metric with a constant '1' value labeled by version, revision, branch, and pythonversion from which damon-exporter was built.",
        labels=["version", "revision", "branch", "pythonversion"],
    )
    build.add_metric([state.version, info.revision, info.branch, info.pythonversion], 1)
    backend = GaugeMetricFamily("damon_sampler_backend_info", "Constant 1, labelled by the access-check backend the sampler uses now ('none' until it has opened one).", labels=["backend"])
    backend.add_metric([state.backend], 1)
    passed = GaugeMetricFamily("damon_sampler_backend_passed_over", "Constant 1 for each backend `auto` passed over before the one in use, labelled by why: unavailable (its check failed: a missing kernel feature or privilege, kernel DAMON in use by someone else), refused (building it raised), failed (it failed before its first aggregation). The landing page and log say the details.", labels=["backend", "reason"])
    for name, why in state.backend_passed_over:
        passed.add_metric([name, why], 1)
    checks = CounterMetricFamily("damon_sampler_checks_total", "Access checks by the engine: page_idle, one sampled page of one region; damon_sysfs, the kernel's samples of the regions read back (regions x samples per aggregation); clear_refs, one smaps read of one process.")
    checks.add_metric([], state.checks_total)
    cpu = CounterMetricFamily("damon_sampler_cpu_seconds_total", "CPU time used by the sampler thread, in seconds.", unit="seconds")
    cpu.add_metric([], state.cpu_seconds_total)
    kernel_cpu = CounterMetricFamily("damon_sampler_kernel_cpu_seconds_total", "CPU time kernel threads spent for the sampler's engine (kernel DAMON's kdamond; 0 for the user-space backends), in seconds. The CPU budget counts it with the sampler thread's.", unit="seconds")
    kernel_cpu.add_metric([], state.kernel_cpu_seconds_total)
    ratio = GaugeMetricFamily("damon_sampler_budget_ratio", "CPU share of one core over the budget window, the sampler thread's and the kernel's for it (kdamond) together, divided by the configured cpu_budget (above 1 = over budget).")
    ratio.add_metric([], state.budget_ratio)
    budget = GaugeMetricFamily("damon_sampler_cpu_budget_ratio", "Configured CPU budget of the sampler, as a share of one core (0 = no budget).")
    budget.add_metric([], state.cpu_budget)
    si = GaugeMetricFamily("damon_sampler_sample_interval_seconds", "Sample interval in effect, in seconds (longer than configured while the CPU budget stretches it).", unit="seconds")
    si.add_metric([], state.sample_interval)
    ai = GaugeMetricFamily("damon_sampler_aggregation_interval_seconds", "Aggregation interval in effect, in seconds.", unit="seconds")
    ai.add_metric([], state.aggregation_interval)
    errors = CounterMetricFamily("damon_sampler_errors_total", ERRORS_HELP, labels=["kind"])
    counts = dict(state.errors_total)
    for kind in [*ERROR_KINDS, *sorted(set(counts) - set(ERROR_KINDS))]:  # every kind at 0 from the start: rate() works
        errors.add_metric([kind], counts.get(kind, 0))
    cold_age = GaugeMetricFamily("damon_config_cold_age_seconds", "The cold_age in force: memory idle at least this long is cold (damon_cold_bytes).", unit="seconds")
    cold_age.add_metric([], state.cold_age)
    window = GaugeMetricFamily("damon_config_working_set_window_seconds", "The working_set_window in force: memory used within it is the working set (damon_working_set_bytes).", unit="seconds")
    window.add_metric([], state.working_set_window)
    ok = GaugeMetricFamily("damon_config_last_reload_successful", "1 if the last configuration (re)load succeeded, 0 if it failed and the previous config is still in use.")
    ok.add_metric([], 1 if state.reload_successful else 0)
    ts = GaugeMetricFamily("damon_config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration load.", unit="seconds")
    ts.add_metric([], state.reload_success_timestamp)
    return [build, backend, passed, checks, cpu, kernel_cpu, ratio, budget, si, ai, errors, cold_age, window, ok, ts, *web_families(state)]


def web_families(state: ServiceState) -> list[Metric]:
    ok = GaugeMetricFamily("damon_web_config_last_reload_successful", "1 if the web config (TLS, users; re-checked per connection) last loaded fine, 0 if it failed and the previous one is still in use.")
    ok.add_metric([], 1 if state.web_reload_successful else 0)
    ts = GaugeMetricFamily("damon_web_config_last_reload_success_timestamp_seconds", "Unix time of the last successful web config load.", unit="seconds")
    ts.add_metric([], state.web_reload_success_timestamp)
    rejected = CounterMetricFamily("damon_web_rejected_total", "Connections and requests the HTTP server refused or cut, by reason: " + "; ".join(f"{k}: {v}" for k, v in WEB_REJECT_REASONS.items()) + ".", labels=["reason"])
    counts = dict(state.web_rejected)
    for reason in [*WEB_REJECT_REASONS, *sorted(set(counts) - set(WEB_REJECT_REASONS))]:
        rejected.add_metric([reason], counts.get(reason, 0))
    return [ok, ts, rejected]
