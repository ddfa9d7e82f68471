"""Kubernetes pod and container identity from a cgroup path, without asking the API server.

The kubelet lays out cgroups deterministically, so a process' cgroup path alone tells its pod
UID, container ID and QoS class. Two drivers exist:

* cgroupfs: ``/kubepods[/burstable|/besteffort]/pod<uid>/<container-id>``
* systemd:  ``/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_with_underscores>.slice/
  <runtime>-<container-id>.scope`` with runtime ``cri-containerd``, ``crio`` or ``docker``

Guaranteed pods sit directly below kubepods (no QoS level). The path may have a prefix
(kind/minikube nodes run inside a container: ``/docker/<id>/kubepods/...``) and a suffix
(nested cgroups inside the container).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UID = r"(?P<uid>[0-9a-fA-F]{8}(?:[-_][0-9a-fA-F]{4}){3}[-_][0-9a-fA-F]{12}|[0-9a-fA-F]{32})"
_QOS = r"(?P<qos>burstable|besteffort)"
_CGROUPFS_POD = re.compile(rf"pod{_UID}")
_SYSTEMD_POD = re.compile(rf"kubepods(?:-{_QOS})?-pod{_UID}\.slice")
_CONTAINER_ID = r"(?P<id>[0-9a-f]{64})"
_CGROUPFS_CONTAINER = re.compile(rf"(?:(?:cri-containerd|crio|docker)-)?{_CONTAINER_ID}")
_SYSTEMD_CONTAINER = re.compile(rf"(?:cri-containerd|crio|docker)-{_CONTAINER_ID}\.scope")


@dataclass(frozen=True)
class KubeMeta:
    pod_uid: str
    container_id: str  # '' for a process at pod level (outside any container cgroup)
    qos_class: str  # guaranteed | burstable | besteffort


def kube_metadata(cgroup_path: str | None) -> KubeMeta | None:
    """Pod/container/QoS of a cgroup path, or None if it is not inside a Kubernetes pod."""
    if not cgroup_path:
        return None
    parts = [p for p in cgroup_path.split("/") if p]
    for i, part in enumerate(parts):
        if part == "kubepods":
            return _cgroupfs(parts[i + 1 :])
        if part == "kubepods.slice":
            return _systemd(parts[i + 1 :])
    return None


def _normalize_uid(uid: str) -> str:
    # systemd unit names cannot contain '-' inside a component, so the kubelet writes '_'
    return uid.replace("_", "-").lower()


def _cgroupfs(rest: list[str]) -> KubeMeta | None:
    qos = "guaranteed"
    if rest and rest[0] in ("burstable", "besteffort"):
        qos, rest = rest[0], rest[1:]
    if not rest or not (m := _CGROUPFS_POD.fullmatch(rest[0])):
        return None
    container = ""
    if len(rest) > 1 and (c := _CGROUPFS_CONTAINER.fullmatch(rest[1])):
        container = c.group("id")
    return KubeMeta(_normalize_uid(m.group("uid")), container, qos)


def _systemd(rest: list[str]) -> KubeMeta | None:
    if rest and rest[0] in ("kubepods-burstable.slice", "kubepods-besteffort.slice"):
        rest = rest[1:]
    if not rest or not (m := _SYSTEMD_POD.fullmatch(rest[0])):
        return None
    qos = m.group("qos") or "guaranteed"
    container = ""
    # crio-conmon-<id>.scope is CRI-O's monitor process, not the container: no match here
    if len(rest) > 1 and (c := _SYSTEMD_CONTAINER.fullmatch(rest[1])):
        container = c.group("id")
    return KubeMeta(_normalize_uid(m.group("uid")), container, qos)
