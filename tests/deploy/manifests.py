"""Helpers for the deployment tests: build, render and validate manifests with the real tools.

* kustomizations are built by ``kubectl kustomize`` (kubectl's built-in kustomize);
* the chart is linted and rendered by Helm's own engine (PyPI ``helm-python-sdk``, Helm's Go
  SDK as a native library: no helm binary needed);
* core kinds are validated by ``kubernetes-validate`` in strict mode for the oldest and the
  newest Kubernetes we support;
* the prometheus-operator kinds, which kubernetes-validate has no schema for, are validated
  against the JSON schema of the operator's CRD models in PyPI
  ``cloudcoil-models-prometheus-operator`` (generated from the operator's CRDs), made strict the
  way kubernetes-validate makes its own schemas strict: unknown fields are refused.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator_v1

ROOT = Path(__file__).resolve().parents[2]
KUBE_DIR = ROOT / "deploy" / "kubernetes"
BASE_DIR = KUBE_DIR / "base"
OVERLAYS_DIR = KUBE_DIR / "overlays"
OPERATOR_DIR = KUBE_DIR / "prometheus-operator"
CHART_DIR = ROOT / "helm" / "damon-exporter"
COMPONENTS_DIR = KUBE_DIR / "components"


def _kind(path: Path) -> str:
    return yaml.safe_load(path.read_text())["kind"]


#: Every kustomization in the repository: each is built by kubectl in the tests.
KUSTOMIZATIONS = sorted(p.parent for p in KUBE_DIR.rglob("kustomization.yaml") if _kind(p) == "Kustomization")
#: Every kustomize Component (built only as part of a kustomization).
COMPONENTS = sorted(p.parent for p in KUBE_DIR.rglob("kustomization.yaml") if _kind(p) == "Component")
#: Kubernetes versions we support and validate against: 1.30 (the oldest still in upstream or
#: vendor support) and the newest that the installed kubernetes-validate ships schemas for.
OLDEST_KUBE = "1.30.0"
KUBE_VERSIONS = (OLDEST_KUBE, kubernetes_validate.utils.latest_version())
CRD_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
RELEASE = "damon-exporter"
NAMESPACE = "monitoring"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _strict(node: Any) -> Any:
    """Refuse unknown fields in every object that lists its properties (kubernetes-validate's
    strict mode does the same to the Kubernetes schemas)."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@functools.cache
def _crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    model = getattr(operator_v1, kind)
    return jsonschema.Draft202012Validator(_strict(model.model_json_schema(by_alias=True, mode="validation")))


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The error that names the bad field: the models' optional fields are `anyOf: [X, null]`,
    whose own error only names the enclosing object."""
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def validate(doc: dict[str, Any], where: str) -> None:
    """Raise AssertionError naming ``where`` if ``doc`` is not a valid object of its kind."""
    kind = doc.get("kind")
    name = doc.get("metadata", {}).get("name")
    if kind in CRD_KINDS:
        errors = [_deepest(e) for e in _crd_validator(kind).iter_errors(doc)]
        errors.sort(key=lambda e: list(map(str, e.absolute_path)))
        assert not errors, f"{where}: {kind}/{name}: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{where}: {kind}/{name} (Kubernetes {version}): {path}: {e.message}") from None


def _tool_missing(what: str) -> None:
    """Under CI a missing tool fails the run (.ci/run installs it); elsewhere skip, loudly."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing under CI (.ci/run installs it)", pytrace=False)
    pytest.skip(f"SKIPPED, NOT CHECKED: {what} is missing (run .ci/install-kubectl)")


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``: the objects a user's ``kubectl apply -k DIR`` would send."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _tool_missing("kubectl")
    r = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kubectl kustomize {directory.relative_to(ROOT)}: {r.stderr.strip()}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def helm_render(values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The chart rendered by Helm's engine with ``values`` over values.yaml (schema checked
    by Helm on the way, as ``helm install`` does)."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values=values, name=release, namespace=namespace)
    docs: list[dict[str, Any]] = []
    for text in rendered.values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def helm_lint(values: dict[str, Any] | None = None, kube_version: str | None = None) -> list[str]:
    """``helm lint --strict`` messages above info level (warnings and errors)."""
    report = helm_python.lint(CHART_DIR, values, strict=True, kube_version=kube_version)
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])


def helm_schema_errors(values: dict[str, Any]) -> str | None:
    """Helm's own values.schema.json verdict on ``values`` merged over values.yaml."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        try:
            chart.validate_schema(chart.merge_values(values))
        except helm_python.HelmValuesError as e:
            return str(e)
    return None


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)
