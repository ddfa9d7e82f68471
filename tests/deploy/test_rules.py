"""deploy/prometheus/rules.yaml: promtool accepts it, its unit tests (fire and not fire for
every alert, recording rule outputs) pass, its published copies are in sync, and the unit
tests would catch a rule that fires too early."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from .manifests import CHART_DIR, OPERATOR_DIR, ROOT, load_all, validate

PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "rules.yaml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@needs_promtool
def test_promtool_check_rules():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


@needs_promtool
def test_promtool_unit_tests_pass():
    r = promtool("test", "rules", "rules_test.yaml", cwd=PROM_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
@pytest.mark.parametrize("mutation", ["no_for", "lower_thresholds"])
def test_unit_tests_catch_broken_rules(tmp_path, mutation):
    """Rules without their `for` (fire at once) or with thresholds lowered must fail the
    unit tests: the 'does not fire' cases are real."""
    text = RULES.read_text()
    if mutation == "no_for":
        text = re.sub(r"^\s+for: \S+\n", "", text, flags=re.M)
    else:
        text = text.replace("damon_cold_ratio > 0.8", "damon_cold_ratio > 0.4").replace(
            "damon_sampler_budget_ratio > 1", "damon_sampler_budget_ratio > 0.5"
        )
    assert text != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(text)
    shutil.copy(PROM_DIR / "rules_test.yaml", tmp_path)
    r = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert r.returncode != 0
    assert "FAILED" in r.stdout + r.stderr


def test_alert_conventions():
    alerts = [r for r in _rules() if "alert" in r]
    names = {a["alert"] for a in alerts}
    assert {
        "DamonExporterDown",
        "DamonTargetNotAggregating",
        "DamonSamplerOverBudget",
        "DamonTargetNoProcesses",
        "DamonHighColdMemoryRatio",
    } <= names
    for a in alerts:
        assert re.fullmatch(r"Damon(?:[A-Z][a-z0-9]*)+", a["alert"]), a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning", "info"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        assert "for" in a, f"{a['alert']} fires on a single evaluation"
    records = [r["record"] for r in _rules() if "record" in r]
    assert all(re.fullmatch(r"damon:[a-z_]+:[a-z0-9_]+", r) for r in records), records


def test_every_alert_and_record_is_unit_tested():
    tests = yaml.safe_load((PROM_DIR / "rules_test.yaml").read_text())["tests"]
    fired = {t["alertname"] for g in tests for t in g.get("alert_rule_test", []) if t["exp_alerts"]}
    silent = {t["alertname"] for g in tests for t in g.get("alert_rule_test", []) if not t["exp_alerts"]}
    checked = {t["expr"] for g in tests for t in g.get("promql_expr_test", [])}
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert alerts <= fired and alerts <= silent
    assert {r["record"] for r in _rules() if "record" in r} <= checked


def test_published_copies_in_sync():
    r = subprocess.run([sys.executable, str(PROM_DIR / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (rule,) = load_all(OPERATOR_DIR / "prometheusrule.yaml")
    validate(rule, "prometheusrule.yaml")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert (CHART_DIR / "files" / "rules.yaml").read_text() == RULES.read_text()


def test_generate_check_reports_stale_copy(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("damon_rules_generate", PROM_DIR / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text("old\n")
    monkeypatch.setattr(generate, "PROMETHEUS_RULE", stale)
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "HELM_COPY", tmp_path / "rules.yaml")
    (tmp_path / "rules.yaml").write_text(RULES.read_text())
    assert generate.main(["--check"]) == 1
    assert stale.read_text() == "old\n"
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    assert yaml.safe_load(stale.read_text())["kind"] == "PrometheusRule"
