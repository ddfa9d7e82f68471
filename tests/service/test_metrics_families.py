"""The /metrics contract, built from hand-made records (no processes, no HTTP)."""

from __future__ import annotations

import math
import platform

import pytest

from prometheus_client.parser import text_string_to_metric_families

from exporter.model.records import Aggregation, EngineStats, RegionRecord, TargetRecords
from exporter.summary import Policy, Summary, summarize
from exporter.summary.promotion import PromotionTracker
from exporter.build import build_info
from exporter.metrics import render_text
from exporter.metrics.self_metrics import self_families
from exporter.metrics.catalog import TARGET_METRICS
from exporter.metrics.targets import TARGET_METRIC_NAMES, target_families
from exporter.model.errors import ERROR_KINDS
from exporter.service.state import ServiceState
from tests.support.sampling_model import unproven

MiB = 1 << 20


def region(pid: int, start: int, size: int, resident: int, acc: int, checks: int, age: int, aggr: float = 1.0) -> RegionRecord:
    idle = 0.0 if acc else age * aggr
    return RegionRecord(pid, start, start + size, resident, nr_accesses=acc, nr_checks=checks, age=age, idle_seconds=idle)


def snapshot(backend: str = "page_idle") -> Summary:
    regions_a = [
        region(1, 0x1000_0000, 8 * MiB, 8 * MiB, 10, 10, 0),  # hot: idle 0, freq 1.0
        region(1, 0x2000_0000, 8 * MiB, 4 * MiB, 3, 10, 0),  # warm: freq 0.3
        region(2, 0x3000_0000, 16 * MiB, 16 * MiB, 0, 10, 200),  # cold: idle 200 s
        region(2, 0x4000_0000, 4 * MiB, 0, 0, 10, 7),  # not resident: weighs nothing
    ]
    a = TargetRecords("web", (1, 2), tuple(regions_a), 1700000000.0, labels=(("team", "blue"),), max_regions=150)
    b = TargetRecords("gone", (), (), 1700000000.0)
    c = TargetRecords("denied", (5,), (region(5, 0x1000, MiB, MiB, 1, 1, 0),), 1700000000.0, errors=("pid 6: permission denied",))
    agg = Aggregation(backend, 1700000000.0, 0.1, 1.0, (a, b, c), EngineStats(checks_total=42))
    return summarize(agg, Policy(cold_age=120, working_set_window=60), PromotionTracker())


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, family: str, sample: str, **labels: str) -> float:
    """A sample by name, from any family (the classic text format splits a gauge
    histogram into a histogram of buckets plus _gcount and _gsum gauges)."""
    for s in (s for f in fams.values() for s in f.samples):
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((sample, labels))


def test_every_target_family_with_help_and_labels():
    fams = parse(render_text(snapshot(), ("team",)))
    # the parser names counters without _total; a metric of other backends only is left out
    names = [m.name.removesuffix("_total") for m in TARGET_METRICS if m.published_with("page_idle")]
    assert set(names) <= set(fams)
    assert "damon_target_accessed_bits_reset" not in fams  # page_idle cannot tell a foreign clear
    for name in names:
        assert fams[name].documentation, name
        for s in fams[name].samples:
            assert {"target", "team"} <= set(s.labels), (name, s)
    # classic text has no gauge histogram type: prometheus_client writes the buckets as a
    # histogram and _gcount/_gsum as gauges (OpenMetrics keeps gaugehistogram, see the
    # end-to-end tests)
    for name in ("damon_idle_age_seconds", "damon_access_frequency_ratio"):
        assert fams[name].type == "histogram"
        assert fams[name + "_gcount"].type == fams[name + "_gsum"].type == "gauge"


def test_values_of_a_target():
    fams = parse(render_text(snapshot(), ("team",)))
    v = lambda fam, name=None, **kw: value(fams, fam, name or fam, target="web", **kw)  # noqa: E731
    assert v("damon_target_processes") == 2
    assert v("damon_regions") == 4
    assert v("damon_regions_max") == 150
    assert v("damon_resident_bytes") == 28 * MiB
    assert v("damon_working_set_bytes") == 12 * MiB
    assert v("damon_cold_bytes") == 16 * MiB
    assert v("damon_cold_ratio") == 16 / 28
    # no two regions of one process touch: no edge, so no spatial error; nothing unknown.
    # What is left is what one aggregation's samples leave unproven of the two used regions
    # (10 hits in 10 checks, 3 in 10), on both figures (both regions are warm too)
    expected = round(unproven((8, 10, 10), (4, 3, 10)))
    assert v("damon_working_set_error_bytes") == v("damon_cold_error_bytes") == expected
    assert v("damon_target_up") == 1
    assert v("damon_target_last_aggregation_timestamp_seconds") == 1700000000.0
    assert value(fams, "damon_target_up", "damon_target_up", target="web", team="blue") == 1


def test_idle_age_histogram_buckets_and_sums():
    fams = parse(render_text(snapshot(), ("team",)))
    buckets = {s.labels["le"]: s.value for s in fams["damon_idle_age_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["target"] == "web"}
    assert list(buckets) == ["0.0", "1.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "1800.0", "3600.0", "+Inf"]
    assert buckets["0.0"] == 12 * MiB
    assert buckets["120.0"] == 12 * MiB
    assert buckets["300.0"] == 28 * MiB
    assert buckets["+Inf"] == 28 * MiB
    assert value(fams, "damon_idle_age_seconds", "damon_idle_age_seconds_gcount", target="web") == 28 * MiB
    assert value(fams, "damon_idle_age_seconds", "damon_idle_age_seconds_gsum", target="web") == 16 * MiB * 200


def test_frequency_histogram_buckets_and_sums():
    fams = parse(render_text(snapshot(), ("team",)))
    buckets = {s.labels["le"]: s.value for s in fams["damon_access_frequency_ratio"].samples
               if s.name.endswith("_bucket") and s.labels["target"] == "web"}
    assert list(buckets) == ["0.0", "0.05", "0.1", "0.2", "0.4", "0.6", "0.8", "1.0", "+Inf"]
    assert buckets["0.0"] == 16 * MiB
    assert buckets["0.2"] == 16 * MiB
    assert buckets["0.4"] == 20 * MiB
    assert buckets["1.0"] == buckets["+Inf"] == 28 * MiB
    gsum = value(fams, "damon_access_frequency_ratio", "damon_access_frequency_ratio_gsum", target="web")
    assert math.isclose(gsum, 8 * MiB * 1.0 + 4 * MiB * 0.3)


def test_up_is_zero_without_processes_or_with_errors_and_labels_default_empty():
    fams = parse(render_text(snapshot(), ("team",)))
    assert value(fams, "damon_target_up", "damon_target_up", target="gone", team="") == 0
    assert value(fams, "damon_target_processes", "damon_target_processes", target="gone") == 0
    assert value(fams, "damon_cold_ratio", "damon_cold_ratio", target="gone") == 0
    assert value(fams, "damon_target_up", "damon_target_up", target="denied") == 0
    assert value(fams, "damon_target_processes", "damon_target_processes", target="denied") == 1


def test_pending_targets_show_processes_and_down_only():
    fams = {f.name: f for f in target_families(None, ("team",), [("new", 3, (("team", "red"),))])}
    assert [(s.labels, s.value) for s in fams["damon_target_processes"].samples] == [({"target": "new", "team": "red"}, 3)]
    assert [s.value for s in fams["damon_target_up"].samples] == [0]
    assert fams["damon_resident_bytes"].samples == []
    # a pending name already in the snapshot is not duplicated
    fams = {f.name: f for f in target_families(snapshot(), ("team",), [("web", 9, ())])}
    assert [s.value for s in fams["damon_target_processes"].samples if s.labels["target"] == "web"] == [2]


def test_self_metrics():
    st = ServiceState(version="1.2.3", backend="clear_refs", cpu_seconds_total=1.5, budget_ratio=0.4, cpu_budget=0.05,
                      sample_interval=0.2, aggregation_interval=2.0, checks_total=99, shortest_counted_return=0.0,
                      errors_total=(("permission", 2), ("weird", 1)), reload_successful=False, reload_success_timestamp=12.0)
    from exporter.metrics import _Families
    from prometheus_client.exposition import generate_latest

    fams = parse(generate_latest(_Families(self_families(st))).decode())
    info = build_info()
    assert value(fams, "damon_exporter_build_info", "damon_exporter_build_info", version="1.2.3", revision=info.revision, branch=info.branch, pythonversion=platform.python_version()) == 1
    assert value(fams, "damon_sampler_backend_info", "damon_sampler_backend_info", backend="clear_refs") == 1
    assert [s.labels for s in fams["damon_sampler_backend_info"].samples] == [{"backend": "clear_refs"}]
    assert value(fams, "damon_sampler_checks", "damon_sampler_checks_total") == 99
    assert value(fams, "damon_sampler_cpu_seconds", "damon_sampler_cpu_seconds_total") == 1.5
    assert value(fams, "damon_sampler_budget_ratio", "damon_sampler_budget_ratio") == 0.4
    assert value(fams, "damon_sampler_sample_interval_seconds", "damon_sampler_sample_interval_seconds") == 0.2
    assert value(fams, "damon_sampler_shortest_counted_return_seconds", "damon_sampler_shortest_counted_return_seconds") == 0.0
    errors = {s.labels["kind"]: s.value for s in fams["damon_sampler_errors"].samples if s.name.endswith("_total")}
    assert errors == {**{k: 0 for k in ERROR_KINDS}, "permission": 2, "weird": 1}
    assert value(fams, "damon_config_last_reload_successful", "damon_config_last_reload_successful") == 0
    assert value(fams, "damon_config_last_reload_success_timestamp_seconds", "damon_config_last_reload_success_timestamp_seconds") == 12.0
    assert value(fams, "damon_config_embedded_default", "damon_config_embedded_default") == 0
    # no kdamond works for clear_refs: its CPU is left out, not published as a 0 that means nothing
    assert "damon_sampler_kernel_cpu_seconds" not in fams


def self_names(**kw) -> set[str]:
    from exporter.metrics import _Families
    from prometheus_client.exposition import generate_latest

    return set(parse(generate_latest(_Families(self_families(ServiceState(version="1", **kw)))).decode()))


def test_the_shortest_counted_return_is_not_known_before_an_engine_runs():
    from exporter.metrics import _Families
    from prometheus_client.exposition import generate_latest

    fams = parse(generate_latest(_Families(self_families(ServiceState(version="1", backend="page_idle")))).decode())
    assert fams["damon_sampler_shortest_counted_return_seconds"].samples == []


def test_the_embedded_default_config_is_a_metric():
    from exporter.metrics import _Families
    from prometheus_client.exposition import generate_latest

    fams = parse(generate_latest(_Families(self_families(ServiceState(version="1", backend="page_idle", default_config=True)))).decode())
    assert value(fams, "damon_config_embedded_default", "damon_config_embedded_default") == 1


def test_metrics_that_mean_nothing_on_a_backend_are_left_out():
    """The kernel's CPU only with damon_sysfs; the region cap and accesses per sample not
    with clear_refs (its regions are the mappings, it takes no samples)."""
    assert "damon_sampler_kernel_cpu_seconds" in self_names(backend="damon_sysfs")
    for backend in ("page_idle", "clear_refs", "none"):
        assert "damon_sampler_kernel_cpu_seconds" not in self_names(backend=backend), backend
    for backend, shown in (("page_idle", True), ("damon_sysfs", True), ("clear_refs", False)):
        names = {f.name for f in target_families(snapshot(backend), ("team",))}
        assert ("damon_regions_max" in names) is shown and ("damon_access_frequency_ratio" in names) is shown, backend
        assert {"damon_regions", "damon_idle_age_seconds", "damon_resident_bytes"} <= names
        # only clear_refs can tell accessed bits someone else cleared from idleness
        assert ("damon_target_accessed_bits_reset" in names) is (backend == "clear_refs"), backend


def test_help_texts_come_from_the_one_declaration():
    from exporter.metrics.catalog import METRICS
    from exporter.web.status import WebStatus

    fams = {f.name: f for backend in ("clear_refs", "page_idle") for f in target_families(snapshot(backend), ("team",))}
    from exporter.discovery.kube_source import KubeNames

    st = ServiceState(version="1", backend="damon_sysfs", kube=KubeNames(label_names=("namespace", "pod", "container")))
    fams.update({f.name: f for f in self_families(st)})
    fams.update({f.name: f for f in WebStatus().collect()})  # the web layer's own
    for name, spec in METRICS.items():
        fam = fams.get(name) or fams[name.removesuffix("_total")]
        assert fam.documentation == spec.help, name
        assert fam.type == spec.kind.replace(" ", ""), name


def test_one_registry_rebuilds_families_only_for_a_new_state():
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

    from exporter.metrics.collector import Exposition
    from exporter.service.state import StateBox

    box = StateBox(ServiceState(version="1", backend="page_idle", summary=snapshot(), label_names=("team",)))
    exp = Exposition(box)
    enc, ctype = choose_encoder("")
    first = exp.render(enc, ctype).decode()
    cached = exp.state._cache
    assert parse(first)["damon_resident_bytes"].samples[0].value == 28 * MiB
    assert "process_cpu_seconds_total" in first
    exp.render(enc, ctype)
    assert exp.state._cache is cached  # same state: the same families
    box.update(reload_successful=False)
    second = exp.render(enc, ctype).decode()
    assert exp.state._cache is not cached
    assert value(parse(second), "damon_config_last_reload_successful", "damon_config_last_reload_successful") == 0
    enc, ctype = choose_encoder("application/openmetrics-text; version=1.0.0")
    text = exp.render(enc, ctype).decode()
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    fams = {f.name: f for f in om(text)}
    assert fams["damon_idle_age_seconds"].type == "gaugehistogram"
    assert "process_cpu_seconds" in fams
    bare = Exposition(box, exporter_metrics=False).render(*choose_encoder(""))
    assert b"process_cpu_seconds_total" not in bare and b"damon_resident_bytes" in bare


def test_series_per_target_with_and_without_histograms():
    """The README's table: 54 series per target, 15 without the three histograms."""
    def per_target(**kw) -> int:
        fams = target_families(snapshot(), ("team",), **kw)
        return sum(1 for f in fams for s in f.samples if s.labels.get("target") == "web")

    assert per_target() == 54
    assert per_target(histograms=False) == 15
    names = {f.name for f in target_families(snapshot(), ("team",), histograms=False)}
    assert "damon_idle_age_seconds" not in names and "damon_access_frequency_ratio" not in names
    assert "damon_reaccess_idle_age_seconds" not in names and "damon_cold_promoted_bytes" in names


def test_the_histograms_switch_is_a_boolean():
    from exporter.config import ConfigError, parse_config

    ok = "targets:\n  - name: a\n    match: {comm: [x]}\n"
    assert parse_config(ok).histograms is True
    assert parse_config("histograms: false\n" + ok).histograms is False
    with pytest.raises(ConfigError) as e:
        parse_config("histograms: 3\n" + ok, "c.yaml")
    assert e.value.lines[0].startswith("c.yaml:1: histograms: ")
