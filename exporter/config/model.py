"""The validated configuration: plain frozen dataclasses, no YAML in sight.

The service only ever sees these objects, never the YAML tree, so everything that can be
wrong with a file is caught (and reported with its line) before anything starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.engines.registry import BACKEND_NAMES
from exporter.model.attrs import MonitoringAttrs
from exporter.model.policy import DEFAULT_COLD_AGE, DEFAULT_WORKING_SET_WINDOW

if TYPE_CHECKING:  # discovery imports config at run time; config only names this type
    from exporter.config.templates import NameTemplate

#: accepted values of ``backend``; ``auto`` picks the best one the kernel offers
BACKENDS: tuple[str, ...] = BACKEND_NAMES  # the registry is the one list

#: keys a target may be split by (``group_by``); each becomes a label of that name
GROUP_BY_KEYS: tuple[str, ...] = ("pid", "comm", "cgroup", "pod_uid", "container_id", "qos_class")

#: label names a static ``labels:`` entry may not use: the exporter's own labels, the
#: group_by keys (every target carries every label name, so a static ``pid`` on one target
#: would collide with a split-by-pid target) and names Prometheus or the scrape adds.
RESERVED_LABELS: frozenset[str] = frozenset(
    {"target", "backend", "kind", "le", "quantile", "instance", "job", *GROUP_BY_KEYS, "namespace", "pod", "container"}
)

#: ``kubernetes.metadata``: where pod names come from. ``auto``: the kubelet, then the API
#: server, when the exporter runs in a pod; ``off``: UID labels only
KUBE_METADATA_SOURCES: tuple[str, ...] = ("auto", "kubelet", "apiserver", "off")
#: at most this many ``kubernetes.pod_labels``: each is one more label on every series
MAX_POD_LABELS = 16
#: ``kubernetes.max_response_size`` bounds and default: a node's 110 pods (the kubelet's
#: default maximum) list in under 1 MiB (4-8 KiB a pod); parsing holds about 5 times the body
#: in memory for a moment, so the default (about 1,000 pods) peaks near 24 MiB, within the
#: DaemonSet's 128 MiB limit beside the samples
KUBE_RESPONSE_MIN = 64 << 10
KUBE_RESPONSE_MAX = 64 << 20
KUBE_RESPONSE_DEFAULT = 4 << 20

_INVALID_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_]")


def pod_label_name(key: str) -> str:
    """The Prometheus label a pod label becomes: ``label_`` and the key with every character
    outside ``[A-Za-z0-9_]`` made ``_``, as kube-state-metrics' ``kube_pod_labels`` names it."""
    return "label_" + _INVALID_LABEL_CHAR.sub("_", key)


@dataclass(frozen=True)
class KubeConfig:
    """The ``kubernetes:`` section: pod, namespace and container names for kube-split targets."""

    metadata: str = "auto"
    #: '' -> the ServiceAccount token the kubelet mounts (re-read at every fetch: it rotates)
    token_file: str = ""
    #: '' -> ``https://$NODE_IP:10250`` (the node's kubelet, NODE_IP from the downward API)
    kubelet_url: str = ""
    #: '' -> the ServiceAccount's ca.crt (kubelets whose serving certificate the cluster CA signs)
    kubelet_ca_file: str = ""
    #: no verification of the kubelet's serving certificate (self-signed by the kubelet)
    kubelet_insecure_skip_verify: bool = False
    timeout: float = 5.0
    max_response_size: int = KUBE_RESPONSE_DEFAULT
    pod_labels: tuple[str, ...] = ()

DEFAULT_BACKEND = "auto"
DEFAULT_CPU_BUDGET = 0.05
DEFAULT_MAX_GROUPS = 100
#: ``memory_limit`` bounds: under 32 MiB the interpreter and the HTTP server alone exceed it
MEMORY_LIMIT_MIN = 32 << 20
MEMORY_LIMIT_MAX = 64 << 30

#: which groups ``max_groups`` keeps when there are more (``keep_groups``): ``stable``, the
#: groups already monitored, then the first in label-value order; ``largest``, the groups with
#: the most resident memory, chosen again at every discovery
KEEP_GROUPS: tuple[str, ...] = ("stable", "largest")
DEFAULT_KEEP_GROUPS = "stable"


@dataclass(frozen=True)
class TargetConfig:
    """One ``targets:`` entry. Exactly one of (comm/exe/cmdline) or ``cgroup`` is set."""

    name: str
    comm: tuple[str, ...] = ()
    exe: tuple[str, ...] = ()
    cmdline: tuple[Any, ...] = ()  # RE2 patterns (exporter.config.regex), each with .search
    cgroup: str | None = None
    include_children: bool = False
    group_by: tuple[str, ...] = ()
    max_groups: int = DEFAULT_MAX_GROUPS
    keep_groups: str = DEFAULT_KEEP_GROUPS
    labels: tuple[tuple[str, str], ...] = ()
    line: int = 0
    #: set when ``name`` holds {{.Field}} references: one target per distinct rendered name
    name_template: "NameTemplate | None" = None


@dataclass(frozen=True)
class Config:
    """A whole validated config file; ``path`` is None when it did not come from a file."""

    path: str | None = None
    backend: str = DEFAULT_BACKEND
    monitoring: MonitoringAttrs = field(default_factory=MonitoringAttrs)
    #: the ``monitoring`` keys the file sets; the others take the backend's defaults
    monitoring_keys: tuple[str, ...] = ()
    cold_age: float = DEFAULT_COLD_AGE
    working_set_window: float = DEFAULT_WORKING_SET_WINDOW
    cpu_budget: float = DEFAULT_CPU_BUDGET
    #: the exporter's resident memory above which no new process is monitored (0: none);
    #: the processes left out show as damon_target_unmonitored_processes{kind="limit"}
    memory_limit: int = 0
    #: drop a target with no process instead of exporting it with damon_target_up 0
    remove_empty_groups: bool = False
    #: export the per-target histograms (damon_idle_age_seconds, damon_access_frequency_ratio,
    #: damon_reaccess_idle_age_seconds):
    #: 39 of a target's 54 series; fleets that keep only gauges and counters turn them off
    histograms: bool = True
    kubernetes: KubeConfig = field(default_factory=KubeConfig)
    targets: tuple[TargetConfig, ...] = ()


class ConfigError(Exception):
    """A config that cannot be used. ``lines`` holds every problem found, one
    ``FILE:LINE: key.path: message`` line each, so a user fixes them all in one go."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))
