"""The exporter's own metrics: build, backend, sampler cost and budget, errors, config reloads.

``damon_exporter_build_info`` carries only what is fixed at build time (as node_exporter's
does); the backend is chosen at run time and may change on reload, so it has its own gauge,
``damon_sampler_backend_info``, next to the sampler's other run-time gauges.
"""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter.build import build_info
from exporter.discovery.kube_client import FETCH_ERRORS
from exporter.metrics.catalog import ERRORS_HELP, SELF_METRICS, family, published
from exporter.model.errors import ERROR_KINDS
from exporter.service.state import ServiceState

__all__ = ["ERRORS_HELP", "SELF_METRIC_NAMES", "self_families"]

SELF_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in SELF_METRICS)


def self_families(state: ServiceState) -> list[Metric]:
    info = build_info()
    build = family("damon_exporter_build_info")
    build.add_metric([state.version, info.revision, info.branch, info.pythonversion], 1)
    backend = family("damon_sampler_backend_info")
    backend.add_metric([state.backend], 1)
    passed = family("damon_sampler_backend_passed_over")
    for name, why in state.backend_passed_over:
        passed.add_metric([name, why], 1)
    checks = family("damon_sampler_checks_total")
    checks.add_metric([], state.checks_total)
    cpu = family("damon_sampler_cpu_seconds_total")
    cpu.add_metric([], state.cpu_seconds_total)
    kernel_cpu = family("damon_sampler_kernel_cpu_seconds_total")
    kernel_cpu.add_metric([], state.kernel_cpu_seconds_total)
    ratio = family("damon_sampler_budget_ratio")
    ratio.add_metric([], state.budget_ratio)
    budget = family("damon_sampler_cpu_budget_ratio")
    budget.add_metric([], state.cpu_budget)
    si = family("damon_sampler_sample_interval_seconds")
    si.add_metric([], state.sample_interval)
    ai = family("damon_sampler_aggregation_interval_seconds")
    ai.add_metric([], state.aggregation_interval)
    shortest = family("damon_sampler_shortest_counted_return_seconds")
    if state.shortest_counted_return is not None:  # no engine yet: not known, not 0
        shortest.add_metric([], state.shortest_counted_return)
    errors = family("damon_sampler_errors_total")
    counts = dict(state.errors_total)
    for kind in [*ERROR_KINDS, *sorted(set(counts) - set(ERROR_KINDS))]:  # every kind at 0 from the start: rate() works
        errors.add_metric([kind], counts.get(kind, 0))
    cold_age = family("damon_config_cold_age_seconds")
    cold_age.add_metric([], state.cold_age)
    window = family("damon_config_working_set_window_seconds")
    window.add_metric([], state.working_set_window)
    mem_limit = family("damon_config_memory_limit_bytes")
    mem_limit.add_metric([], state.memory_limit)
    mem_limited = family("damon_sampler_memory_limited")
    mem_limited.add_metric([], 1 if state.memory_limited else 0)
    embedded = family("damon_config_embedded_default")
    embedded.add_metric([], 1 if state.default_config else 0)
    ok = family("damon_config_last_reload_successful")
    ok.add_metric([], 1 if state.reload_successful else 0)
    ts = family("damon_config_last_reload_success_timestamp_seconds")
    ts.add_metric([], state.reload_success_timestamp)
    out = [build, backend, passed, checks, cpu, kernel_cpu, ratio, budget, si, ai, shortest, errors, cold_age, window, mem_limit,
           mem_limited, embedded, ok, ts]
    return published(out, state.backend) + kube_families(state)


def kube_families(state: ServiceState) -> list[Metric]:
    """The pod metadata source's health; nothing while no pod metadata is fetched."""
    kube = state.kube
    if kube is None:
        return []
    up = family("damon_kube_metadata_up")
    up.add_metric([], 1 if kube.up else 0)
    errors = family("damon_kube_metadata_errors_total")
    for reason, n in kube.errors or ((r, 0) for r in FETCH_ERRORS):  # every reason at 0 from the start
        errors.add_metric([reason], n)
    last = family("damon_kube_metadata_last_success_timestamp_seconds")
    last.add_metric([], kube.last_success)
    return [up, errors, last]

