"""helm/damon-exporter, linted and rendered by Helm's own engine (helm-python-sdk): the
schema documents every value and refuses typos, the chart with its defaults gives the same pod
as deploy/kubernetes/base, every switch renders objects that validate strictly, and a values
file written for prometheus-community's prometheus-node-exporter chart renders."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from exporter.config import parse_config

from .manifests import (
    BASE_DIR,
    CHART_DIR,
    KUBE_VERSIONS,
    OPERATOR_DIR,
    OVERLAYS_DIR,
    ROOT,
    by_kind,
    container,
    helm_lint,
    helm_render,
    helm_schema_errors,
    kubectl_kustomize,
    load_all,
    validate,
)

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
NODE_EXPORTER_VALUES = Path(__file__).parent / "node-exporter-values.yaml"
BCRYPT = "$2b$10$QK6XUkN2Yyq9Qk0pH7d1MuH0q3R0VbZbq1Lq0m3d3p6cYp0lQp5bW"

#: Every switch on: page_idle, both monitors, rules, TLS + basic auth, the extra* lists.
ALL_ON = {
    "backend": "page_idle",
    "pageIdle": {"enabled": True},
    "prometheus": {
        "monitor": {"enabled": True, "additionalLabels": {"release": "kp"}, "scheme": "https", "tlsConfig": {"insecureSkipVerify": True}},
        "podMonitor": {"enabled": True, "scheme": "https", "tlsConfig": {"insecureSkipVerify": True}},
    },
    "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kp"}},
    "webConfig": {
        "config": {
            "tls_server_config": {"cert_file": "/etc/damon-exporter/tls/tls.crt", "key_file": "/etc/damon-exporter/tls/tls.key"},
            "basic_auth_users": {"prometheus": BCRYPT},
        }
    },
    "extraVolumes": [{"name": "tls", "secret": {"secretName": "damon-exporter-tls"}}],
    "extraVolumeMounts": [{"name": "tls", "mountPath": "/etc/damon-exporter/tls", "readOnly": True}],
    "extraArgs": ["--web.disable-exporter-metrics"],
    "priorityClassName": "system-node-critical",
}


def _with(**changes) -> dict:
    v = copy.deepcopy(VALUES)
    for dotted, value in changes.items():
        cur = v
        *parents, last = dotted.split("__")
        for p in parents:
            cur = cur[p]
        cur[last] = value
    return v


def _pod(docs):
    ds = by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    return ds, pod, container(pod, "damon-exporter")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-switches"])
def test_helm_lint_strict(values, kube_version):
    assert helm_lint(values, kube_version=f"v{kube_version}") == []


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-switches"])
def test_rendered_objects_validate(values):
    docs = helm_render(values)
    kinds = sorted(d["kind"] for d in docs)
    if values is None:
        assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Service", "ServiceAccount"]
    else:
        assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "PodMonitor", "PrometheusRule", "Secret",
                         "Service", "ServiceAccount", "ServiceMonitor"]
    for d in docs:
        validate(d, f"chart {d['kind']}")
        cluster_scoped = d["kind"] in ("ClusterRole", "ClusterRoleBinding")
        assert d["metadata"].get("namespace") == (None if cluster_scoped else "monitoring")


@pytest.mark.parametrize(
    "values,message",
    [
        ({"backend": "page_idle"}, "at '/pageIdle/enabled': value must be true"),
        ({"backend": "clear_refs", "pageIdle": {"enabled": True}}, "at '/pageIdle/enabled': value must be false"),
        ({"backend": "kernel"}, "at '/backend': value must be one of 'auto', 'damon_sysfs', 'page_idle', 'clear_refs'"),
        ({"backend": "damon_sysfs"}, "at '/damonSysfs/enabled': value must be true"),
        ({"config": {**VALUES["config"], "backend": "auto"}}, "at '/config': additional properties 'backend' not allowed"),
        ({"servicMonitor": {"enabled": True}}, "at '': additional properties 'servicMonitor' not allowed"),
        ({"prometheus": {"monitor": {"relabellings": []}}}, "at '/prometheus/monitor': additional properties 'relabellings' not allowed"),
        ({"image": {"tagg": "1"}}, "at '/image': additional properties 'tagg' not allowed"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"webConfig": {"config": {"basic_auth_users": {"u": "plaintext"}}}}, "at '/webConfig/config/basic_auth_users/u'"),
        ({"livenessProbe": {"httpGet": {"path": "/x"}}}, "at '/livenessProbe/httpGet': additional properties 'path' not allowed"),
        ({"config": {**VALUES["config"], "cpu_budget": 0}}, "at '/config/cpu_budget'"),
        ({"config": {**VALUES["config"], "targets": [{"name": "x", "match": {"comm": ["nginx"]}, "cgroup": "a"}]}}, "oneOf"),
    ],
    ids=["page_idle-without-privileges", "clear_refs-with-page_idle-privileges", "bad-backend", "damon_sysfs-without-mount", "backend-in-config", "typo-top",
         "typo-monitor", "typo-image", "bad-digest", "plaintext-password", "probe-path", "zero-budget", "match-and-cgroup"],
)
def test_schema_rejects(values, message):
    """Helm's own schema check (the one `helm install` runs) refuses these, naming the key."""
    errors = helm_schema_errors(values)
    assert errors is not None and message in errors, errors


def test_schema_documents_every_value():
    """Each key of values.yaml is in the schema, and each chart-defined value has a description."""

    def walk(values, schema, path):
        for key, value in values.items():
            sub = schema.get("properties", {}).get(key)
            assert sub is not None, f"values.yaml: {path}{key} is not in values.schema.json"
            assert sub.get("description"), f"values.schema.json: {path}{key} has no description"
            if isinstance(value, dict) and "properties" in sub:
                walk(value, sub, f"{path}{key}.")

    walk(VALUES, SCHEMA, "")


CONTAINER_KEYS = ("name", "image", "ports", "resources", "securityContext", "volumeMounts", "env")
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "timeoutSeconds": 1, "successThreshold": 1}


def _probe(p: dict) -> dict:
    """A probe with Kubernetes' defaults filled in, so equal probes compare equal."""
    p = {**PROBE_DEFAULTS, **p}
    if "httpGet" in p:
        p["httpGet"] = {"scheme": "HTTP", **p["httpGet"]}
    return p


def test_default_render_matches_plain_manifests():
    chart, plain = helm_render(), kubectl_kustomize(BASE_DIR)
    ds, pod, c = _pod(chart)
    pds, ppod, pc = _pod(plain)
    for key in CONTAINER_KEYS:
        assert c[key] == pc[key], key
    assert c["args"] == pc["args"]
    for key in ("readinessProbe", "livenessProbe"):
        assert _probe(c[key]) == _probe(pc[key]), key
    for key in ("hostPID", "volumes", "nodeSelector", "tolerations", "securityContext", "automountServiceAccountToken"):
        assert pod[key] == ppod[key], key
    assert ds["spec"]["updateStrategy"] == pds["spec"]["updateStrategy"]
    assert by_kind(chart, "Service")["spec"]["ports"] == by_kind(plain, "Service")["spec"]["ports"]
    assert by_kind(chart, "Service")["spec"]["clusterIP"] == "None"
    # the same config, read by the exporter's own parser
    text = by_kind(chart, "ConfigMap")["data"]["config.yaml"]
    assert _config(text) == _config(by_kind(plain, "ConfigMap")["data"]["config.yaml"])
    # selectors select the pods; the pods run as the ServiceAccount the chart makes
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind(chart, "Service")["spec"]["selector"].items() <= labels.items()
    assert pod["serviceAccountName"] == by_kind(chart, "ServiceAccount")["metadata"]["name"] == "damon-exporter"
    # the same RBAC: the kubelet's /pods and nothing else, for the pods' account
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        mine, theirs = by_kind(chart, kind), by_kind(plain, kind)
        assert {k: mine[k] for k in ("rules", "roleRef", "subjects") if k in mine} == \
               {k: theirs[k] for k in ("rules", "roleRef", "subjects") if k in theirs}, kind


def test_pod_metadata_values_choose_the_rbac_and_the_source():
    fallback = helm_render({"kubernetesMetadata": {"apiServerFallback": True}})
    assert by_kind(fallback, "ClusterRole")["rules"] == [
        {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    assert _config(by_kind(fallback, "ConfigMap")["data"]["config.yaml"]).kubernetes.metadata == "auto"
    off = helm_render({"kubernetesMetadata": {"enabled": False}})
    assert {d["kind"] for d in off} == {"ConfigMap", "DaemonSet", "Service", "ServiceAccount"}
    _, pod, c = _pod(off)
    assert pod["automountServiceAccountToken"] is False and "env" not in c
    assert _config(by_kind(off, "ConfigMap")["data"]["config.yaml"]).kubernetes.metadata == "off"
    # RBAC of your own (rbac.create false): the pod still gets what it needs
    own = helm_render({"rbac": {"create": False}})
    assert "ClusterRole" not in {d["kind"] for d in own} and _pod(own)[1]["automountServiceAccountToken"] is True
    for docs in (fallback, off, own):
        for d in docs:
            validate(d, f"chart {d['kind']}")


def _config(text: str):
    """The parsed config without the line numbers (the two files order keys differently)."""
    config = parse_config(text, "config.yaml")
    return dataclasses.replace(config, targets=tuple(dataclasses.replace(t, line=0) for t in config.targets))


def test_page_idle_values_match_page_idle_overlay():
    chart = helm_render({"backend": "page_idle", "pageIdle": {"enabled": True}})
    _, pod, c = _pod(chart)
    _, ppod, pc = _pod(kubectl_kustomize(OVERLAYS_DIR / "page-idle"))
    assert c["securityContext"] == pc["securityContext"]
    # kustomize's strategic merge puts the patch's new list items first: compare by name
    by_name = lambda items: sorted(items, key=lambda x: x["name"])  # noqa: E731
    assert by_name(c["volumeMounts"]) == by_name(pc["volumeMounts"])
    assert by_name(pod["volumes"]) == by_name(ppod["volumes"])
    assert parse_config(by_kind(chart, "ConfigMap")["data"]["config.yaml"], "chart").backend == "page_idle"


def test_damon_sysfs_values_mount_the_damon_tree_and_the_marker_dir():
    chart = helm_render({"backend": "damon_sysfs", "damonSysfs": {"enabled": True}})
    for d in chart:
        validate(d, f"chart {d['kind']}")
    _, pod, c = _pod(chart)
    assert {"name": "damon-sysfs", "mountPath": "/sys/kernel/mm/damon", "readOnly": False} in c["volumeMounts"]
    assert {"name": "damon-state", "mountPath": "/run/damon-exporter"} in c["volumeMounts"]
    assert {"name": "damon-sysfs", "hostPath": {"path": "/sys/kernel/mm/damon", "type": "Directory"}} in pod["volumes"]
    assert {"name": "damon-state", "hostPath": {"path": "/run/damon-exporter", "type": "DirectoryOrCreate"}} in pod["volumes"]
    assert parse_config(by_kind(chart, "ConfigMap")["data"]["config.yaml"], "chart").backend == "damon_sysfs"
    # off by default: no mount of the kernel's DAMON tree
    _, _, c = _pod(helm_render(None))
    assert all(m["name"] != "damon-sysfs" for m in c["volumeMounts"])


def test_operator_objects_match_plain_ones():
    chart = helm_render(ALL_ON)
    sm = by_kind(chart, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kp"
    (plain_ep,) = load_all(OPERATOR_DIR / "servicemonitor.yaml")[0]["spec"]["endpoints"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep == {**plain_ep, "scheme": "https", "tlsConfig": {"insecureSkipVerify": True}}
    (pep,) = by_kind(chart, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert pep == {**load_all(OPERATOR_DIR / "podmonitor.yaml")[0]["spec"]["podMetricsEndpoints"][0], "scheme": "https", "tlsConfig": {"insecureSkipVerify": True}}
    rule = by_kind(chart, "PrometheusRule")
    assert rule["spec"] == load_all(OPERATOR_DIR / "prometheusrule.yaml")[0]["spec"]
    assert rule["spec"]["groups"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())["groups"]
    # the annotations' Prometheus templates reach the object unrendered
    assert any("{{ $labels.target }}" in r.get("annotations", {}).get("description", "") for g in rule["spec"]["groups"] for r in g["rules"])
    _, pod, _ = _pod(chart)
    assert pod["priorityClassName"] == "system-node-critical"
    _, pod, _ = _pod(helm_render())
    assert "priorityClassName" not in pod


# -- web config and probes (basic auth guards every path, /-/healthy included) ---------------


def test_basic_auth_from_values_keeps_the_probes_working():
    docs = helm_render({"webConfig": {"config": {"basic_auth_users": {"prometheus": BCRYPT}}}})
    ds, pod, c = _pod(docs)
    secret = by_kind(docs, "Secret")
    assert yaml.safe_load(secret["stringData"]["web-config.yml"]) == {"basic_auth_users": {"prometheus": BCRYPT}}
    assert "--web.config.file=/etc/damon-exporter-web/web-config.yml" in c["args"]
    assert {"name": "web-config", "secret": {"secretName": secret["metadata"]["name"]}} in pod["volumes"]
    assert {"name": "web-config", "mountPath": "/etc/damon-exporter-web", "readOnly": True} in c["volumeMounts"]
    # no credentials to send: tcpSocket, the rest of the probe settings kept
    assert c["readinessProbe"] == {"tcpSocket": {"port": "metrics"}, "initialDelaySeconds": 0, "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "metrics"} and "httpGet" not in c["livenessProbe"]
    # a password change rolls the pods
    other = helm_render({"webConfig": {"config": {"basic_auth_users": {"prometheus": BCRYPT[:-1] + "X"}}}})
    key = "checksum/web-config"
    assert ds["spec"]["template"]["metadata"]["annotations"][key] != by_kind(other, "DaemonSet")["spec"]["template"]["metadata"]["annotations"][key]


def test_probe_headers_give_http_probes_with_credentials():
    header = [{"name": "Authorization", "value": "Basic cHJvYmU6c2VjcmV0"}]
    _, _, c = _pod(helm_render({
        "webConfig": {"config": {"basic_auth_users": {"probe": BCRYPT}, "tls_server_config": {"cert_file": "/c", "key_file": "/k"}}},
        "livenessProbe": {"httpGet": {"httpHeaders": header}},
        "readinessProbe": {"httpGet": {"httpHeaders": header}},
    }))
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics", "scheme": "HTTPS", "httpHeaders": header}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics", "scheme": "HTTPS", "httpHeaders": header}


def test_tls_only_probes_https_and_existing_secret_probes_tcp():
    _, _, c = _pod(helm_render({"webConfig": {"config": {"tls_server_config": {"cert_file": "/c", "key_file": "/k"}}}}))
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics", "scheme": "HTTPS"}
    docs = helm_render({"webConfig": {"existingSecret": "mine"}})
    assert "Secret" not in {d["kind"] for d in docs}
    _, pod, c = _pod(docs)
    assert {"name": "web-config", "secret": {"secretName": "mine"}} in pod["volumes"]
    assert c["readinessProbe"]["tcpSocket"] == {"port": "metrics"}


# -- values in the node-exporter chart's vocabulary ---------------------------------------------


def test_values_flow_into_the_objects():
    docs = helm_render({
        "fullnameOverride": "memx",
        "namespaceOverride": "obs",
        "global": {"imageRegistry": "registry.example", "imagePullSecrets": ["pull-a", {"name": "pull-b"}]},
        "image": {"registry": "ignored.example", "repository": "team/damon-exporter", "tag": "9.9", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "service": {"port": 9123, "type": "NodePort", "annotations": {"a": "b"}},
        "serviceAccount": {"create": False, "name": "existing"},
        "logFormat": "json",
        "extraArgs": ["--web.disable-exporter-metrics"],
        "env": {"TZ": "UTC"},
        "extraEnv": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "containerSecurityContext": {"readOnlyRootFilesystem": False},
        "commonLabels": {"team": "mem"},
        "podLabels": {"tier": "obs"},
        "revisionHistoryLimit": 3,
    })
    for d in docs:
        validate(d, f"chart {d['kind']}")
        cluster_scoped = d["kind"] in ("ClusterRole", "ClusterRoleBinding")
        assert d["metadata"]["name"] == "memx" and d["metadata"].get("namespace") == (None if cluster_scoped else "obs")
        assert d["metadata"]["labels"]["team"] == "mem"
    assert "ServiceAccount" not in {d["kind"] for d in docs}
    ds, pod, c = _pod(docs)
    assert c["image"] == "registry.example/team/damon-exporter@sha256:" + "a" * 64 and c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "pull-a"}, {"name": "pull-b"}]
    assert pod["serviceAccountName"] == "existing"
    assert c["ports"][0]["containerPort"] == 9123 and "--web.listen-address=:9123" in c["args"]
    assert c["args"][-1] == "--web.disable-exporter-metrics" and "--log.format=json" in c["args"]
    assert c["env"][2:] == [{"name": "TZ", "value": "UTC"}, {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    assert [e["name"] for e in c["env"][:2]] == ["NODE_IP", "NODE_NAME"]
    assert by_kind(docs, "ClusterRoleBinding")["subjects"] == [{"kind": "ServiceAccount", "name": "existing", "namespace": "obs"}]
    # merged over the backend's context: only the one key changed
    assert c["securityContext"]["readOnlyRootFilesystem"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_OVERRIDE"]}
    assert ds["spec"]["template"]["metadata"]["labels"]["tier"] == "obs" and ds["spec"]["revisionHistoryLimit"] == 3
    svc = by_kind(docs, "Service")
    assert svc["spec"]["type"] == "NodePort" and "clusterIP" not in svc["spec"] and svc["metadata"]["annotations"] == {"a": "b"}
    # tag and the chart's appVersion when there is no digest
    _, _, c = _pod(helm_render({"image": {"tag": ""}}))
    assert c["image"] == "damon-exporter:" + yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]


def test_names_follow_helm_conventions():
    assert by_kind(helm_render(release="prod"), "DaemonSet")["metadata"]["name"] == "prod-damon-exporter"
    assert by_kind(helm_render(release="damon-exporter-prod"), "DaemonSet")["metadata"]["name"] == "damon-exporter-prod"
    ds = by_kind(helm_render({"nameOverride": "memx"}, release="prod"), "DaemonSet")
    assert ds["metadata"]["name"] == "prod-memx"
    assert ds["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "memx", "app.kubernetes.io/instance": "prod"}


def test_node_exporter_values_file_renders():
    """A values file written for prometheus-node-exporter, using the keys both charts share,
    passes the schema and renders objects that validate, with every value taking effect."""
    values = yaml.safe_load(NODE_EXPORTER_VALUES.read_text())
    assert helm_lint(values) == []
    docs = helm_render(values, release="node-exporter", namespace="kube-system")
    for d in docs:
        validate(d, f"node-exporter values: {d['kind']}")
        assert d["metadata"].get("namespace", "monitoring") == "monitoring"
        assert "namespace" in d["metadata"] or d["kind"] in ("ClusterRole", "ClusterRoleBinding")
    ds, pod, c = _pod(docs)
    assert c["image"] == "mirror.example/prometheus/damon-exporter:0.1.0"
    assert c["args"][-2:] == ["--log.level=debug", "--web.disable-exporter-metrics"]
    assert pod["affinity"] == values["affinity"] and pod["tolerations"] == values["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["template"]["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"
    assert [x["name"] for x in pod["initContainers"]] == ["wait"]
    assert [x["name"] for x in pod["containers"]] == ["damon-exporter", "textfile"]
    assert {"name": "extra", "mountPath": "/extra", "readOnly": True} in c["volumeMounts"]
    assert c["livenessProbe"]["periodSeconds"] == 20 and c["readinessProbe"]["failureThreshold"] == 5
    sm = by_kind(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["interval"] == "15s" and ep["relabelings"][1:] == values["prometheus"]["monitor"]["relabelings"]
    assert ep["metricRelabelings"] == values["prometheus"]["monitor"]["metricRelabelings"]
    assert by_kind(docs, "ServiceAccount")["metadata"]["annotations"] == {"team": "memory"}
    assert by_kind(docs, "Service")["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}


def test_name_templates_and_remove_empty_groups_reach_the_config():
    """A process-exporter style name template passes the schema and reaches the exporter as
    written (Helm does not template values)."""
    docs = helm_render({"config": {"remove_empty_groups": True, "targets": [{"name": "{{.Comm}}", "match": {"comm": ["nginx", "redis-server"]}}]}})
    config = parse_config(by_kind(docs, "ConfigMap")["data"]["config.yaml"], "chart")
    assert config.remove_empty_groups is True
    (t,) = config.targets
    assert t.name == "{{.Comm}}" and t.name_template is not None and t.comm == ("nginx", "redis-server")
