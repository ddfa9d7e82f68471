"""helm/damon-exporter: values pass values.schema.json, templates only use values that exist,
and the chart rendered with its defaults (by gotemplate.py, no helm binary here) gives the
same pods, ports, privileges and config as the plain manifests in deploy/kubernetes/."""

from __future__ import annotations

import copy
import dataclasses
import json

import jsonschema
import pytest
import yaml

from exporter.config import parse_config

from .gotemplate import Chart, TemplateError, value_paths
from .manifests import CHART_DIR, KUBE_DIR, ROOT, by_kind, container, kustomize, load_all, validate

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def _render(values: dict | None = None) -> list[dict]:
    docs = []
    for objs in Chart(CHART_DIR, values=values).render_all().values():
        docs.extend(objs)
    return docs


def _with(**changes) -> dict:
    v = copy.deepcopy(VALUES)
    for dotted, value in changes.items():
        cur = v
        *parents, last = dotted.split("__")
        for p in parents:
            cur = cur[p]
        cur[last] = value
    return v


def test_values_pass_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)


@pytest.mark.parametrize(
    "values,message",
    [
        (_with(backend="page_idle"), "False was expected|True was expected"),
        (_with(backend="clear_refs", pageIdle={"enabled": True}), "False was expected"),
        (_with(backend="kernel"), "'kernel' is not one of"),
        (_with(backend="damon_sysfs"), "True was expected"),
        (_with(config={**VALUES["config"], "backend": "auto"}), "'backend' was unexpected"),
        (_with(servicMonitor={"enabled": True}), "'servicMonitor' was unexpected"),
        (_with(config__cpu_budget=0), "less than or equal to the minimum|exclusiveMinimum|0 is less"),
        (_with(config__targets=[{"name": "x", "match": {"comm": ["nginx"]}, "cgroup": "a"}]), "valid under each of"),
    ],
    ids=["page_idle-without-privileges", "clear_refs-with-page_idle-privileges", "bad-backend", "damon_sysfs-without-mount", "backend-in-config", "typo", "zero-budget", "match-and-cgroup"],
)
def test_schema_rejects(values, message):
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(values, SCHEMA)


def test_template_value_paths_exist():
    paths = value_paths(CHART_DIR)
    assert "pageIdle.enabled" in paths and "config" in paths
    for path in sorted(paths):
        cur = VALUES
        for part in path.split("."):
            assert isinstance(cur, dict) and part in cur, f".Values.{path} is used by a template but not in values.yaml"
            cur = cur[part]


def test_default_render_is_valid_and_minimal():
    docs = _render()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"]
    for d in docs:
        validate(d, f"chart {d['kind']}")


def _pod(docs):
    ds = by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    return ds, pod, container(pod, "damon-exporter")


CONTAINER_KEYS = ("name", "image", "args", "ports", "readinessProbe", "livenessProbe", "resources", "securityContext", "volumeMounts")


def test_default_render_matches_plain_manifests():
    chart, plain = _render(), kustomize(KUBE_DIR)
    ds, pod, c = _pod(chart)
    pds, ppod, pc = _pod(plain)
    for key in CONTAINER_KEYS:
        assert c[key] == pc[key], key
    for key in ("hostPID", "volumes", "nodeSelector", "tolerations", "securityContext", "automountServiceAccountToken", "serviceAccountName"):
        assert pod[key] == ppod[key], key
    assert ds["spec"]["updateStrategy"] == pds["spec"]["updateStrategy"]
    assert by_kind(chart, "Service")["spec"]["ports"] == by_kind(plain, "Service")["spec"]["ports"]
    assert by_kind(chart, "Service")["spec"]["clusterIP"] == "None"
    # the same config, read by the exporter's own parser
    text = by_kind(chart, "ConfigMap")["data"]["config.yaml"]
    assert _config(text) == _config(by_kind(plain, "ConfigMap")["data"]["config.yaml"])
    # selectors select the pods
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind(chart, "Service")["spec"]["selector"].items() <= labels.items()


def _config(text: str):
    """The parsed config without the line numbers (the two files order keys differently)."""
    config = parse_config(text, "config.yaml")
    return dataclasses.replace(config, targets=tuple(dataclasses.replace(t, line=0) for t in config.targets))


def test_page_idle_values_match_page_idle_overlay():
    values = _with(backend="page_idle", pageIdle={"enabled": True})
    jsonschema.validate(values, SCHEMA)
    chart = _render(values)
    for d in chart:
        validate(d, f"chart {d['kind']}")
    _, pod, c = _pod(chart)
    _, ppod, pc = _pod(kustomize(KUBE_DIR / "page-idle"))
    assert c["securityContext"] == pc["securityContext"]
    assert c["volumeMounts"] == pc["volumeMounts"]
    assert pod["volumes"] == ppod["volumes"]
    assert parse_config(by_kind(chart, "ConfigMap")["data"]["config.yaml"], "chart").backend == "page_idle"


def test_damon_sysfs_values_mount_the_damon_tree_and_the_marker_dir():
    values = _with(backend="damon_sysfs", damonSysfs={"enabled": True})
    jsonschema.validate(values, SCHEMA)
    chart = _render(values)
    for d in chart:
        validate(d, f"chart {d['kind']}")
    _, pod, c = _pod(chart)
    assert {"name": "damon-sysfs", "mountPath": "/sys/kernel/mm/damon", "readOnly": False} in c["volumeMounts"]
    assert {"name": "damon-state", "mountPath": "/run/damon-exporter"} in c["volumeMounts"]
    assert {"name": "damon-sysfs", "hostPath": {"path": "/sys/kernel/mm/damon", "type": "Directory"}} in pod["volumes"]
    assert {"name": "damon-state", "hostPath": {"path": "/run/damon-exporter", "type": "DirectoryOrCreate"}} in pod["volumes"]
    assert c["securityContext"]["runAsUser"] == 0
    assert parse_config(by_kind(chart, "ConfigMap")["data"]["config.yaml"], "chart").backend == "damon_sysfs"
    # off by default: no mount of the kernel's DAMON tree
    _, _, c = _pod(_render(VALUES))
    assert all(m["name"] != "damon-sysfs" for m in c["volumeMounts"])


def test_toggles_render_operator_objects():
    values = _with(
        serviceMonitor={**VALUES["serviceMonitor"], "enabled": True, "additionalLabels": {"release": "kp"}},
        prometheusRule={**VALUES["prometheusRule"], "enabled": True},
        priorityClassName="system-node-critical",
    )
    jsonschema.validate(values, SCHEMA)
    chart = _render(values)
    for d in chart:
        validate(d, f"chart {d['kind']}")
    sm = by_kind(chart, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kp"
    assert sm["spec"]["endpoints"] == load_all(KUBE_DIR / "servicemonitor.yaml")[0]["spec"]["endpoints"]
    rule = by_kind(chart, "PrometheusRule")
    assert rule["spec"] == load_all(KUBE_DIR / "prometheusrule.yaml")[0]["spec"]
    assert rule["spec"]["groups"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())["groups"]
    # the annotations' Prometheus templates reach the object unrendered
    assert any("{{ $labels.target }}" in r.get("annotations", {}).get("description", "") for g in rule["spec"]["groups"] for r in g["rules"])
    _, pod, _ = _pod(chart)
    assert pod["priorityClassName"] == "system-node-critical"
    _, pod, _ = _pod(_render())
    assert "priorityClassName" not in pod


def test_values_flow_into_the_pod():
    values = _with(service={"port": 9123}, image={"repository": "reg/x", "tag": "1.2", "pullPolicy": "Always"}, logFormat="json")
    chart = _render(values)
    _, _, c = _pod(chart)
    assert c["image"] == "reg/x:1.2" and c["imagePullPolicy"] == "Always"
    assert c["ports"][0]["containerPort"] == 9123 and "--web.listen-address=:9123" in c["args"]
    assert "--log.format=json" in c["args"]
    assert by_kind(chart, "Service")["spec"]["ports"][0]["port"] == 9123


# -- the renderer itself -----------------------------------------------------------------------


def _render_text(tmp_path, text, values):
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "Chart.yaml").write_text("name: t\nversion: 1.0.0\nappVersion: '2'\n")
    (tmp_path / "templates" / "t.yaml").write_text(text)
    return Chart(tmp_path, release_name="r", values=values).render("t.yaml")


def test_renderer_trimming_conditionals_pipelines(tmp_path):
    text = 'a:\n  {{- if .Values.on }}\n  b: {{ .Values.x | quote }}\n  {{- else }}\n  c: 1\n  {{- end }}\nd: {{ .Release.Name }}-{{ .Chart.AppVersion }}\ne:\n  {{- toYaml .Values.m | nindent 2 }}\n'
    assert _render_text(tmp_path, text, {"on": True, "x": "y", "m": {"k": [1]}}) == 'a:\n  b: "y"\nd: r-2\ne:\n  k:\n  - 1\n'
    assert _render_text(tmp_path, text, {"on": False, "x": "y", "m": {}}) == "a:\n  c: 1\nd: r-2\ne:\n  {}\n"


def test_renderer_refuses_missing_values_and_unknown_syntax(tmp_path):
    with pytest.raises(TemplateError, match="missing value .Values.nope"):
        _render_text(tmp_path, "a: {{ .Values.nope }}\n", {})
    with pytest.raises(TemplateError, match="'range' is outside"):
        _render_text(tmp_path, "{{ range .Values.l }}x{{ end }}\n", {"l": [1]})
    with pytest.raises(TemplateError, match="'default' is outside"):
        _render_text(tmp_path, "{{ default 1 .Values.x }}\n", {"x": 1})
