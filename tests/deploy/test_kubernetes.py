"""deploy/kubernetes/: every kustomization built by `kubectl kustomize`, every object valid
for the oldest and newest supported Kubernetes (kubernetes-validate --strict) or, for the
prometheus-operator kinds, for the operator's CRD schema; and the properties the deployment
depends on (privileges per backend, probes, ports, config) asserted one by one."""

from __future__ import annotations

import copy
import os

import pytest

from exporter.config import parse_config

from .manifests import (
    BASE_DIR,
    COMPONENTS,
    KUBE_DIR,
    KUSTOMIZATIONS,
    OPERATOR_DIR,
    OVERLAYS_DIR,
    by_kind,
    container,
    kubectl_kustomize,
    load_all,
    validate,
)

CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding")
PLAIN_FILES = [KUBE_DIR / "sidecar-example.yaml", *sorted(OPERATOR_DIR.glob("*.yaml"))]


def test_every_kustomization_is_tested():
    """Overlays sit beside the base, not inside it (kustomize refuses a root inside another)."""
    assert [p.relative_to(KUBE_DIR).as_posix() for p in KUSTOMIZATIONS] == ["base", "overlays/page-idle", "overlays/web-config"]
    assert [p.relative_to(KUBE_DIR).as_posix() for p in COMPONENTS] == ["components/page-idle", "components/web-config"]


def test_components_combine(tmp_path):
    """A user's own overlay listing both components (page_idle and a web config) builds, and
    gets both: what the two overlays do, together."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(BASE_DIR, tmp_path)}]\n"
        f"components: [{', '.join(os.path.relpath(c, tmp_path) for c in COMPONENTS)}]\n"
    )
    docs = kubectl_kustomize(tmp_path)
    for doc in docs:
        validate(doc, "base + both components")
    _, pod, c = _daemonset(docs)
    _, _, idle = _daemonset(kubectl_kustomize(OVERLAYS_DIR / "page-idle"))
    _, _, web = _daemonset(kubectl_kustomize(OVERLAYS_DIR / "web-config"))
    assert c["securityContext"] == idle["securityContext"]
    assert c["args"] == web["args"] and c["readinessProbe"] == web["readinessProbe"] and c["livenessProbe"] == web["livenessProbe"]
    assert {m["name"] for m in c["volumeMounts"]} == {m["name"] for m in idle["volumeMounts"]} | {"web-config"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(KUBE_DIR).as_posix())
def test_kustomization_builds_and_validates(directory):
    docs = kubectl_kustomize(directory)
    assert docs
    for doc in docs:
        validate(doc, f"kubectl kustomize {directory.relative_to(KUBE_DIR)}")
        # one namespace, set by the base's kustomization (an overlay's `namespace:` moves
        # everything, the ClusterRoleBinding's subject too); cluster-scoped objects have none
        expected = None if doc["kind"] in CLUSTER_SCOPED else "monitoring"
        assert doc["metadata"].get("namespace") == expected, f"{directory}: {doc['kind']} in {doc['metadata'].get('namespace')}"


@pytest.mark.parametrize("path", PLAIN_FILES, ids=lambda p: str(p.relative_to(KUBE_DIR)))
def test_plain_manifest_validates(path):
    docs = load_all(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate(doc, str(path))
        assert "namespace" not in doc["metadata"], f"{path}: hard-coded namespace"


def test_validation_catches_mistakes():
    """The validators are not rubber stamps: typical mistakes fail, with the path named."""
    ds = copy.deepcopy(by_kind(load_all(BASE_DIR / "daemonset.yaml"), "DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(AssertionError, match=r"spec\.template\.spec\.containers\.0\.ports\.0\.containerPort"):
        validate(ds, "mutated")
    ds = copy.deepcopy(by_kind(load_all(BASE_DIR / "daemonset.yaml"), "DaemonSet"))
    ds["spec"]["template"]["spec"]["hostPid"] = True  # wrong case: strict mode rejects it
    with pytest.raises(AssertionError, match="hostPid"):
        validate(ds, "mutated")
    sm = copy.deepcopy(by_kind(load_all(OPERATOR_DIR / "servicemonitor.yaml"), "ServiceMonitor"))
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(AssertionError, match=r"spec\.endpoints\.0: Additional properties .*'intervall'"):
        validate(sm, "mutated")
    pm = copy.deepcopy(by_kind(load_all(OPERATOR_DIR / "podmonitor.yaml"), "PodMonitor"))
    pm["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(AssertionError, match=r"spec\.podMetricsEndpoints\.0\.interval"):
        validate(pm, "mutated")
    rule = copy.deepcopy(by_kind(load_all(OPERATOR_DIR / "prometheusrule.yaml"), "PrometheusRule"))
    rule["spec"]["groups"][1]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(AssertionError, match=r"spec\.groups\.1\.rules\.0\.for"):
        validate(rule, "mutated")


def test_kustomization_lists_the_core_objects():
    docs = kubectl_kustomize(BASE_DIR)
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Service", "ServiceAccount"]


def test_rbac_is_get_nodes_proxy_for_the_daemonsets_account_only(tmp_path):
    """Least privilege: the kubelet's /pods (nodes/proxy get) and nothing else, bound to the
    account the DaemonSet runs as, in its namespace, also after an overlay moves it."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: observability\n"
        f"resources: [{os.path.relpath(BASE_DIR, tmp_path)}]\n")
    for docs, namespace in ((kubectl_kustomize(BASE_DIR), "monitoring"), (kubectl_kustomize(tmp_path), "observability")):
        role, binding = by_kind(docs, "ClusterRole"), by_kind(docs, "ClusterRoleBinding")
        assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
        ds, pod, _ = _daemonset(docs)
        sa = by_kind(docs, "ServiceAccount")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": namespace}]
        assert sa["metadata"]["name"] == pod["serviceAccountName"] and ds["metadata"]["namespace"] == namespace


def test_daemonset_knows_its_node_for_pod_names():
    _, pod, c = _daemonset()
    # the token for the kubelet (the account itself does not mount it into other pods)
    assert pod["automountServiceAccountToken"] is True
    assert by_kind(load_all(BASE_DIR / "serviceaccount.yaml"), "ServiceAccount")["automountServiceAccountToken"] is False
    assert c["env"] == [
        {"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]


def _daemonset(docs=None):
    ds = by_kind(docs or kubectl_kustomize(BASE_DIR), "DaemonSet")
    return ds, ds["spec"]["template"]["spec"], container(ds["spec"]["template"]["spec"], "damon-exporter")


def test_daemonset_runs_everywhere_and_rolls():
    ds, pod, _ = _daemonset()
    assert pod["hostPID"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} in pod["tolerations"]
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_daemonset_probes_and_port():
    _, _, c = _daemonset()
    assert c["ports"] == [{"name": "metrics", "containerPort": c["ports"][0]["containerPort"], "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert "--config.file=/etc/damon-exporter/config.yaml" in c["args"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/damon-exporter"


def _mebibytes(q: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(q[:-2]) * units[q[-2:]]


def _millicores(q: str) -> float:
    return float(q[:-1]) if q.endswith("m") else float(q) * 1000


def test_daemonset_resources_fit_the_goals():
    """Request the sampling budget (0.05 core); the memory limit leaves room over the
    100 MiB RSS goal at 50 targets but stays small."""
    _, _, c = _daemonset()
    r = c["resources"]
    assert _millicores(r["requests"]["cpu"]) == 50
    assert _millicores(r["limits"]["cpu"]) > 50
    assert 100 < _mebibytes(r["limits"]["memory"]) <= 256
    assert _mebibytes(r["requests"]["memory"]) <= _mebibytes(r["limits"]["memory"])


def test_daemonset_has_clear_refs_privileges_only():
    """Base manifest: enough for clear_refs (root + SYS_PTRACE + DAC_OVERRIDE), not for
    page_idle (no SYS_ADMIN, /sys read-only), so `backend: auto` settles on clear_refs."""
    _, pod, c = _daemonset()
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_OVERRIDE"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/sys/fs/cgroup"]["readOnly"] is True
    assert not any(p.startswith("/sys/kernel") for p in mounts)
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"/sys/fs/cgroup"}


def test_page_idle_overlay_adds_exactly_what_page_idle_needs():
    base = kubectl_kustomize(BASE_DIR)
    docs = kubectl_kustomize(OVERLAYS_DIR / "page-idle")
    ds, pod, c = _daemonset(docs)
    assert c["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN", "SYS_PTRACE", "DAC_OVERRIDE"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/sys/kernel/mm/page_idle"]["readOnly"] is False
    vol = next(v for v in pod["volumes"] if v["name"] == mounts["/sys/kernel/mm/page_idle"]["name"])
    assert vol["hostPath"] == {"path": "/sys/kernel/mm/page_idle", "type": "Directory"}
    # everything else is the base: the other mounts, probes, resources
    _, base_pod, base_c = _daemonset(base)
    assert [m for m in c["volumeMounts"] if m["name"] != "page-idle"] == base_c["volumeMounts"]
    for key in ("readinessProbe", "livenessProbe", "resources", "ports", "args", "image"):
        assert c[key] == base_c[key]
    assert pod["hostPID"] == base_pod["hostPID"]


def test_web_config_overlay_mounts_the_secret_and_probes_without_credentials():
    """Basic auth guards every path, /-/healthy and /-/ready too, and the kubelet has no
    credentials: the overlay's probes are tcpSocket probes, everything else is the base."""
    base = kubectl_kustomize(BASE_DIR)
    docs = kubectl_kustomize(OVERLAYS_DIR / "web-config")
    _, pod, c = _daemonset(docs)
    _, base_pod, base_c = _daemonset(base)
    assert c["args"] == [*base_c["args"], "--web.config.file=/etc/damon-exporter-web/web-config.yml"]
    assert c["readinessProbe"] == {"tcpSocket": {"port": "metrics"}, "periodSeconds": 5, "failureThreshold": 3}
    assert c["livenessProbe"] == {"tcpSocket": {"port": "metrics"}, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3}
    assert c["volumeMounts"][-1] == {"name": "web-config", "mountPath": "/etc/damon-exporter-web", "readOnly": True}
    assert pod["volumes"][-1] == {"name": "web-config", "secret": {"secretName": "damon-exporter-web-config"}}
    assert pod["volumes"][:-1] == base_pod["volumes"]
    for key in ("resources", "ports", "securityContext", "image"):
        assert c[key] == base_c[key]


def test_config_in_configmap_is_valid_and_monitors_pods():
    cm = by_kind(load_all(BASE_DIR / "configmap.yaml"), "ConfigMap")
    config = parse_config(cm["data"]["config.yaml"], "configmap.yaml")
    assert config.backend == "auto"
    assert config.cpu_budget == 0.05
    (pods,) = config.targets
    assert pods.cgroup == "kubepods*" and pods.group_by == ("pod_uid", "container_id", "qos_class")
    assert pods.max_groups == 100
    assert (config.kubernetes.metadata, config.kubernetes.pod_labels) == ("kubelet", ("app.kubernetes.io/name",))


def test_service_selects_the_pods_by_port_name():
    docs = kubectl_kustomize(BASE_DIR)
    svc = by_kind(docs, "Service")
    ds, _, c = _daemonset(docs)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    assert port["port"] == c["ports"][0]["containerPort"]


@pytest.mark.parametrize("name,key", [("servicemonitor.yaml", "endpoints"), ("podmonitor.yaml", "podMetricsEndpoints")])
def test_monitors_scrape_metrics_port_and_add_node_label(name, key):
    mon = load_all(OPERATOR_DIR / name)[0]
    ds, _, _ = _daemonset()
    assert mon["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (ep,) = mon["spec"][key]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"} in ep["relabelings"]


def test_sidecar_example_needs_no_privilege():
    docs = load_all(KUBE_DIR / "sidecar-example.yaml")
    dep = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert "hostPID" not in pod
    assert not any("hostPath" in v for v in pod["volumes"])
    exp, app = container(pod, "damon-exporter"), container(pod, "nginx")
    assert exp["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # same uid as the app: the pod-level runAsUser, not overridden by either container
    assert pod["securityContext"]["runAsUser"] == 101 and pod["securityContext"]["runAsNonRoot"] is True
    assert "runAsUser" not in exp["securityContext"] and "runAsUser" not in app["securityContext"]
    # tcpSocket probes: the app's readiness must not wait for the exporter's first
    # aggregation, and they keep working when basic auth is turned on
    assert exp["readinessProbe"]["tcpSocket"] == {"port": "metrics"}
    assert exp["livenessProbe"]["tcpSocket"] == {"port": "metrics"}
    assert "--config.file=/etc/damon-exporter/config.yaml" in exp["args"]
    cm = by_kind(docs, "ConfigMap")
    assert exp["volumeMounts"][0]["name"] in {v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == cm["metadata"]["name"]}
    config = parse_config(cm["data"]["config.yaml"], "sidecar-example.yaml")
    assert config.backend == "clear_refs"
    assert [t.comm for t in config.targets] == [("nginx",)]
