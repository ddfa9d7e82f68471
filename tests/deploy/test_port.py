"""Every deployment artefact listens on, exposes and scrapes the exporter's default port
(exporter/commands/serve.py DEFAULT_PORT), so a user who drops --web.listen-address or
reads the port off one file gets the same number everywhere."""

from __future__ import annotations

import re

import yaml

from exporter.commands.serve import DEFAULT_PORT

from .manifests import BASE_DIR, CHART_DIR, KUBE_DIR, ROOT, by_kind, container, load_all


def test_plain_manifests_use_default_port():
    ds = by_kind(load_all(BASE_DIR / "daemonset.yaml"), "DaemonSet")
    dep = by_kind(load_all(KUBE_DIR / "sidecar-example.yaml"), "Deployment")
    for pod in (ds["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]):
        c = container(pod, "damon-exporter")
        assert c["ports"][0]["containerPort"] == DEFAULT_PORT
        assert f"--web.listen-address=:{DEFAULT_PORT}" in c["args"]
    assert by_kind(load_all(BASE_DIR / "service.yaml"), "Service")["spec"]["ports"][0]["port"] == DEFAULT_PORT


def test_chart_and_image_use_default_port():
    assert yaml.safe_load((CHART_DIR / "values.yaml").read_text())["service"]["port"] == DEFAULT_PORT
    assert re.search(r"^EXPOSE (\d+)$", (ROOT / "Dockerfile").read_text(), re.M).group(1) == str(DEFAULT_PORT)
