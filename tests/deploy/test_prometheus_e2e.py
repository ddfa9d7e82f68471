"""End to end with a real Prometheus (Debian's /usr/bin/prometheus): it scrapes the real
exporter (clear_refs backend, short intervals) monitoring a child workload with a hot and a
cold part, evaluates the project's rules (deploy/prometheus/rules.yaml) plus one
low-threshold alert written here, and we read the outcome back through Prometheus' HTTP API.
"""

from __future__ import annotations

import re

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.wait import wait_for
from tests.support.exporter import Exporter, comm_target, fast_config, free_port, start_child, unique_comm

from .manifests import ROOT
from .test_grafana import _exprs, _substitute

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NODE = "e2e-node"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed (apt-get install prometheus)"),
]

EXTRA_RULES = {
    "groups": [
        {
            "name": "e2e",
            "rules": [
                {
                    "alert": "DamonE2EColdMemory",
                    "expr": "damon_cold_ratio > 0.2",
                    "labels": {"severity": "info"},
                    "annotations": {"summary": "e2e", "description": "{{ $labels.target }} is {{ $value }} cold"},
                }
            ],
        }
    ]
}


class Prometheus:
    def __init__(self, tmp: Path, exporter_port: int) -> None:
        self.port = free_port()
        self.tmp = tmp
        (tmp / "extra_rules.yaml").write_text(yaml.safe_dump(EXTRA_RULES))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yaml"), str(tmp / "extra_rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": "damon-exporter",
                    # `node` as a ServiceMonitor relabeling would set it
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"node": NODE}}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = tmp / "prometheus.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def wait(self, what: str, fn, timeout: float = 90.0):
        """Poll ``fn`` until it returns something truthy; fail with Prometheus' log otherwise."""
        def attempt():
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log_path.read_text()}"
            try:
                return fn()
            except OSError:  # not listening yet
                return None

        return wait_for(attempt, timeout, what, interval=0.5,
                        describe=lambda: f"prometheus log:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def test_prometheus_scrapes_records_and_alerts(tmp_path):
    comm = unique_comm("prom")
    child = start_child(comm, hot_mib=8, cold_mib=48)
    config = tmp_path / "config.yaml"
    config.write_text("backend: clear_refs\n" + fast_config(comm_target("e2e", comm), cold_age="2s", window="1s"))
    exporter = Exporter(config, free_port(), tmp_path / "exporter.log").start()
    prom = None
    try:
        exporter.wait_ready()
        prom = Prometheus(tmp_path, exporter.port)

        def target_up():
            active = prom.api("targets")["activeTargets"]
            return [t for t in active if t["labels"]["job"] == "damon-exporter" and t["health"] == "up"]

        (target,) = prom.wait("scrape target up", target_up)
        assert target["labels"]["node"] == NODE and target["scrapeUrl"].endswith("/metrics")

        # the workload's cold 48 MiB shows through Prometheus
        (ratio,) = prom.wait("cold ratio above 0.2", lambda: prom.query('damon_cold_ratio{target="e2e"} > 0.2'))
        assert ratio["metric"]["job"] == "damon-exporter" and ratio["metric"]["node"] == NODE
        assert 0.2 < float(ratio["value"][1]) <= 1.0
        (procs,) = prom.query('damon_target_processes{target="e2e"}')
        assert float(procs["value"][1]) == 1

        # the project's recording rules produce fleet series from it
        (by_target,) = prom.wait("damon:cold_ratio:by_target", lambda: prom.query('damon:cold_ratio:by_target{target="e2e"} > 0'))
        assert 0 < float(by_target["value"][1]) <= 1
        (by_node,) = prom.wait("damon:cold_bytes:sum_by_node", lambda: prom.query(f'damon:cold_bytes:sum_by_node{{node="{NODE}"}} > 0'))
        assert float(by_node["value"][1]) >= 8 << 20  # a good part of the 48 MiB cold mapping
        (ws,) = prom.wait("damon:working_set_bytes:sum_by_target", lambda: prom.query('damon:working_set_bytes:sum_by_target{target="e2e"}'))
        assert 4 << 20 <= float(ws["value"][1]) <= 64 << 20  # a good part of the 8 MiB hot, never the cold 48
        (cpu,) = prom.wait("damon:sampler_cpu_cores:rate5m", lambda: prom.query(f'damon:sampler_cpu_cores:rate5m{{node="{NODE}"}}'))
        assert 0 <= float(cpu["value"][1]) < 1

        # the low-threshold alert fires; the project's alerts loaded and are healthy
        def firing():
            return [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == "DamonE2EColdMemory" and a["state"] == "firing"]

        (alert,) = prom.wait("DamonE2EColdMemory firing", firing)
        assert alert["labels"]["target"] == "e2e" and alert["annotations"]["description"].startswith("e2e is ")
        groups = {g["name"]: g for g in prom.api("rules")["groups"]}
        assert {"damon-exporter.recording", "damon-exporter.alerts", "e2e"} <= groups.keys()
        for g in groups.values():
            for r in g["rules"]:
                assert r["health"] == "ok", (r["name"], r.get("lastError"))
        alerts = {r["name"]: r for r in groups["damon-exporter.alerts"]["rules"]}
        assert alerts["DamonExporterDown"]["state"] == "inactive"
        assert alerts["DamonTargetNoProcesses"]["state"] == "inactive"

        # every dashboard query finds data (but those of metrics clear_refs leaves out, as
        # meaningless on it: accesses per sample, the kdamond's CPU); the heatmaps get every
        # bucket boundary
        for expr in (_substitute(e) for e in _exprs()):
            if not all(_published_with_clear_refs(m) for m in re.findall(r"\b(damon_[a-z_]+)", expr)):
                continue
            prom.wait(f"dashboard query {expr}", lambda: prom.query(expr))
        idle = prom.query(_substitute(next(e for e in _exprs() if "damon_idle_age_seconds_bucket" in e)))
        assert {r["metric"]["le"] for r in idle} == {"0.0", "1.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "1800.0", "3600.0", "+Inf"}
    finally:
        if prom is not None:
            prom.stop()
        exporter.stop()
        child.stop()


def _published_with_clear_refs(name: str) -> bool:
    from exporter.metrics.catalog import spec_of

    return spec_of(name).published_with("clear_refs")
