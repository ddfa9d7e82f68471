"""Helpers for the deployment tests: load manifests, validate them, patch them like kustomize.

kubernetes-validate covers the core kinds; the prometheus-operator kinds are checked against
schemas/monitoring-coreos-com-v1.json, a subset of the operator's CRDs we wrote for that.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE_DIR = ROOT / "deploy" / "kubernetes"
CHART_DIR = ROOT / "helm" / "damon-exporter"
#: Kubernetes versions to validate against: 1.30 (oldest still widely run) and the newest
#: that the installed kubernetes-validate ships schemas for
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CRD_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
_CRD_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "monitoring-coreos-com-v1.json").read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(doc: dict[str, Any], where: str) -> None:
    """Raise AssertionError naming ``where`` if ``doc`` is not a valid object of its kind."""
    kind = doc.get("kind")
    if kind in CRD_KINDS:
        schema = {"$ref": f"#/$defs/{kind}", "$defs": _CRD_SCHEMA["$defs"]}
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
        assert not errors, f"{where}: {kind}: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{where}: {kind}/{doc['metadata']['name']} (Kubernetes {version}): {path}: {e.message}") from None


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of Kubernetes' strategic merge patch our overlays use: maps merge
    recursively, lists of maps with a ``name`` merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = copy.deepcopy(base)
        index = {x["name"]: i for i, x in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = strategic_merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization (resources + strategic-merge patches, all we use)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        p = (directory / res).resolve()
        docs.extend(kustomize(p) if p.is_dir() else load_all(p))
    for patch_ref in k.get("patches", []):
        for patch in load_all(directory / patch_ref["path"]):
            hits = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])]
            assert len(hits) == 1, f"{patch_ref['path']}: patch matches {len(hits)} resources"
            docs[hits[0]] = strategic_merge(docs[hits[0]], patch)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)
