"""Pod UID, container ID and QoS class from real-looking kubelet cgroup paths."""

from __future__ import annotations

import pytest

from exporter.discovery import KubeMeta, kube_metadata

UID = "0d5e9c3a-6b2f-4f4e-9a5b-3c1e2d7f8a90"
UID_ = UID.replace("-", "_")
CID = "3f1c2b9a8e7d6c5b4a392817161514131211100f0e0d0c0b0a09080706050403"
STATIC_UID = "6a1b2c3d4e5f60718293a4b5c6d7e8f9"  # static (mirror) pods: md5 hash, no dashes


@pytest.mark.parametrize(
    "path, expected",
    [
        # cgroupfs driver (containerd or docker), v1 memory or v2 paths
        (f"/kubepods/burstable/pod{UID}/{CID}", KubeMeta(UID, CID, "burstable")),
        (f"/kubepods/besteffort/pod{UID}/{CID}", KubeMeta(UID, CID, "besteffort")),
        (f"/kubepods/pod{UID}/{CID}", KubeMeta(UID, CID, "guaranteed")),
        (f"/kubepods/burstable/pod{UID}", KubeMeta(UID, "", "burstable")),  # pod-level process
        (f"/kubepods/burstable/pod{UID}/crio-{CID}", KubeMeta(UID, CID, "burstable")),
        (f"/kubepods/pod{STATIC_UID}/{CID}", KubeMeta(STATIC_UID, CID, "guaranteed")),
        # systemd driver
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
            KubeMeta(UID, CID, "burstable"),
        ),
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope",
            KubeMeta(UID, CID, "besteffort"),
        ),
        (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope", KubeMeta(UID, CID, "guaranteed")),
        # CRI-O's conmon runs in its own scope next to the container: pod, but no container
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope",
            KubeMeta(UID, "", "burstable"),
        ),
        # nested cgroup inside the container, and a kind/minikube node prefix
        (
            f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope/init.scope",
            KubeMeta(UID, CID, "guaranteed"),
        ),
        (f"/docker/{CID}/kubepods/besteffort/pod{UID}/{CID}", KubeMeta(UID, CID, "besteffort")),
        # upper-case hex in a uid is normalized
        (f"/kubepods/pod{UID.upper()}/{CID}", KubeMeta(UID, CID, "guaranteed")),
        # not pods
        ("/", None),
        ("", None),
        (None, None),
        ("/system.slice/containerd.service", None),
        ("/kubepods.slice", None),
        ("/kubepods/burstable", None),
        ("/kubepods.slice/kubepods-burstable.slice", None),
        (f"/kubepods/burstable/pod{UID[:-1]}/{CID}", None),  # truncated uid
        (f"/user.slice/kubepods-pod{UID_}.slice", None),  # pod-like name outside kubepods
    ],
)
def test_kube_metadata(path, expected):
    assert kube_metadata(path) == expected


def test_short_container_dir_is_not_a_container_id():
    assert kube_metadata(f"/kubepods/pod{UID}/abc123") == KubeMeta(UID, "", "guaranteed")
