"""Per-target metric families, built fresh from one immutable summary.

A pure function of its inputs: the same :class:`~exporter.summary.Summary` always gives the
same families, which is what lets ``damon-exporter snapshot --format prometheus`` and the
long-running exporter print exactly the same contract.

Label set: ``target`` plus the discoverer's extra label names, in that order, every series
carrying all of them (``""`` where a target has no value), so PromQL joins never meet a
missing label.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from exporter.metrics.catalog import TARGET_METRICS, family, published
from exporter.summary import Summary, TargetSummary

#: every per-target family this module can emit, for tests and documentation
TARGET_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in TARGET_METRICS)


def target_up(t: TargetSummary) -> int:
    """1 when at least one process was monitored in this aggregation and none failed.

    A target with zero processes is *down* (0): there is nothing we measured, and
    ``damon_target_processes == 0`` tells that case apart from an error.
    """
    return 1 if t.pids and not t.errors else 0


#: a target's labels -> labels it gets on top (pod names of a kube-split target)
Names = Callable[[Sequence[tuple[str, str]]], Mapping[str, str]]


def label_values(name: str, labels: Sequence[tuple[str, str]], label_names: Sequence[str], names: Names | None = None) -> list[str]:
    d = dict(labels)
    if names is not None:
        d.update(names(labels))
    return [name] + [d.get(n, "") for n in label_names]


def _histogram(pairs: Sequence[tuple[float, int]]) -> list[tuple[str, float]]:
    return [(floatToGoString(b), float(v)) for b, v in pairs]


def target_families(
    summary: Summary | None,
    label_names: Sequence[str] = (),
    pending: Iterable[tuple[str, int, tuple[tuple[str, str], ...]]] = (),
    *,
    histograms: bool = True,
    extra_labels: Names | None = None,
) -> list[Metric]:
    """Metric families for every target of ``summary``.

    ``pending`` lists (name, nr_processes, labels) of targets that are configured but not
    yet in any aggregation: they get ``damon_target_processes`` and ``damon_target_up 0``
    only, so a dashboard shows them from the first scrape and no made-up zeros appear in
    the memory gauges. ``extra_labels`` adds labels from outside the summary: the pod names of
    kube-split targets, looked up at each new state, so a name that appears or changes
    relabels the series without restarting the target's history.
    """
    names = ["target", *label_names]

    def fam(name: str) -> Metric:
        return family(name, names)

    processes, up, unmonitored = fam("damon_target_processes"), fam("damon_target_up"), fam("damon_target_unmonitored_processes")
    last, regions, regions_max = fam("damon_target_last_aggregation_timestamp_seconds"), fam("damon_regions"), fam("damon_regions_max")
    resident, working, working_at = fam("damon_resident_bytes"), fam("damon_working_set_bytes"), fam("damon_working_set_measured_timestamp_seconds")
    cold, cold_at, ratio = fam("damon_cold_bytes"), fam("damon_cold_measured_timestamp_seconds"), fam("damon_cold_ratio")
    ws_error, cold_error = fam("damon_working_set_error_bytes"), fam("damon_cold_error_bytes")
    idle, freq = fam("damon_idle_age_seconds"), fam("damon_access_frequency_ratio")
    promoted, promoted_error = fam("damon_cold_promoted_bytes_total"), fam("damon_cold_promoted_error_bytes_total")
    reaccess = fam("damon_reaccess_idle_age_seconds")
    resets = fam("damon_target_accessed_bits_reset_total")
    seen: set[str] = set()
    for t in summary.targets if summary is not None else ():
        seen.add(t.name)
        lv = label_values(t.name, t.labels, label_names, extra_labels)
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
        resets.add_metric(lv, t.accessed_bits_resets)
        if t.promotions is not None:
            p = t.promotions
            promoted.add_metric(lv, p.promoted_bytes)
            promoted_error.add_metric(lv, p.promoted_error_bytes)
            reaccess.add_metric(lv, _histogram(p.histogram), p.idle_sum)
        idle.add_metric(lv, _histogram(t.idle_age_histogram), t.idle_age_sum)
        freq.add_metric(lv, _histogram(t.frequency_histogram), t.frequency_sum)
    for name, nr, labels in pending:
        if name in seen:
            continue
        lv = label_values(name, labels, label_names, extra_labels)
        processes.add_metric(lv, nr)
        up.add_metric(lv, 0)
    out = [processes, up, unmonitored, last, regions, regions_max, resident, working, working_at, cold, cold_at, ratio,
           ws_error, cold_error, resets, promoted, promoted_error]
    if histograms:
        out += [idle, freq, reaccess]
    backend = summary.raw.backend if summary is not None else "none"
    return published(out, backend)
