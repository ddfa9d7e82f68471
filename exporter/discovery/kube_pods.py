"""A node's pods as the kubelet or the API server lists them, reduced to what labels need.

Both sources answer with a ``v1.PodList``; only a few fields of each pod are kept: its
namespace and name, the pod labels the config asks for, and for every container (regular,
init and ephemeral) its ID and name. The full JSON (several kilobytes per pod) is dropped as
soon as it is read, so the cache costs a few hundred bytes per pod.

The cgroup path gives the pod UID the kubelet runs the pod under. For a static pod that is
the hash of its manifest: the kubelet's own ``/pods`` lists it under that UID, the API server
under the UID of its mirror pod, with the hash in the ``kubernetes.io/config.mirror``
annotation; the index is keyed by the hash in both cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from exporter.config.model import pod_label_name
from exporter.discovery.labels import cap_value

#: annotation of a mirror pod: the UID (manifest hash) the kubelet runs the static pod under
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
#: the names cAdvisor gives these labels, so ``on (namespace, pod, container)`` joins work
NAME_LABELS = ("namespace", "pod", "container")
_STATUSES = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


class PodListError(ValueError):
    """A response that is not a PodList (garbage, another kind, wrong field types)."""


@dataclass(frozen=True)
class PodNames:
    namespace: str
    name: str
    #: container ID (hex, no runtime prefix) -> container name
    containers: tuple[tuple[str, str], ...]
    #: (label name as exported, value) for the pod labels the config lists
    labels: tuple[tuple[str, str], ...]


def container_id(raw: str) -> str:
    """``containerd://3f1c...`` -> ``3f1c...``, as the cgroup path spells it."""
    return raw.rpartition("://")[2].lower()


@dataclass(frozen=True)
class PodIndex:
    """Pods by UID and containers by ID, from one response (plus pods kept from the last)."""

    pods: Mapping[str, PodNames]
    #: container ID -> pod UID, for targets split by container_id alone
    by_container: Mapping[str, str]
    #: UIDs kept from the previous response, absent from this one
    stale: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.pods)

    def lookup(self, pod_uid: str, container: str) -> tuple[PodNames | None, str]:
        """The pod and the container name of a target's ``pod_uid``/``container_id`` labels
        (either may be empty); ``(None, "")`` when the index does not know them."""
        uid = pod_uid or self.by_container.get(container, "")
        pod = self.pods.get(uid)
        if pod is None:
            return None, ""
        return pod, dict(pod.containers).get(container, "") if container else ""

    def carried_over(self, previous: "PodIndex | None") -> "PodIndex":
        """This index plus the pods of ``previous`` it no longer lists. A pod being deleted
        leaves the list before its last processes exit; keeping it one more refresh keeps its
        series' names from flapping. A pod absent twice in a row is gone."""
        if previous is None:
            return self
        pods = dict(self.pods)
        for uid, pod in previous.pods.items():
            if uid not in pods and uid not in previous.stale:
                pods[uid] = pod
        return PodIndex(pods, _containers(pods), frozenset(uid for uid in pods if uid not in self.pods))


def _containers(pods: Mapping[str, PodNames]) -> dict[str, str]:
    return {cid: uid for uid, pod in pods.items() for cid, _ in pod.containers}


def parse_pod_list(body: bytes, pod_labels: Iterable[str] = ()) -> PodIndex:
    """A PodList response -> :class:`PodIndex`; :class:`PodListError` when it is not one.
    ``pod_labels`` are the pod label keys to keep (each exported as :func:`pod_label_name`)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise PodListError(f"not JSON: {str(e)[:120]}") from None
    if not isinstance(doc, dict) or doc.get("kind", "PodList") != "PodList" or not isinstance(doc.get("items"), list):
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise PodListError(f"not a PodList (kind {str(kind)[:40]!r})")
    keys = tuple((k, pod_label_name(k)) for k in pod_labels)
    pods: dict[str, PodNames] = {}
    for item in doc["items"]:
        entry = _pod(item, keys)
        if entry is not None:
            pods[entry[0]] = entry[1]
    return PodIndex(pods, _containers(pods))


def _pod(item: Any, keys: tuple[tuple[str, str], ...]) -> tuple[str, PodNames] | None:
    meta = _field(item, "metadata", dict)
    status = _field(item, "status", dict)
    uid = _field(meta, "uid", str)
    namespace, name = _field(meta, "namespace", str), _field(meta, "name", str)
    mirror = _field(_field(meta, "annotations", dict), MIRROR_ANNOTATION, str)
    key = (mirror or uid).lower()
    if not key or not name:
        return None  # a pod without identity is of no use for names
    containers = []
    for field in _STATUSES:
        for c in _field(status, field, list):
            cid, cname = _field(c, "containerID", str), _field(c, "name", str)
            if cid and cname:  # a container not started yet has no ID: named at a later refresh
                containers.append((container_id(cid), cap_value(cname)))
    labels = _field(meta, "labels", dict)
    values = tuple((out, cap_value(v)) for k, out in keys if isinstance(v := labels.get(k), str))
    return key, PodNames(cap_value(namespace), cap_value(name), tuple(containers), values)


def _field(obj: Any, key: str, kind: type) -> Any:
    """``obj[key]`` when ``obj`` is a mapping and the value has type ``kind``; else that
    type's empty value. Real responses omit empty fields; garbage may put anything anywhere."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, kind) else kind()
