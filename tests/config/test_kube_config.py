"""The ``kubernetes:`` section: every bad value named by file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from exporter.config import ConfigError, parse_config
from exporter.config.model import KubeConfig

TARGET = "targets:\n  - name: pods\n    cgroup: kubepods*\n    group_by: [pod_uid, container_id]\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(textwrap.dedent(text), "c.yaml")
    return e.value.lines


def test_defaults_and_a_full_section():
    assert parse_config(TARGET).kubernetes == KubeConfig()
    cfg = parse_config(textwrap.dedent("""\
        kubernetes:
          metadata: kubelet
          token_file: /var/run/secrets/tokens/kubelet
          kubelet_url: https://node-a.internal:10250
          kubelet_ca_file: /etc/kubernetes/pki/kubelet-ca.crt
          kubelet_insecure_skip_verify: false
          timeout: 2s
          max_response_size: 16MiB
          pod_labels: [app.kubernetes.io/name, team]
        """) + TARGET)
    assert cfg.kubernetes == KubeConfig("kubelet", "/var/run/secrets/tokens/kubelet", "https://node-a.internal:10250",
                                        "/etc/kubernetes/pki/kubelet-ca.crt", False, 2.0, 16 << 20,
                                        ("app.kubernetes.io/name", "team"))


def test_every_bad_value_is_named():
    assert errors("""\
        kubernetes:
          metadata: kubeapi
          token_file: token
          kubelet_url: https://10.0.0.1:10250/pods
          kubelet_insecure_skip_verify: maybe
          timeout: 1m
          max_response_size: 1GiB
          pod_labels: [app.kubernetes.io/name, app.kubernetes.io-name, "-bad", 7]
          extra: 1
        targets:
          - name: pods
            cgroup: kubepods*
            group_by: [pod_uid]
            labels: {pod: x}
        """) == [
        "c.yaml:2: kubernetes.metadata: unknown metadata source 'kubeapi' (expected one of: auto, kubelet, apiserver, off)",
        "c.yaml:3: kubernetes.token_file: must be an absolute path, got 'token'",
        "c.yaml:4: kubernetes.kubelet_url: expected https://HOST:PORT (no path), got 'https://10.0.0.1:10250/pods'",
        "c.yaml:5: kubernetes.kubelet_insecure_skip_verify: expected true or false, got str",
        "c.yaml:6: kubernetes.timeout: 1m is longer than the maximum of 30s",
        "c.yaml:7: kubernetes.max_response_size: must be between 64 KiB and 64 MiB, got 1073741824 bytes",
        "c.yaml:8: kubernetes.pod_labels[3]: expected a string, got int (quote it)",
        "c.yaml:8: kubernetes.pod_labels[1]: pod labels 'app.kubernetes.io/name' (line 8) and 'app.kubernetes.io-name' would both be exported as 'label_app_kubernetes_io_name'",
        "c.yaml:8: kubernetes.pod_labels[2]: not a Kubernetes label key: '-bad'",
        "c.yaml:9: kubernetes.extra: unknown key (expected one of: metadata, token_file, kubelet_url, kubelet_ca_file, kubelet_insecure_skip_verify, timeout, max_response_size, pod_labels)",
        "c.yaml:14: targets[0].labels.pod: label name 'pod' is reserved (used by the exporter or by group_by)",
    ]


def test_pod_labels_are_bounded_and_may_not_shadow_static_labels():
    many = ", ".join(f"l{i}" for i in range(17))
    assert errors(f"kubernetes: {{pod_labels: [{many}]}}\n" + TARGET) == [
        "c.yaml:1: kubernetes.pod_labels: 17 pod labels, at most 16 (each is one more label on every series)"]
    assert errors("kubernetes: {pod_labels: [team]}\n" + TARGET + "    labels: {label_team: x}\n") == [
        "c.yaml:3: targets[0].labels.label_team: reserved: kubernetes.pod_labels exports a pod label under this name"]
    # with the metadata off nothing is exported under that name
    assert parse_config("kubernetes: {metadata: 'off', pod_labels: [team]}\n" + TARGET + "    labels: {label_team: x}\n")
