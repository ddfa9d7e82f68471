"""Every ``damon_*`` metric, declared once: name, type, HELP, labels and the backends it
means something on.

The families in :mod:`.targets` and :mod:`.self_metrics` are built from these declarations,
and the README's metrics table is tested against them (``tests/test_docs_truth.py``), so a
name, a type or the backends a metric is published on cannot drift between the code, its
HELP text and the documentation.

``backends`` is None for a metric that means the same on every backend. Where it names
backends, the metric is left out on the others rather than published as a 0 that means
nothing: a region cap on clear_refs (whose regions are the mappings, whatever the cap), the
kernel's CPU on a user-space engine, accesses per sample where clear_refs has no samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.discovery.kube_client import FETCH_ERRORS
from exporter.model.errors import ERROR_KINDS

#: why the HTTP server refused or cut a connection or request (``damon_web_rejected_total``);
#: the server counts them, the metric exports each at 0 from the start
WEB_REJECT_REASONS: dict[str, str] = {
    "max_requests": "answered 503: --web.max-requests were being served",
    "max_connections": "closed to make room under --web.max-connections",
    "timeout": "the request deadline passed",
    "bad_request": "the request could not be parsed",
    "auth_busy": "answered 503: too many password checks (bcrypt) in flight for a password not known good",
}

#: the types as the README's table names them (``gauge histogram`` is OpenMetrics' gaugehistogram)
KINDS = ("gauge", "counter", "gauge histogram", "histogram")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    help: str
    #: True: one series per target (labels ``target`` + the discoverer's); False: one per exporter
    per_target: bool
    #: labels beyond the target labels
    labels: tuple[str, ...] = ()
    unit: str = ""
    #: the backends the metric is published on; None = every backend
    backends: frozenset[str] | None = None

    def published_with(self, backend: str) -> bool:
        """True unless the metric means nothing on ``backend``. Before a backend is open
        (``none``) only the metrics of every backend are published."""
        return self.backends is None or backend in self.backends


_REGION_CAPPED = frozenset({"damon_sysfs", "page_idle"})
_SAMPLED = frozenset({"damon_sysfs", "page_idle"})


#: a per-target metric and an exporter-wide one: the same declaration but for ``per_target``
_t = partial(MetricSpec, per_target=True)
_s = partial(MetricSpec, per_target=False)


ERRORS_HELP = ("Problems met by the sampler, by kind: " + "; ".join(f"{k}: {v}" for k, v in ERROR_KINDS.items())
               + ". Exited processes are not errors.")

TARGET_METRICS: tuple[MetricSpec, ...] = (
    _t("damon_target_processes", "gauge", "Processes of the target monitored in the last aggregation (pending targets: processes found by discovery)."),
    _t("damon_target_up", "gauge", "1 if the target's processes were all monitored without error in the last aggregation; 0 before the first aggregation, on error, or with no processes."),
    _t("damon_target_unmonitored_processes", "gauge", "Processes discovery found for the target that the engine does not monitor, by why (the kind of damon_sampler_errors_total: permission, io, limit, ...). A target whose processes the exporter may not read shows them here, not as a target without processes.", labels=("kind",)),
    _t("damon_target_last_aggregation_timestamp_seconds", "gauge", "Unix time of the target's last aggregation.", unit="seconds"),
    _t("damon_regions", "gauge", "DAMON regions of the target (all its processes) at the end of the last aggregation; with clear_refs, its groups of mappings."),
    _t("damon_regions_max", "gauge", "Current region cap of the target; below the configured max_regions while the CPU budget holds it down. Not published with clear_refs, whose regions are the mappings.", backends=_REGION_CAPPED),
    _t("damon_resident_bytes", "gauge", "Resident bytes in the target's monitored regions, each page once (shared pages by the target's share).", unit="bytes"),
    _t("damon_working_set_bytes", "gauge", "Resident bytes seen accessed within the configured working_set_window.", unit="bytes"),
    _t("damon_working_set_measured_timestamp_seconds", "gauge", "Unix time the published working set was measured: the last aggregation for DAMON engines; for clear_refs, the last exact point (working_set_window after a clear). Between its points clear_refs publishes an estimate within what its reads prove at each aggregation, and damon_working_set_error_bytes says how far it may be off.", unit="seconds"),
    _t("damon_cold_bytes", "gauge", "Resident bytes not seen accessed for at least the configured cold_age.", unit="bytes"),
    _t("damon_cold_measured_timestamp_seconds", "gauge", "Unix time the published cold bytes were measured (as for the working set, with cold_age).", unit="seconds"),
    _t("damon_cold_ratio", "gauge", "damon_cold_bytes / damon_resident_bytes (0..1; 0 when nothing is resident).", unit="ratio"),
    _t("damon_working_set_error_bytes", "gauge", "Expected error of damon_working_set_bytes: resident bytes at region edges that the samples suggest are on the wrong side, plus bytes watched for less than working_set_window and never seen accessed; with clear_refs between its exact points, the distance from the estimate to the farther bound its reads prove (the figure plus or minus this brackets the truth).", unit="bytes"),
    _t("damon_cold_error_bytes", "gauge", "Expected error of damon_cold_bytes: resident bytes at region edges that the samples suggest are on the wrong side of cold_age, plus bytes watched for less than cold_age and never seen accessed (not known yet); with clear_refs between its exact points, the distance to the farther bound its reads prove.", unit="bytes"),
    _t("damon_target_accessed_bits_reset_total", "counter", "Reads that found the accessed bits of one of the target's processes cleared by someone else: reclaim or MGLRU aging under memory pressure, a kernel DAMON scheme, another monitor writing clear_refs. A condition of the node, not an exporter error (not in damon_sampler_errors_total): each one restarts the target's figures, which carry what it erased in their error bytes until working_set_window and cold_age have passed again. Published with clear_refs only (DAMON's own checks cannot tell a foreign clear from idleness).", backends=frozenset({"clear_refs"})),
    _t("damon_cold_promoted_bytes_total", "counter", "Resident bytes that had been idle for at least cold_age and were then seen accessed again (the promotion rate of far-memory systems is its rate()); a byte counts once per return from idleness, not while it stays in use.", unit="bytes"),
    _t("damon_cold_promoted_error_bytes_total", "counter", "How much of damon_cold_promoted_bytes_total the evidence does not pin down: bytes of regions that came back whose samples did not all see the access (DAMON engines); first touches that older or younger bytes could equally have made (clear_refs).", unit="bytes"),
    _t("damon_reaccess_idle_age_seconds", "histogram", "Resident bytes seen accessed again after being idle, by how long they had been idle (seconds, a lower bound); _count is bytes, _sum byte-seconds. Bytes that came back after at least T: rate(_count) - rate(_bucket{le=\"T\"}).", unit="seconds"),
    _t("damon_idle_age_seconds", "gauge histogram", "Resident bytes by time since last seen accessed (seconds); bucket values and _gcount are bytes, _gsum is byte-seconds.", unit="seconds"),
    _t("damon_access_frequency_ratio", "gauge histogram", "Resident bytes by share of the last aggregation's samples that saw an access (0..1); bucket values and _gcount are bytes. Not published with clear_refs, which takes no samples.", unit="ratio", backends=_SAMPLED),
)

SELF_METRICS: tuple[MetricSpec, ...] = (
    _s("damon_exporter_build_info", "gauge", "A metric with a constant '1' value labeled by version, revision, branch, and pythonversion from which damon-exporter was built.", labels=("version", "revision", "branch", "pythonversion")),
    _s("damon_sampler_backend_info", "gauge", "Constant 1, labelled by the access-check backend the sampler uses now ('none' until it has opened one).", labels=("backend",)),
    _s("damon_sampler_backend_passed_over", "gauge", "Constant 1 for each backend `auto` passed over before the one in use, labelled by why: unavailable (its check failed: a missing kernel feature or privilege, kernel DAMON in use by someone else), refused (building it raised), failed (it failed before its first aggregation). The landing page and log say the details.", labels=("backend", "reason")),
    _s("damon_sampler_checks_total", "counter", "Access checks by the engine: page_idle, one sampled page of one region; damon_sysfs, the kernel's samples of the regions read back (regions x samples per aggregation); clear_refs, one smaps read of one process."),
    _s("damon_sampler_cpu_seconds_total", "counter", "CPU time used by the sampler thread, in seconds.", unit="seconds"),
    _s("damon_sampler_kernel_cpu_seconds_total", "counter", "CPU time of the kernel's DAMON thread (kdamond) working for the sampler's engine, in seconds. The CPU budget counts it with the sampler thread's. Published with damon_sysfs only.", unit="seconds", backends=frozenset({"damon_sysfs"})),
    _s("damon_sampler_budget_ratio", "gauge", "CPU share of one core over the budget window, the sampler thread's and the kernel's for it (kdamond) together, divided by the configured cpu_budget (above 1 = over budget)."),
    _s("damon_sampler_cpu_budget_ratio", "gauge", "Configured CPU budget of the sampler, as a share of one core (0 = no budget)."),
    _s("damon_sampler_sample_interval_seconds", "gauge", "Sample interval in effect, in seconds (longer than configured while the CPU budget stretches it).", unit="seconds"),
    _s("damon_sampler_aggregation_interval_seconds", "gauge", "Aggregation interval in effect, in seconds.", unit="seconds"),
    _s("damon_sampler_shortest_counted_return_seconds", "gauge", "The shortest return of cold memory that damon_cold_promoted_bytes_total counts by its bytes at the intervals in effect, in seconds. page_idle and damon_sysfs: one aggregation interval (a region's samples decide a return once per aggregation, so memory back for L seconds of an aggregation A counts about L/A of its bytes, inside the published error); clear_refs: 0 (a page's Referenced bit keeps a touch of any length until the next clear). Grows while the CPU budget stretches the intervals.", unit="seconds"),
    _s("damon_sampler_errors_total", "counter", ERRORS_HELP, labels=("kind",)),
    _s("damon_config_cold_age_seconds", "gauge", "The cold_age in force: memory idle at least this long is cold (damon_cold_bytes).", unit="seconds"),
    _s("damon_config_working_set_window_seconds", "gauge", "The working_set_window in force: memory used within it is the working set (damon_working_set_bytes).", unit="seconds"),
    _s("damon_config_memory_limit_bytes", "gauge", "The memory_limit in force: the exporter's resident memory above which it takes on no new process (0 = no limit).", unit="bytes"),
    _s("damon_sampler_memory_limited", "gauge", "1 while the exporter is over memory_limit and leaves new processes out (they show in damon_target_unmonitored_processes{kind=\"limit\"}); back to 0 under 90% of it."),
    _s("damon_config_embedded_default", "gauge", "1 while the embedded default config is in use (no --config.file given: the largest programs by resident memory), 0 with a config file."),
    _s("damon_config_last_reload_successful", "gauge", "1 if the last configuration (re)load succeeded, 0 if it failed and the previous config is still in use."),
    _s("damon_config_last_reload_success_timestamp_seconds", "gauge", "Unix time of the last successful configuration load.", unit="seconds"),
    _s("damon_web_config_last_reload_successful", "gauge", "1 if the web config (TLS, users; re-checked per connection) last loaded fine, 0 if it failed and the previous one is still in use."),
    _s("damon_web_config_last_reload_success_timestamp_seconds", "gauge", "Unix time of the last successful web config load.", unit="seconds"),
    _s("damon_web_rejected_total", "counter", "Connections and requests the HTTP server refused or cut, by reason: "
       + "; ".join(f"{k}: {v}" for k, v in WEB_REJECT_REASONS.items()) + ".", labels=("reason",)),
    _s("damon_kube_metadata_up", "gauge", "1 if the last fetch of the node's pods (kubelet /pods, else the API server) succeeded, 0 if every source failed: kube-split series then keep their pod_uid/container_id labels and the names last known. Published only while pod metadata is fetched (kubernetes.metadata)."),
    _s("damon_kube_metadata_errors_total", "counter", "Failed fetches of the node's pods, per source tried, by reason: "
       + "; ".join(f"{k}: {v}" for k, v in FETCH_ERRORS.items()) + ".", labels=("reason",)),
    _s("damon_kube_metadata_last_success_timestamp_seconds", "gauge", "Unix time of the last successful fetch of the node's pods (0: none yet).", unit="seconds"),
)

METRICS: dict[str, MetricSpec] = {m.name: m for m in (*TARGET_METRICS, *SELF_METRICS)}
assert len(METRICS) == len(TARGET_METRICS) + len(SELF_METRICS), "a metric declared twice"
assert all(m.kind in KINDS for m in METRICS.values())


def family(name: str, target_labels: Sequence[str] = ()) -> Metric:
    """A fresh, empty family of the declared metric ``name``; per-target metrics get the
    target labels first, then their own."""
    m = METRICS[name]
    labels = [*target_labels, *m.labels] if m.per_target else list(m.labels)
    if m.kind == "gauge":
        return GaugeMetricFamily(m.name, m.help, labels=labels, unit=m.unit)
    if m.kind == "counter":
        return CounterMetricFamily(m.name, m.help, labels=labels, unit=m.unit)
    if m.kind == "gauge histogram":
        return GaugeHistogramMetricFamily(m.name, m.help, labels=labels, unit=m.unit)
    return HistogramMetricFamily(m.name, m.help, labels=labels, unit=m.unit)


#: what a series or family name adds to its metric's declared name
_SERIES_SUFFIXES = ("_bucket", "_gcount", "_gsum", "_count", "_sum")


def spec_of(name: str) -> MetricSpec | None:
    """The declaration behind a family or series name: a counter family is named without
    its ``_total``, a histogram's series add ``_bucket``, ``_count``, ``_gsum``...; None
    for a name the exporter does not publish."""
    for base in (name, *(name[: -len(x)] for x in _SERIES_SUFFIXES if name.endswith(x))):
        spec = METRICS.get(base) or METRICS.get(base + "_total")
        if spec is not None:
            return spec
    return None


def published(families: Sequence[Metric], backend: str) -> list[Metric]:
    """``families`` without those that mean nothing on ``backend``."""
    return [f for f in families if spec_of(f.name).published_with(backend)]  # type: ignore[union-attr]
