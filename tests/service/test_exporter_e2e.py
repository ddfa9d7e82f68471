"""The exporter as users run it: a subprocess, real workloads, real HTTP on loopback.

Intervals are short (sample 100 ms, aggregation 500 ms, update 1 s, cold_age 2 s) so that
memory turns cold within seconds; every wait is for a state, with a generous deadline.
"""

from __future__ import annotations

import gzip
import math
import platform
import re
import signal
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from exporter.metrics.catalog import METRICS
from exporter.metrics.self_metrics import SELF_METRIC_NAMES
from exporter.metrics.targets import TARGET_METRIC_NAMES

from tests.support.exporter import MiB, Scrape, comm_target, fast_config, unique_comm

IDLE_LE = ["0.0", "1.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "1800.0", "3600.0", "+Inf"]


def buckets(s: Scrape, family: str, target: str) -> dict[str, float]:
    return {x.labels["le"]: x.value for x in s.all(family + "_bucket") if x.labels["target"] == target}


@pytest.mark.slow
def test_metrics_contract_and_values(exporter, children, cgroup2):
    a = children(unique_comm("a"), hot_mib=16, cold_mib=48)
    b = children(unique_comm("b"), hot_mib=8, cold_mib=32)
    (cgroup2 / "cgroup.procs").write_text(str(b.pid))
    targets = comm_target("svc-a", a.name, {"team": "blue"}) + f"  - name: grp-b\n    cgroup: /{cgroup2.name}\n"
    # working set = seen within 2 s, cold = idle for 3 s: margins for a busy CI machine
    e = exporter(fast_config(targets, cold_age="3s", window="2s"))
    e.wait_ready()

    def settled(s: Scrape) -> bool:
        return all((s.get("damon_cold_bytes", target=t) or 0) >= 0.95 * c.cold for t, c in (("svc-a", a), ("grp-b", b)))

    s = e.wait_for(settled, what="cold memory of both children")

    # every contract name, with HELP, and the label set target + discoverer labels
    names = {x.name for x in s.samples}
    on_clear_refs = [f for f in TARGET_METRIC_NAMES if METRICS[f].published_with("clear_refs")]
    on_clear_refs = [f.removesuffix("_total") for f in on_clear_refs]  # the parser names counters without it
    for fam in on_clear_refs:
        assert fam in s.families and s.families[fam].documentation, fam
    for fam in SELF_METRIC_NAMES:
        if METRICS[fam].published_with("clear_refs") and not fam.startswith("damon_kube_"):  # no pod metadata here
            assert any(n == fam or n.startswith(fam + "_") or fam.startswith(n) for n in names), fam
    # what means nothing without samples, a region cap or a kdamond is left out
    for fam in ("damon_regions_max", "damon_access_frequency_ratio", "damon_sampler_kernel_cpu_seconds"):
        assert fam not in s.families, fam
    for fam in on_clear_refs:
        for x in s.families[fam].samples:
            assert set(x.labels) - {"le"} == {"target", "team"}, (fam, x)
    assert s.get("damon_target_up", target="svc-a", team="blue") == 1
    assert s.get("damon_target_up", target="grp-b", team="") == 1

    for t, child in (("svc-a", a), ("grp-b", b)):
        resident = s.get("damon_resident_bytes", target=t)
        cold = s.get("damon_cold_bytes", target=t)
        ws = s.get("damon_working_set_bytes", target=t)
        assert s.get("damon_target_processes", target=t) == 1
        idle = buckets(s, "damon_idle_age_seconds", t)
        assert list(idle) == IDLE_LE
        assert idle["+Inf"] == s.get("damon_idle_age_seconds_gcount", target=t) == resident
        assert list(idle.values()) == sorted(idle.values())  # cumulative
        # truth: the child's hot mappings are written every 50 ms, the cold ones never again
        assert resident >= child.hot + child.cold
        assert resident <= child.hot + child.cold + 64 * MiB  # + the interpreter's own pages
        assert child.cold * 0.95 <= cold <= resident - child.hot
        assert ws >= child.hot * 0.95
        assert ws <= resident - child.cold * 0.95
        assert math.isclose(s.get("damon_cold_ratio", target=t), cold / resident, rel_tol=1e-9)
        assert idle["1.0"] >= child.hot * 0.95  # hot memory: seen within the last second
        assert s.get("damon_idle_age_seconds_gsum", target=t) >= child.cold * 3.0 * 0.95  # cold >= 3 s idle
        assert s.get("damon_regions", target=t) >= 4
        assert abs(s.get("damon_target_last_aggregation_timestamp_seconds", target=t) - time.time()) < 30

    assert s.get("damon_sampler_backend_info", backend="clear_refs") == 1
    assert s.get("damon_exporter_build_info", version="0.1.0", pythonversion=platform.python_version()) == 1
    assert s.get("damon_sampler_checks_total") > 0
    assert s.get("damon_sampler_cpu_seconds_total") > 0
    assert s.get("damon_config_last_reload_successful") == 1
    assert s.get("damon_sampler_errors_total", kind="permission") == 0
    assert s.get("process_resident_memory_bytes") > 0

    # OpenMetrics on request, with real gauge histograms
    r = e.request("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    om = {f.name: f for f in om_families(r.text)}
    assert om["damon_idle_age_seconds"].type == "gaugehistogram"
    assert om["damon_resident_bytes"].unit == "bytes"
    # classic text by default, gzip when asked
    r = e.request("/metrics", {"Accept-Encoding": "gzip"})
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert r.headers["content-encoding"] == "gzip"
    assert b"damon_resident_bytes" in gzip.decompress(r.body)

    page = e.request("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ("DAMON Exporter", 'href="/metrics"', "clear_refs", "svc-a", "grp-b", "0.1.0"):
        assert needle in page.text
    assert e.request("/-/healthy").status == 200
    assert e.request("/nope").status == 404


@pytest.mark.slow
def test_reload_by_sighup_and_by_file_change(exporter, children):
    a = children(unique_comm("ra"), hot_mib=4, cold_mib=4)
    b = children(unique_comm("rb"), hot_mib=4, cold_mib=4)
    # polling off: here only SIGHUP can reload
    e = exporter(fast_config(comm_target("a", a.name)), extra=["--config.auto-reload-interval", "0"])
    e.wait_ready()
    s = e.scrape()
    t0 = s.get("damon_config_last_reload_success_timestamp_seconds")
    assert s.get("damon_target_processes", target="b") is None

    # good config via SIGHUP: target b appears
    e.config_path.write_text(fast_config(comm_target("a", a.name) + comm_target("b", b.name)))
    e.proc.send_signal(signal.SIGHUP)
    s = e.wait_for(lambda s: s.get("damon_target_up", target="b") == 1, what="target b after SIGHUP")
    assert s.get("damon_config_last_reload_successful") == 1
    assert s.get("damon_config_last_reload_success_timestamp_seconds") > t0

    # bad config: old targets stay, metric goes to 0, the error line is logged
    e.config_path.write_text(fast_config(comm_target("a", a.name)) + "bogus_key: 1\n")
    e.proc.send_signal(signal.SIGHUP)
    s = e.wait_for(lambda s: s.get("damon_config_last_reload_successful") == 0, what="failed reload")
    assert s.get("damon_target_up", target="a") == 1 and s.get("damon_target_up", target="b") == 1
    logs = e.logs()
    assert re.search(r'level=error .*msg="config reload failed, keeping the running config: .*config0\.yaml:\d+: bogus_key: ', logs), logs

    e.config_path.write_text(fast_config(comm_target("b", b.name)))
    e.proc.send_signal(signal.SIGHUP)
    s = e.wait_for(lambda s: s.get("damon_config_last_reload_successful") == 1, what="good reload")
    s = e.wait_for(lambda s: s.get("damon_target_processes", target="a") is None, what="target a removed")
    assert s.get("damon_target_up", target="b") == 1
    assert 'msg="configuration reloaded"' in e.logs() and "reason=signal" in e.logs()

    # with polling on, a changed file is picked up without a signal (and a bad one reported)
    p = exporter(fast_config(comm_target("a", a.name)), extra=["--config.auto-reload-interval", "200ms"])
    p.wait_ready()
    p.config_path.write_text(fast_config(comm_target("a", a.name)) + "cold_age: [\n")
    p.wait_for(lambda s: s.get("damon_config_last_reload_successful") == 0, what="failed reload by polling")
    p.config_path.write_text(fast_config(comm_target("b", b.name)))
    s = p.wait_for(lambda s: s.get("damon_target_up", target="b") == 1, what="reload by polling")
    assert s.get("damon_config_last_reload_successful") == 1
    assert 'reason="file changed"' in p.logs()


@pytest.mark.slow
def test_exiting_target_and_clean_sigterm(exporter, children):
    a = children(unique_comm("xa"), hot_mib=4, cold_mib=4)
    e = exporter(fast_config(comm_target("a", a.name)))
    e.wait_ready()
    e.wait_for(lambda s: s.get("damon_target_up", target="a") == 1, what="target up")
    a.stop()
    s = e.wait_for(lambda s: s.get("damon_target_processes", target="a") == 0, what="target a gone")
    assert s.get("damon_target_up", target="a") == 0
    assert sum(x.value for x in s.all("damon_sampler_errors_total")) == 0
    assert "Traceback" not in e.logs()

    t = time.monotonic()
    e.proc.send_signal(signal.SIGTERM)
    rc = e.proc.wait(10)
    took = time.monotonic() - t
    assert rc == 0
    assert took < 5.0, f"SIGTERM took {took:.2f}s"  # ~0.2 s unloaded; loose for a busy CI
    assert 'msg=stopping signal=SIGTERM' in e.logs()


def test_readiness_is_503_before_the_first_aggregation(exporter):
    # a 10 s aggregation: long enough to see the not-ready state, then SIGTERM
    e = exporter(fast_config(comm_target("a", "no-such-comm"), aggregation="10s", update="10s"))
    deadline = time.monotonic() + 30
    while True:
        try:
            r = e.request("/-/ready", timeout=2)
            break
        except OSError:
            assert time.monotonic() < deadline, e.logs()
            time.sleep(0.05)
    assert r.status == 503
    assert e.request("/-/healthy").status == 200
    s = e.wait_for(lambda s: s.get("damon_target_processes", target="a") is not None, what="pending target")
    assert s.get("damon_target_processes", target="a") == 0
    assert s.get("damon_target_up", target="a") == 0
    assert e.request("/-/ready").status == 503
    assert s.get("damon_resident_bytes", target="a") is None
    assert e.stop() == 0
