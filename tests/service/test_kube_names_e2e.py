"""The real exporter names real processes after their pods, from a stand-in kubelet over TLS.

Two workload children run in cgroups laid out as the kubelet's systemd driver lays them out
(below the test's own cgroup2 directory); a stand-in kubelet serves node-a's recorded
``/pods`` with the ServiceAccount-style token. Every per-target series then carries
``namespace``, ``pod`` and ``container``; when the kubelet starts answering 403 the series keep
them (the last good list), ``damon_kube_metadata_up`` drops to 0 with one log line, and it
comes back when the kubelet does.
"""

from __future__ import annotations

import hashlib

import pytest

from exporter.metrics.catalog import METRICS
from tests.discovery.kube_server import DATA, TOKEN, KubeServer
from tests.service.certs import make_certs
from tests.support.exporter import Scrape, fast_config, unique_comm

CART = "0d5e9c3a-6b2f-4f4e-9a5b-3c1e2d7f8a90"


def cid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.mark.slow
def test_series_carry_pod_names_and_survive_a_forbidden_kubelet(exporter, children, cgroup2, tmp_path):
    certs = make_certs(tmp_path / "certs")
    kubelet = KubeServer(certs, (DATA / "kubelet-pods-node-a.json").read_bytes())
    token = tmp_path / "token"
    token.write_text(TOKEN)
    pod = cgroup2 / "kubepods.slice" / "kubepods-burstable.slice" / f"kubepods-burstable-pod{CART.replace('-', '_')}.slice"
    made = []
    try:
        for name in ("cart", "envoy"):
            child = children(unique_comm(name[:3]), hot_mib=4, cold_mib=8)
            scope = pod / f"cri-containerd-{cid('cart-0/' + name)}.scope"
            scope.mkdir(parents=True)
            made.append(scope)
            (scope / "cgroup.procs").write_text(str(child.pid))
        config = fast_config(f"  - name: pods\n    cgroup: /{cgroup2.name}/kubepods.slice/**\n"
                             "    group_by: [pod_uid, container_id]\n")
        config += (f"kubernetes:\n  metadata: kubelet\n  kubelet_url: {kubelet.url}\n  kubelet_ca_file: {certs.ca}\n"
                   f"  token_file: {token}\n  pod_labels: [team, app.kubernetes.io/name]\n")
        e = exporter(config)
        e.wait_ready()

        def named(s: Scrape) -> bool:
            return {x.labels.get("container") for x in s.all("damon_resident_bytes")} == {"cart", "envoy"}

        s = e.wait_for(named, what="both containers named")
        per_target = [x for x in s.samples if x.labels.get("target") == "pods"]
        assert {x.name for x in per_target} >= {"damon_target_up", "damon_resident_bytes", "damon_cold_bytes"}
        for x in per_target:
            assert (x.labels["namespace"], x.labels["pod"], x.labels["pod_uid"]) == ("shop", "cart-0", CART), x
            assert x.labels["container"] == {cid("cart-0/cart"): "cart", cid("cart-0/envoy"): "envoy"}[x.labels["container_id"]], x
            assert (x.labels["label_team"], x.labels["label_app_kubernetes_io_name"]) == ("payments", "cart"), x
        assert s.get("damon_kube_metadata_up") == 1
        assert METRICS["damon_kube_metadata_up"].help == s.families["damon_kube_metadata_up"].documentation

        kubelet.mode = "forbidden"
        s = e.wait_for(lambda s: s.get("damon_kube_metadata_up") == 0, what="the up gauge at 0")
        assert s.get("damon_kube_metadata_errors_total", reason="forbidden") >= 1
        assert named(s)  # the names last known stay
        kubelet.mode = "ok"
        e.wait_for(lambda s: s.get("damon_kube_metadata_up") == 1, what="the up gauge back at 1")
        logs = e.logs()
        assert logs.count("pod metadata unavailable") == 1, logs
        assert logs.count("pod metadata available") == 2, logs
        assert "kubelet_err=\"forbidden: HTTP 403 Forbidden\"" in logs, logs
    finally:
        kubelet.close()
        for scope in made:
            for pid in (scope / "cgroup.procs").read_text().split():
                (cgroup2 / "cgroup.procs").write_text(pid)
            scope.rmdir()
        for d in (pod, pod.parent, pod.parent.parent):
            if d.exists():
                d.rmdir()
