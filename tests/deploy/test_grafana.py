"""deploy/grafana/damon-exporter.json: the dashboard has the shape Grafana imports, its
template variables are the ones the panels use, every PromQL expression parses (promtool),
and every metric it reads is one the exporter publishes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from exporter.metrics.catalog import spec_of

from .manifests import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "damon-exporter.json"
#: values a user would pick, to turn the panel queries into plain PromQL
SUBSTITUTIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$instance": ".*", "$target": ".*",
                 "$namespace": ".*", "$pod": ".*", "$container": ".*"}


def _dash() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs() -> list[str]:
    return [t["expr"] for p in _dash()["panels"] for t in p["targets"]]


def _substitute(expr: str) -> str:
    for k in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(k, SUBSTITUTIONS[k])
    assert "$" not in expr.replace("$1", ""), f"unsubstituted variable in {expr}"
    return expr


def test_dashboard_shape():
    d = _dash()
    assert d["uid"] == "damon-exporter" and d["title"]
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        assert {"id", "type", "title", "gridPos", "targets", "datasource"} <= p.keys(), p.get("title")
        g = p["gridPos"]
        assert set(g) == {"x", "y", "w", "h"} and 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
    # no two panels overlap
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_required_panels():
    panels = _dash()["panels"]
    heatmaps = {t["expr"]: t for p in panels if p["type"] == "heatmap" for t in p["targets"]}
    for metric in ("damon_idle_age_seconds_bucket", "damon_access_frequency_ratio_bucket"):
        (t,) = [t for e, t in heatmaps.items() if metric in e]
        assert t["format"] == "heatmap" and t["legendFormat"] == "{{le}}"
        assert re.search(r"sum by \(le\)", t["expr"])
    exprs = " ".join(_exprs())
    assert "rate(damon_sampler_cpu_seconds_total" in exprs and "damon_sampler_cpu_budget_ratio" in exprs
    for m in ("damon_cold_bytes", "damon_working_set_bytes", "damon_resident_bytes", "damon_target_processes"):
        assert m in exprs
    # how old each figure is, and the node condition that restarts them
    ages = [p for p in panels if p["title"] == "Age of the published figures"]
    assert ages and ages[0]["fieldConfig"]["defaults"]["unit"] == "s"
    age_exprs = " ".join(t["expr"] for t in ages[0]["targets"])
    for m in ("damon_working_set_measured_timestamp_seconds", "damon_cold_measured_timestamp_seconds"):
        assert f"time() - {m}" in age_exprs
    assert "rate(damon_target_accessed_bits_reset_total" in exprs
    stacked = [p for p in panels if p["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal"]
    assert stacked and {t["legendFormat"] for t in stacked[0]["targets"]} == {"working set", "warm (neither)", "cold"}


def test_template_variables():
    tl = {v["name"]: v for v in _dash()["templating"]["list"]}
    assert list(tl) == ["datasource", "job", "instance", "target", "namespace", "pod", "container"]
    assert tl["datasource"]["type"] == "datasource" and tl["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "target", "namespace", "pod", "container"):
        assert tl[name]["type"] == "query" and tl[name]["includeAll"] and tl[name]["allValue"] == ".*"
        assert tl[name]["query"]["query"].startswith("label_values(")
    used = set(re.findall(r"\$(\w+)", " ".join(_exprs())))
    assert used - {"__rate_interval", "1"} <= set(tl)


def test_per_target_panels_follow_the_kubernetes_variables():
    """Every selector that picks targets also picks namespace, pod and container (the
    exporter's labels of kube-split targets; '' elsewhere, which the All value .* matches),
    and each variable lists only values within the ones chosen before it."""
    tl = {v["name"]: v for v in _dash()["templating"]["list"]}
    for expr in _exprs():
        for selector in re.findall(r"\{[^}]*target=~[^}]*\}", expr):
            assert 'namespace=~"$namespace", pod=~"$pod", container=~"$container"' in selector, expr
    assert tl["container"]["query"]["query"] == ('label_values(damon_target_up{job=~"$job", instance=~"$instance", '
                                                 'target=~"$target", namespace=~"$namespace", pod=~"$pod"}, container)')


def test_metrics_are_the_exporters():
    for expr in _exprs():
        for name in re.findall(r"\b(damon_[a-z_]+)", expr):
            assert spec_of(name) is not None, f"{name} is not a metric damon-exporter publishes"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_every_expression_parses(tmp_path):
    exprs = [_substitute(e) for e in _exprs()] + [
        _substitute(v["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0])
        for v in _dash()["templating"]["list"]
        if v["type"] == "query"
    ]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout
    # and promtool does reject a broken expression: the check is real
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum by (le (x)"}]}]}))
    assert subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0
