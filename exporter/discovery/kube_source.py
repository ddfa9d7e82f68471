"""The node's pod list, refreshed by its own thread; the names it gives kube-split targets.

A fetch may take seconds (a slow API server) and must never stall sampling, so a
:class:`KubeMetadata` thread fetches on the discovery interval and publishes an immutable
:class:`KubeNames` reference; discovery and the metrics only ever read that reference. The
kubelet's ``/pods`` is asked first (the node's own view: no cluster-wide list, RBAC
``nodes/proxy`` get), the API server with a ``spec.nodeName`` field selector second. When
both fail the last good list stays in use and ``up`` is 0: the series keep their UID labels
(and the names already known), and one log line per change of state says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence
from urllib.parse import quote

from exporter.config.model import Config, KubeConfig, pod_label_name
from exporter.discovery.kube_client import FETCH_ERRORS, Endpoint, FetchError, fetch
from exporter.discovery.kube_pods import NAME_LABELS, PodIndex, PodListError, parse_pod_list

log = logging.getLogger("exporter.discovery.kube")

#: where Kubernetes mounts a pod's ServiceAccount credentials
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBELET_PORT = 10250
#: group_by keys that make a target kube-split: its series get names
KUBE_SPLIT_KEYS = ("pod_uid", "container_id")


@dataclass(frozen=True)
class KubeNames:
    """What one scrape shows of pod metadata: the last good index and the source's health."""

    label_names: tuple[str, ...]
    index: PodIndex | None = None
    up: bool = False
    errors: tuple[tuple[str, int], ...] = ()
    last_success: float = 0.0
    source: str = ""  # the source of the last good list: kubelet | apiserver

    def labels(self, target_labels: Sequence[tuple[str, str]]) -> Mapping[str, str]:
        """The name labels of a target from its ``pod_uid``/``container_id`` labels; empty
        for a target not split by them or a pod not (yet) listed."""
        d = dict(target_labels)
        uid, cid = d.get("pod_uid", ""), d.get("container_id", "")
        if self.index is None or not (uid or cid):
            return {}
        pod, container = self.index.lookup(uid, cid)
        if pod is None:
            return {}
        return {"namespace": pod.namespace, "pod": pod.name, "container": container, **dict(pod.labels)}


@dataclass(frozen=True)
class Source:
    name: str  # kubelet | apiserver
    endpoint: Endpoint | None  # None: not configured here (``problem`` says why)
    problem: str = ""


def sources(cfg: KubeConfig, environ: Mapping[str, str], sa_dir: str = SA_DIR) -> list[Source]:
    """The sources ``cfg.metadata`` names, in the order they are tried, from the pod's
    environment (NODE_IP and NODE_NAME from the downward API, the API server's service env)."""
    token = cfg.token_file or f"{sa_dir}/token"
    out = []
    if cfg.metadata in ("auto", "kubelet"):
        node_ip = environ.get("NODE_IP", "")
        host = f"[{node_ip}]" if ":" in node_ip else node_ip
        base = cfg.kubelet_url or (f"https://{host}:{KUBELET_PORT}" if node_ip else "")
        ca = None if cfg.kubelet_insecure_skip_verify else (cfg.kubelet_ca_file or f"{sa_dir}/ca.crt")
        out.append(Source("kubelet", Endpoint(base + "/pods", token, ca, cfg.kubelet_insecure_skip_verify)) if base else
                   Source("kubelet", None, "NODE_IP is not set (the DaemonSet sets it from status.hostIP)"))
    if cfg.metadata in ("auto", "apiserver"):
        host, port, node = (environ.get(k, "") for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "NODE_NAME"))
        if host and node:
            host = f"[{host}]" if ":" in host else host
            url = f"https://{host}:{port or 443}/api/v1/pods?fieldSelector={quote('spec.nodeName=' + node, safe='')}"
            out.append(Source("apiserver", Endpoint(url, token, f"{sa_dir}/ca.crt")))
        else:
            out.append(Source("apiserver", None, "NODE_NAME (from spec.nodeName) or KUBERNETES_SERVICE_HOST is not set"))
    return out


def wanted(config: Config, environ: Mapping[str, str]) -> bool:
    """Whether pod metadata is fetched: a target is split by pod or container, the source is
    not ``off``, and under ``auto`` the exporter runs in a pod."""
    kube_split = any(k in t.group_by for t in config.targets for k in KUBE_SPLIT_KEYS)
    mode = config.kubernetes.metadata
    return kube_split and mode != "off" and (mode != "auto" or "KUBERNETES_SERVICE_HOST" in environ)


class KubeMetadata:
    """Fetches the node's pods every ``interval`` seconds in a thread of its own."""

    def __init__(
        self,
        cfg: KubeConfig,
        source_list: list[Source],
        interval: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.sources = source_list
        self.interval = interval
        self.clock = clock
        names = NAME_LABELS + tuple(pod_label_name(k) for k in cfg.pod_labels)
        self._names = KubeNames(label_names=names)
        self._errors: Counter[str] = Counter()
        self._state = ""  # what the last log line said: "up:<source>" or "down:<reasons>"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        return self._names.label_names

    def names(self) -> KubeNames:
        """The latest published snapshot (one attribute read)."""
        return self._names

    def start(self) -> None:
        """Start the thread once; its first fetch is immediate."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="damon-kube-metadata", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as e:  # never die: the last good names stay in use
                self._failed({"internal": f"{type(e).__name__}: {e}"})
            self._stop.wait(self.interval)

    def refresh(self) -> None:
        """One attempt: each source in order until one answers with a PodList."""
        why: dict[str, str] = {}
        for s in self.sources:
            try:
                if s.endpoint is None:
                    raise FetchError("credentials", s.problem)
                body = fetch(s.endpoint, timeout=self.cfg.timeout, max_bytes=self.cfg.max_response_size)
                try:
                    index = parse_pod_list(body, self.cfg.pod_labels)
                finally:
                    del body  # the raw answer is the larger part; the index is what stays
            except FetchError as e:
                self._errors[e.reason] += 1
                why[s.name] = f"{e.reason}: {e}"
                continue
            except PodListError as e:
                self._errors["invalid"] += 1
                why[s.name] = f"invalid: {e}"
                continue
            self._succeeded(s.name, index, why)
            return
        self._failed(why)

    def _succeeded(self, source: str, index: PodIndex, why: dict[str, str]) -> None:
        old = self._names
        self._names = KubeNames(old.label_names, index.carried_over(old.index), True, self._error_counts(),
                                self.clock(), source)
        state = f"up:{source}"
        if state != self._state:
            self._state = state
            log.info("pod metadata available: namespace, pod and container labels are current",
                     extra={"kv": {"source": source, "pods": len(index), **{f"{k}_err": v for k, v in why.items()}}})

    def _failed(self, why: dict[str, str]) -> None:
        if "internal" in why:
            self._errors["invalid"] += 1
        old = self._names
        self._names = KubeNames(old.label_names, old.index, False, self._error_counts(), old.last_success, old.source)
        state = "down:" + ",".join(f"{k}={v.split(':', 1)[0]}" for k, v in sorted(why.items()))
        if state != self._state:
            self._state = state
            log.warning("pod metadata unavailable: series keep their pod_uid/container_id labels and the names "
                        "last known", extra={"kv": {f"{k}_err": v for k, v in why.items()}})

    def _error_counts(self) -> tuple[tuple[str, int], ...]:
        return tuple((k, self._errors.get(k, 0)) for k in FETCH_ERRORS)


def from_config(config: Config, environ: Mapping[str, str], sa_dir: str = SA_DIR) -> KubeMetadata | None:
    """The refresher ``config`` asks for in this environment, or None (not started)."""
    if not wanted(config, environ):
        return None
    return KubeMetadata(config.kubernetes, sources(config.kubernetes, environ, sa_dir), config.monitoring.update_interval)
