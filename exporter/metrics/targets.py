"""Per-target metric families, built fresh from one immutable summary.

A pure function of its inputs: the same :class:`~exporter.summary.Summary` always gives the
same families, which is what lets ``damon-exporter snapshot --format prometheus`` and the
long-running exporter print exactly the same contract.

Label set: ``target`` plus the discoverer's extra label names, in that order, every series
carrying all of them (``""`` where a target has no value), so PromQL joins never meet a
missing label.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from prometheus_client.metrics_core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from exporter.summary import Summary, TargetSummary

#: every per-target family this module can emit, for tests and documentation
TARGET_METRIC_NAMES: tuple[str, ...] = (
    "damon_target_processes",
    "damon_target_up",
    "damon_target_unmonitored_processes",
    "damon_target_last_aggregation_timestamp_seconds",
    "damon_regions",
    "damon_regions_max",
    "damon_resident_bytes",
    "damon_working_set_bytes",
    "damon_working_set_measured_timestamp_seconds",
    "damon_cold_bytes",
    "damon_cold_measured_timestamp_seconds",
    "damon_cold_ratio",
    "damon_working_set_error_bytes",
    "damon_cold_error_bytes",
    "damon_idle_age_seconds",
    "damon_access_frequency_ratio",
)


def target_up(t: TargetSummary) -> int:
    """1 when at least one process was monitored in this aggregation and none failed.

    A target with zero processes is *down* (0): there is nothing we measured, and
    ``damon_target_processes == 0`` tells that case apart from an error.
    """
    return 1 if t.pids and not t.errors else 0


def label_values(name: str, labels: Iterable[tuple[str, str]], label_names: Sequence[str]) -> list[str]:
    d = dict(labels)
    return [name] + [d.get(n, "") for n in label_names]


def _histogram(pairs: Sequence[tuple[float, int]]) -> list[tuple[str, float]]:
    return [(floatToGoString(b), float(v)) for b, v in pairs]


def target_families(
    summary: Summary | None,
    label_names: Sequence[str] = (),
    pending: Iterable[tuple[str, int, tuple[tuple[str, str], ...]]] = (),
    *,
    histograms: bool = True,
) -> list[Metric]:
    """Metric families for every target of ``summary``.

    ``pending`` lists (name, nr_processes, labels) of targets that are configured but not
    yet in any aggregation: they get ``damon_target_processes`` and ``damon_target_up 0``
    only, so a dashboard shows them from the first scrape and no made-up zeros appear in
    the memory gauges.
    """
    names = ["target", *label_names]

    def gauge(name: str, doc: str, unit: str = "") -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=names, unit=unit)

    processes = gauge("damon_target_processes", "Processes of the target monitored in the last aggregation (pending targets: processes found by discovery).")
    up = gauge("damon_target_up", "1 if the target's processes were all monitored without error in the last aggregation; 0 before the first aggregation, on error, or with no processes.")
    unmonitored = GaugeMetricFamily(
        "damon_target_unmonitored_processes",
        "Processes discovery found for the target that the engine does not monitor, by why (the kind of damon_sampler_errors_total: permission, io, limit, ...). A target whose processes the exporter may not read shows them here, not as a target without processes.",
        labels=[*names, "kind"])
    last = gauge("damon_target_last_aggregation_timestamp_seconds", "Unix time of the target's last aggregation.", "seconds")
    regions = gauge("damon_regions", "DAMON regions of the target (all its processes) at the end of the last aggregation.")
    regions_max = gauge("damon_regions_max", "Current region cap of the target; below the configured max_regions while the CPU budget holds it down.")
    resident = gauge("damon_resident_bytes", "Resident bytes in the target's monitored regions.", "bytes")
    working = gauge("damon_working_set_bytes", "Resident bytes seen accessed within the configured working_set_window.", "bytes")
    working_at = gauge("damon_working_set_measured_timestamp_seconds", "Unix time the published working set was measured: the last aggregation for DAMON engines; for clear_refs, the last time working_set_window had passed since a clear.", "seconds")
    cold = gauge("damon_cold_bytes", "Resident bytes not seen accessed for at least the configured cold_age.", "bytes")
    cold_at = gauge("damon_cold_measured_timestamp_seconds", "Unix time the published cold bytes were measured (as for the working set, with cold_age).", "seconds")
    ratio = gauge("damon_cold_ratio", "damon_cold_bytes / damon_resident_bytes (0..1; 0 when nothing is resident).", "ratio")
    ws_error = gauge("damon_working_set_error_bytes", "Expected error of damon_working_set_bytes: resident bytes at region edges that the samples suggest are on the wrong side, plus bytes watched for less than working_set_window and never seen accessed.", "bytes")
    cold_error = gauge("damon_cold_error_bytes", "Expected error of damon_cold_bytes: resident bytes at region edges that the samples suggest are on the wrong side of cold_age.", "bytes")
    idle = GaugeHistogramMetricFamily(
        "damon_idle_age_seconds",
        "Resident bytes by time since last seen accessed (seconds); bucket values and _gcount are bytes, _gsum is byte-seconds.",
        labels=names,
        unit="seconds",
    )
    freq = GaugeHistogramMetricFamily(
        "damon_access_frequency_ratio",
        "Resident bytes by share of the last aggregation's samples that saw an access (0..1); bucket values and _gcount are bytes.",
        labels=names,
        unit="ratio",
    )
    seen: set[str] = set()
    for t in summary.targets if summary is not None else ():
        seen.add(t.name)
        lv = label_values(t.name, t.labels, label_names)
        processes.add_metric(lv, len(t.pids))
        up.add_metric(lv, target_up(t))
        for kind, n in t.not_monitored:
            unmonitored.add_metric([*lv, kind], n)
        last.add_metric(lv, t.aggregated_at)
        regions.add_metric(lv, t.nr_regions)
        regions_max.add_metric(lv, t.max_regions)
        resident.add_metric(lv, t.resident_bytes)
        working.add_metric(lv, t.working_set_bytes)
        working_at.add_metric(lv, t.working_set_measured_at)
        cold.add_metric(lv, t.cold_bytes)
        cold_at.add_metric(lv, t.cold_measured_at)
        ratio.add_metric(lv, t.cold_ratio)
        ws_error.add_metric(lv, t.working_set_error_bytes)
        cold_error.add_metric(lv, t.cold_error_bytes)
        idle.add_metric(lv, _histogram(t.idle_age_histogram), t.idle_age_sum)
        freq.add_metric(lv, _histogram(t.frequency_histogram), t.frequency_sum)
    for name, nr, labels in pending:
        if name in seen:
            continue
        lv = label_values(name, labels, label_names)
        processes.add_metric(lv, nr)
        up.add_metric(lv, 0)
    out = [processes, up, unmonitored, last, regions, regions_max, resident, working, working_at, cold, cold_at, ratio, ws_error, cold_error]
    return out + [idle, freq] if histograms else out
