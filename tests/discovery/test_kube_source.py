"""Pod names from the kubelet's /pods and the API server's PodList, over TLS with a token.

The responses are PodLists in the shapes the kubelet and the API server send (tests/discovery/
data/): node-a's kubelet (containerd, systemd driver) lists a StatefulSet pod with two
containers, an init and an ephemeral container, a static pod under its manifest hash, a pod
whose container has not started and a finished Job pod; node-b's API server (CRI-O, cgroupfs
driver) lists a pod with sidecar and init containers and the mirror pod of a static pod.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import textwrap
import tracemalloc

import pytest

from exporter.config import parse_config
from exporter.config.model import KubeConfig
from exporter.discovery.kube_client import FETCH_ERRORS, Endpoint
from exporter.discovery.kube_pods import PodListError, parse_pod_list
from exporter.discovery.kube_source import KubeMetadata, Source, from_config, sources
from tests.service.certs import make_certs

from .kube_server import DATA, TOKEN, KubeServer

NODE_A = (DATA / "kubelet-pods-node-a.json").read_bytes()
NODE_B = (DATA / "apiserver-podlist-node-b.json").read_bytes()
API_PATH = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-b"
CART = "0d5e9c3a-6b2f-4f4e-9a5b-3c1e2d7f8a90"
STATIC = "5b2c7a7f0a8e1d3c9b6e4f2a1d0c8b7e"  # kube-apiserver-node-a's manifest hash
ETCD_HASH = "e1f0c9d8b7a6958473625140f3e2d1c0"
FRONTEND = "7f3a1c9e-2d4b-4e8f-b6a0-9c1d3e5f7a2b"
REPORT = "c4d8e2f6-9a1b-4c3d-8e5f-7a9b1c3d5e7f"
LABELS = ("app.kubernetes.io/name", "team")


def cid(key: str) -> str:
    """The container IDs of the recorded responses (sha256 of a key, as 64 hex digits)."""
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("kube-certs"))


@pytest.fixture
def token(tmp_path):
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    return p


@pytest.fixture
def kubelet(certs):
    s = KubeServer(certs, NODE_A)
    yield s
    s.close()


@pytest.fixture
def apiserver(certs):
    s = KubeServer(certs, NODE_B, path=API_PATH)
    yield s
    s.close()


def metadata(*srcs: Source, timeout: float = 5.0, max_bytes: int = 4 << 20) -> KubeMetadata:
    return KubeMetadata(KubeConfig(timeout=timeout, max_response_size=max_bytes, pod_labels=LABELS), list(srcs), 10.0,
                        clock=lambda: 1700000000.0)


def at(server: KubeServer, token, certs, name: str = "kubelet", **kw) -> Source:
    return Source(name, Endpoint(server.url + server.path, str(token), str(certs.ca), **kw))


def errors(m: KubeMetadata) -> dict[str, int]:
    return {k: v for k, v in m.names().errors if v}


# -- the responses ----------------------------------------------------------------------------


def test_kubelet_pods_every_kind_of_container_and_pod():
    index = parse_pod_list(NODE_A, LABELS)
    assert sorted(index.pods) == sorted([CART, STATIC, FRONTEND, REPORT])
    cart = index.pods[CART]
    assert (cart.namespace, cart.name) == ("shop", "cart-0")
    assert dict(cart.containers) == {
        cid("cart-0/cart"): "cart",
        cid("cart-0/envoy"): "envoy",
        cid("cart-0/init-db"): "init-db",  # init containers have cgroups while they run
        cid("cart-0/debugger-x7k2p"): "debugger-x7k2p",  # kubectl debug's ephemeral container
    }
    assert cart.labels == (("label_app_kubernetes_io_name", "cart"), ("label_team", "payments"))
    # a static pod: the kubelet lists it under the UID it runs it with, the manifest hash
    assert index.pods[STATIC].name == "kube-apiserver-node-a" and index.pods[STATIC].labels == ()
    # just started: named, but its container has no ID yet (named at a later refresh)
    assert (index.pods[FRONTEND].name, index.pods[FRONTEND].containers) == ("frontend-7d4b9c6f5-xk2lp", ())
    # just ended: its terminated container keeps its ID while its cgroup lingers
    assert dict(index.pods[REPORT].containers) == {cid("report"): "report"}
    assert index.lookup("", cid("cart-0/envoy")) == (cart, "envoy")  # by container ID alone
    assert index.lookup(CART, "") == (cart, "")  # a pod-level process
    assert index.lookup(CART, "f" * 64) == (cart, "")
    assert index.lookup("0" * 32, "") == (None, "")


def test_apiserver_podlist_mirror_pod_is_keyed_by_its_manifest_hash():
    index = parse_pod_list(NODE_B, LABELS)
    assert sorted(index.pods) == sorted(["3b9d7f1e-5c2a-4e8b-9d6f-1a3c5e7b9d2f", ETCD_HASH])
    etcd = index.pods[ETCD_HASH]
    assert (etcd.namespace, etcd.name, dict(etcd.containers)) == ("kube-system", "etcd-node-b", {cid("etcd"): "etcd"})
    prom = index.pods["3b9d7f1e-5c2a-4e8b-9d6f-1a3c5e7b9d2f"]
    assert sorted(dict(prom.containers).values()) == ["config-reloader", "init-config-reloader", "prometheus"]


@pytest.mark.parametrize("body, message", [
    (b"<html>502</html>", "not JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"\xc3\x28", "not JSON: 'utf-8' codec can't decode byte 0xc3 in position 0: invalid continuation byte"),
    (b'{"kind":"Status","code":403}', "not a PodList (kind 'Status')"),
    (b"[1, 2]", "not a PodList (kind 'list')"),
    (b'{"kind":"PodList","items":{}}', "not a PodList (kind 'PodList')"),
    (b"[" * 100000, "not JSON: maximum recursion depth exceeded while decoding a JSON array from a unicode string"),
])
def test_garbage_is_refused_with_the_reason(body, message):
    with pytest.raises(PodListError) as e:
        parse_pod_list(body)
    assert str(e.value) == message


def test_wrong_field_types_leave_out_the_pod_not_the_list():
    body = json.dumps({"kind": "PodList", "items": [
        None, 7, {"metadata": "x"}, {"metadata": {"uid": 5, "name": "a"}},
        {"metadata": {"uid": "U1", "name": "b", "namespace": "n", "labels": {"team": 3}},
         "status": {"containerStatuses": [None, {"name": "c"}, {"name": "d", "containerID": "containerd://ABC"}]}},
    ]}).encode()
    index = parse_pod_list(body, ["team"])
    assert list(index.pods) == ["u1"]
    assert index.pods["u1"].containers == (("abc", "d"),) and index.pods["u1"].labels == ()


def test_a_pod_no_longer_listed_keeps_its_names_for_one_refresh():
    first = parse_pod_list(NODE_A)
    without_report = json.loads(NODE_A)
    without_report["items"] = [p for p in without_report["items"] if p["metadata"]["uid"] != REPORT]
    second = parse_pod_list(json.dumps(without_report).encode()).carried_over(first)
    assert REPORT in second.pods and second.stale == {REPORT}
    third = parse_pod_list(json.dumps(without_report).encode()).carried_over(second)
    assert REPORT not in third.pods and cid("report") not in third.by_container


# -- the sources ------------------------------------------------------------------------------


def test_kubelet_over_tls_with_the_token(kubelet, token, certs):
    m = metadata(at(kubelet, token, certs))
    m.refresh()
    names = m.names()
    assert names.up and names.source == "kubelet" and names.last_success == 1700000000.0 and errors(m) == {}
    assert kubelet.requests == [("/pods", f"Bearer {TOKEN}")]
    assert names.labels((("pod_uid", CART), ("container_id", cid("cart-0/envoy")), ("qos_class", "burstable"))) == {
        "namespace": "shop", "pod": "cart-0", "container": "envoy",
        "label_app_kubernetes_io_name": "cart", "label_team": "payments"}
    assert names.labels((("pod_uid", ""), ("container_id", ""))) == {}
    assert names.label_names == ("namespace", "pod", "container", "label_app_kubernetes_io_name", "label_team")


def test_the_token_is_read_at_every_fetch(kubelet, token, certs):
    m = metadata(at(kubelet, token, certs))
    token.write_text("rotated\n")
    m.refresh()
    assert (m.names().up, errors(m)) == (False, {"unauthorized": 1})
    token.write_text(TOKEN)
    m.refresh()
    assert m.names().up and [a for _, a in kubelet.requests] == ["Bearer rotated", f"Bearer {TOKEN}"]


def test_forbidden_kubelet_falls_back_to_the_apiserver(kubelet, apiserver, token, certs):
    kubelet.mode = "forbidden"
    m = metadata(at(kubelet, token, certs), at(apiserver, token, certs, "apiserver"))
    m.refresh()
    names = m.names()
    assert names.up and names.source == "apiserver" and errors(m) == {"forbidden": 1}
    assert apiserver.requests == [(API_PATH, f"Bearer {TOKEN}")]
    assert names.labels((("pod_uid", ETCD_HASH), ("container_id", cid("etcd")))) == {
        "namespace": "kube-system", "pod": "etcd-node-b", "container": "etcd"}  # no listed pod label: "" on the series


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the test connects: refused


@pytest.mark.parametrize("mode, reason", [
    ("down", "unreachable"), ("forbidden", "forbidden"), ("garbage", "invalid"), ("slow", "timeout"),
    ("huge", "too_large"), ("announced", "too_large"), ("tls", "tls"), ("no_token", "credentials"),
])
def test_every_failure_keeps_the_last_names_and_says_why(mode, reason, kubelet, token, certs, caplog):
    caplog.set_level(logging.INFO, logger="exporter.discovery.kube")
    src = at(kubelet, token, certs)
    m = metadata(src, timeout=1.0, max_bytes=1 << 20)
    m.refresh()
    assert m.names().up
    good = m.names().index
    if mode == "down":
        src = Source("kubelet", Endpoint(f"https://127.0.0.1:{closed_port()}/pods", str(token), str(certs.ca)))
    elif mode == "tls":
        src = Source("kubelet", Endpoint(kubelet.url + "/pods", str(token), str(certs.dir / "otherca.crt")))
    elif mode == "no_token":
        os.unlink(token)
    else:
        kubelet.mode = mode
    m.sources = [src]
    for _ in range(3):
        m.refresh()
    names = m.names()
    assert (names.up, errors(m), names.index is good, names.last_success) == (False, {reason: 3}, True, 1700000000.0)
    assert names.labels((("pod_uid", CART), ("container_id", cid("cart-0/cart"))))["pod"] == "cart-0"
    lines = [r for r in caplog.records if r.name == "exporter.discovery.kube"]
    assert [r.levelname for r in lines] == ["INFO", "WARNING"]  # one line per change of state, not per refresh
    assert lines[1].kv["kubelet_err"].startswith(f"{reason}: ")
    assert dict(names.errors).keys() == FETCH_ERRORS.keys()  # every reason exported, 0 until it happens


def test_insecure_skip_verify_accepts_a_serving_cert_of_another_ca(kubelet, token, certs):
    m = metadata(Source("kubelet", Endpoint(kubelet.url + "/pods", str(token), None, insecure=True)))
    m.refresh()
    assert m.names().up


def test_memory_stays_bounded_by_max_response_size(kubelet, token, certs):
    """An endless answer is cut at max_response_size (1 MiB): the refresh holds at most that
    much body plus read buffers, however much the server sends."""
    kubelet.mode = "huge"
    m = metadata(at(kubelet, token, certs), max_bytes=1 << 20, timeout=30)
    tracemalloc.start()
    try:
        m.refresh()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert errors(m) == {"too_large": 1}
    assert peak < 3 << 20, peak  # the bytearray (<= 1 MiB + 64 KiB) and its final copy's headroom


def test_startup_with_the_source_down_then_names_when_it_comes_back(kubelet, token, certs):
    kubelet.mode = "forbidden"
    m = metadata(at(kubelet, token, certs))
    m.refresh()
    assert not m.names().up and m.names().labels((("pod_uid", CART),)) == {}
    kubelet.mode = "ok"
    m.refresh()
    assert m.names().up and m.names().labels((("pod_uid", CART),))["pod"] == "cart-0"


# -- configuration and environment --------------------------------------------------------------


def config(text: str):
    return parse_config(textwrap.dedent(text))


KUBE_SPLIT = """\
    targets:
      - name: pods
        cgroup: kubepods*
        group_by: [pod_uid, container_id]
    """


def test_sources_from_the_pod_environment():
    env = {"NODE_IP": "10.0.1.17", "NODE_NAME": "node-a", "KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    got = sources(KubeConfig(), env, "/sa")
    assert [(s.name, s.endpoint) for s in got] == [
        ("kubelet", Endpoint("https://10.0.1.17:10250/pods", "/sa/token", "/sa/ca.crt")),
        ("apiserver", Endpoint("https://[fd00::1]:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a", "/sa/token", "/sa/ca.crt")),
    ]
    insecure = sources(KubeConfig(metadata="kubelet", kubelet_insecure_skip_verify=True), {"NODE_IP": "fd00::17"}, "/sa")
    assert [s.endpoint for s in insecure] == [Endpoint("https://[fd00::17]:10250/pods", "/sa/token", None, True)]
    missing = sources(KubeConfig(), {}, "/sa")
    assert [(s.name, s.endpoint, s.problem) for s in missing] == [
        ("kubelet", None, "NODE_IP is not set (the DaemonSet sets it from status.hostIP)"),
        ("apiserver", None, "NODE_NAME (from spec.nodeName) or KUBERNETES_SERVICE_HOST is not set"),
    ]


def test_metadata_is_fetched_only_for_kube_split_targets_and_in_a_pod():
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert from_config(config(KUBE_SPLIT), in_pod) is not None
    assert from_config(config(KUBE_SPLIT), {}) is None  # auto, not in a pod
    assert from_config(config("kubernetes: {metadata: kubelet}\n" + textwrap.dedent(KUBE_SPLIT)), {}) is not None
    assert from_config(config("kubernetes: {metadata: 'off'}\n" + textwrap.dedent(KUBE_SPLIT)), in_pod) is None
    by_cgroup = "targets: [{name: c, cgroup: kubepods*, group_by: [cgroup, qos_class]}]\n"
    assert from_config(config(by_cgroup), in_pod) is None


# -- through discovery to the exposition ------------------------------------------------------


def test_every_series_of_a_kube_split_target_carries_the_names(tmp_path, kubelet, token, certs):
    """node-a's processes under the systemd driver's cgroup paths: discovery splits them by
    pod and container, and every series the exposition builds for them carries the names."""
    from exporter.discovery import Discoverer
    from exporter.metrics.targets import target_families

    from .fakeproc import add_cgroup, add_process

    proc, cg = tmp_path / "proc", tmp_path / "cg"
    add_cgroup(cg / "unified", "", [], v2_root=True)
    pod = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{CART.replace('-', '_')}.slice"
    layout = {
        60: f"{pod}/cri-containerd-{cid('cart-0/cart')}.scope",
        61: f"{pod}/cri-containerd-{cid('cart-0/envoy')}.scope",
        62: f"{pod}/cri-containerd-{cid('cart-0/debugger-x7k2p')}.scope",
        63: f"kubepods.slice/kubepods-pod{STATIC}.slice/cri-containerd-{cid('apiserver')}.scope",
        64: f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{FRONTEND.replace('-', '_')}.slice/cri-containerd-{'e' * 64}.scope",
        65: f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{'1' * 8}_{'2' * 4}_{'3' * 4}_{'4' * 4}_{'5' * 12}.slice/cri-containerd-{'d' * 64}.scope",
    }
    for pid, path in layout.items():
        add_process(proc, pid, comm=f"p{pid}", cgroup=f"0::/{path}\n")
        add_cgroup(cg / "unified", path, [pid])
    cfg = parse_config(textwrap.dedent(f"""\
        kubernetes:
          metadata: kubelet
          kubelet_url: {kubelet.url}
          kubelet_ca_file: {certs.ca}
          token_file: {token}
          pod_labels: [team]
        targets:
          - name: pods
            cgroup: kubepods.slice/**
            group_by: [pod_uid, container_id]
        """))
    kube = from_config(cfg, {})
    d = Discoverer(cfg, proc_root=str(proc), cgroup_root=str(cg), self_pid=1, kube_metadata=kube)
    assert d.label_names() == ("container", "container_id", "label_team", "namespace", "pod", "pod_uid")
    kube.close()  # its thread, started by discover(), then ends at once: the test refreshes
    specs = d.discover()
    kube.refresh()  # what that thread does every update_interval; here at a known moment
    pending = [(s.name, len(s.processes), s.labels) for s in specs]
    families = target_families(None, d.label_names(), pending, extra_labels=d.kube_names().labels)
    got = {}
    for fam in families:
        for sample in fam.samples:
            lab = sample.labels
            got.setdefault(lab["container_id"][:8], set()).add(
                (lab["namespace"], lab["pod"], lab["container"], lab["label_team"]))
    assert got == {
        cid("cart-0/cart")[:8]: {("shop", "cart-0", "cart", "payments")},
        cid("cart-0/envoy")[:8]: {("shop", "cart-0", "envoy", "payments")},
        cid("cart-0/debugger-x7k2p")[:8]: {("shop", "cart-0", "debugger-x7k2p", "payments")},
        cid("apiserver")[:8]: {("kube-system", "kube-apiserver-node-a", "kube-apiserver", "")},
        "e" * 8: {("web", "frontend-7d4b9c6f5-xk2lp", "", "")},  # started after the list: pod known, container not yet
        "d" * 8: {("", "", "", "")},  # a pod the list does not have (yet): UID labels only
    }
    assert {len(f.samples) for f in families if f.name == "damon_target_up"} == {6}


def test_cgroupfs_driver_names_from_the_apiserver(tmp_path, kubelet, apiserver, token, certs):
    """node-b: the cgroupfs driver's paths (CRI-O, v1 memory hierarchy), the kubelet refusing
    (403) and the API server's PodList naming the pods, the static etcd by its mirror's hash."""
    from exporter.discovery import Discoverer
    from exporter.metrics.targets import target_families

    from .fakeproc import add_cgroup, add_process

    kubelet.mode = "forbidden"
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    add_cgroup(cg / "unified", "", [])
    add_cgroup(cg / "memory", "", [])
    prom = "kubepods/burstable/pod3b9d7f1e-5c2a-4e8b-9d6f-1a3c5e7b9d2f"
    layout = {
        70: f"{prom}/crio-{cid('prom/prometheus')}",
        71: f"{prom}/crio-{cid('prom/reloader')}",
        72: f"kubepods/burstable/pod{ETCD_HASH}/crio-{cid('etcd')}",
    }
    for pid, path in layout.items():
        add_process(proc, pid, comm=f"p{pid}", cgroup=f"4:memory:/{path}\n0::/\n")
        add_cgroup(cg / "memory", path, [pid])
    cfg = parse_config(textwrap.dedent("""\
        kubernetes: {pod_labels: [app.kubernetes.io/name]}
        targets:
          - name: pods
            cgroup: kubepods/**
            group_by: [pod_uid, container_id]
        """))
    kube = KubeMetadata(cfg.kubernetes, [at(kubelet, token, certs), at(apiserver, token, certs, "apiserver")], 10.0)
    d = Discoverer(cfg, proc_root=str(proc), cgroup_root=str(cg), self_pid=1, kube_metadata=kube)
    kube.close()
    specs = d.discover()
    kube.refresh()
    assert (kube.names().up, kube.names().source, errors(kube)) == (True, "apiserver", {"forbidden": 1})
    pending = [(s.name, len(s.processes), s.labels) for s in specs]
    families = target_families(None, d.label_names(), pending, extra_labels=d.kube_names().labels)
    got = {tuple(s.labels[k] for k in ("namespace", "pod", "container", "label_app_kubernetes_io_name"))
           for f in families for s in f.samples}
    assert got == {("monitoring", "prometheus-k8s-0", "prometheus", "prometheus"),
                   ("monitoring", "prometheus-k8s-0", "config-reloader", "prometheus"),
                   ("kube-system", "etcd-node-b", "etcd", "")}
