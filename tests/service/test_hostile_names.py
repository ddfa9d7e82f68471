"""Names the kernel hands over are bytes: one that is not UTF-8 is escaped (``\\xNN``) in
that target's labels, and every other target and page is served as usual.

A program run from a path with the byte 0xff (legal in Linux file names) under a target
named ``{{.ExeFull}}``, and a cgroup whose name has that byte under ``group_by: [cgroup]``,
used to turn ``/metrics`` and ``/`` into 500 for every target."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.exporter import comm_target, fast_config, unique_comm


def _sleeper_from(dir_bytes: bytes, comm: str) -> subprocess.Popen:
    os.makedirs(dir_bytes, exist_ok=True)
    exe = os.path.join(dir_bytes, comm.encode())
    shutil.copy(b"/bin/sleep", exe)
    return subprocess.Popen([exe, b"300"])


def test_exe_path_that_is_not_utf8(exporter, tmp_path):
    comm = unique_comm("ff")
    odd = os.fsencode(tmp_path) + b"/bin-\xff\xfe"
    p = _sleeper_from(odd, comm)
    try:
        cfg = fast_config(
            f"  - name: '{{{{.ExeFull}}}}'\n    match:\n      comm: [{comm}]\n" + comm_target("plain", "no-such-comm"))
        e = exporter(cfg)
        e.wait_ready()
        want = (os.fsencode(tmp_path) + b"/bin-").decode() + "\\xff\\xfe/" + comm
        s = e.wait_for(lambda s: s.get("damon_target_processes", target=want) == 1, what="the escaped exe label")
        assert s.get("damon_target_up", target="plain") == 0  # the other target is still there
        landing = e.request("/")
        assert landing.status == 200 and want.replace("\\", "\\") in landing.text
        assert e.request("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}).status == 200
    finally:
        p.kill()
        p.wait()


def test_cgroup_name_that_is_not_utf8(exporter, cgroup2):
    odd = os.fsencode(cgroup2) + b"/grp-\xff"
    os.mkdir(odd)
    p = subprocess.Popen(["sleep", "300"])
    try:
        with open(odd + b"/cgroup.procs", "w") as f:
            f.write(str(p.pid))
        rel = "/" + cgroup2.name + "/grp-\\xff"
        cfg = fast_config(f"  - name: cg\n    cgroup: {cgroup2.name}\n    group_by: [cgroup]\n")
        e = exporter(cfg)
        e.wait_ready()
        s = e.wait_for(lambda s: s.get("damon_target_processes", target="cg", cgroup=rel) == 1, what="the escaped cgroup label")
        assert s.get("damon_target_processes", target="cg", cgroup=rel) == 1
        assert e.request("/").status == 200
    finally:
        p.kill()
        p.wait()  # reaped: the cgroup is empty and can go
        os.rmdir(odd)


def test_a_long_capture_does_not_blow_up_the_scrape(exporter, tmp_path):
    """A 120 KB argument captured into the name: the series carry 128 characters, and the
    command line was read only up to its bound (64 KiB)."""
    from exporter.discovery.labels import MAX_LABEL_VALUE

    comm = unique_comm("lc")
    exe = tmp_path / comm
    shutil.copy("/bin/sleep", exe)
    p = subprocess.Popen([str(exe), "0" * 120_000 + "300"])  # GNU sleep reads it as 300 s
    try:
        e = exporter(fast_config(
            f"  - name: 'lc-{{{{.Matches.arg}}}}'\n    match:\n      comm: [{comm}]\n      cmdline: [' (?P<arg>0+)']\n"))
        e.wait_ready()
        s = e.wait_for(lambda s: any(x.name == "damon_target_processes" and x.labels["target"].startswith("lc-0")
                                     for x in s.samples), what="the long-named target")
        names = {x.labels["target"] for x in s.samples if x.labels.get("target", "").startswith("lc-")}
        assert len(names) == 1
        (name,) = names
        assert len(name) == MAX_LABEL_VALUE and name[-13] == "~"
        assert len(e.request("/metrics").body) < 64 << 10
    finally:
        p.kill()
        p.wait()
    assert os.path.exists(exe)


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_a_target_the_exporter_may_not_read_says_so(exporter, tmp_path):
    """Root without CAP_SYS_PTRACE (as a container without it runs) against another user's
    process matched by comm: not a target without processes but one whose process is not
    monitored for lack of permission, on /metrics (a gauge by kind, from the first
    aggregation) and on the landing page."""
    import tempfile

    comm = unique_comm("np")
    bindir = Path(tempfile.mkdtemp(prefix="dxnp"))  # pytest's tmp_path is root's only (0700)
    bindir.chmod(0o755)
    exe = bindir / comm
    shutil.copy("/bin/sleep", exe)
    exe.chmod(0o755)
    p = subprocess.Popen([str(exe), "300"], preexec_fn=_as_nobody)
    try:
        e = exporter("backend: clear_refs\n" + fast_config(comm_target("other-user", comm)),
                     drop_caps=["sys_ptrace", "dac_override", "dac_read_search"])
        s = e.wait_for(lambda s: s.get("damon_target_unmonitored_processes", target="other-user", kind="permission") == 1,
                       what="the unreadable process counted")
        assert s.get("damon_target_up", target="other-user") == 0
        assert s.get("damon_target_processes", target="other-user") == 0
        page = e.request("/").text
        assert "down: not monitored: 1 permission: pid" in page and "ptrace" in page
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(bindir, ignore_errors=True)
