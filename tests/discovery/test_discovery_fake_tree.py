"""Discovery against fake /proc and cgroup trees: matching rules, keying, layouts, groups."""

from __future__ import annotations

from dataclasses import replace

import os
import textwrap
from pathlib import Path


from exporter.config import parse_config
from exporter.model.engine import TargetSpec
from exporter.discovery import Discoverer, ProcCgroups, parse_proc_cgroup
from exporter.discovery.cgroups import expand, hierarchies
from exporter.procfs.parsers import parse_stat
from exporter.model.process import ProcessRef

from .fakeproc import add_cgroup, add_process

UID = "0d5e9c3a-6b2f-4f4e-9a5b-3c1e2d7f8a90"
CID1 = "a" * 64
CID2 = "b" * 64
SELF = 999_999


def discoverer(tmp_path: Path, yaml_text: str, **kw) -> Discoverer:
    config = parse_config(textwrap.dedent(yaml_text))
    kw.setdefault("self_pid", SELF)
    return Discoverer(config, proc_root=str(tmp_path / "proc"), cgroup_root=str(tmp_path / "cg"), **kw)


def pids(spec: TargetSpec) -> list[int]:
    return [r.pid for r in spec.processes]


def test_parse_stat_with_hostile_comm():
    st = parse_stat(b"42 (a) b (c) R 7 0 0 0 -1 4194560 " + b" ".join([b"0"] * 12) + b" 5555 0 0\n")
    assert (st.comm, st.state, st.ppid, st.flags, st.start_time) == ("a) b (c", "R", 7, 4194560, 5555)


def test_parse_proc_cgroup_layouts():
    hybrid = "12:memory:/kubepods/x\n4:cpu,cpuacct:/\n1:name=systemd:/user.slice\n0::/user.slice/s.scope\n"
    assert parse_proc_cgroup(hybrid) == ProcCgroups(v2="/user.slice/s.scope", memory="/kubepods/x")
    assert parse_proc_cgroup(hybrid).effective == "/kubepods/x"
    assert parse_proc_cgroup("0::/system.slice/a.service\n").effective == "/system.slice/a.service"
    assert parse_proc_cgroup("3:cpu,memory:/m\n") == ProcCgroups(v2=None, memory="/m")
    assert parse_proc_cgroup("") == ProcCgroups()


def test_matchers_and_skipped_processes(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 10, comm="nginx", exe="/usr/sbin/nginx", cmdline=["nginx", "--port=80"])
    add_process(proc, 11, comm="nginx", exe="/usr/sbin/nginx", cmdline=["nginx", "--port=81"])
    add_process(proc, 12, comm="nginx", exe="/opt/nginx (deleted)", cmdline=["nginx", "--port=80"])
    add_process(proc, 13, comm="kworker/0:1", flags=0x00208040)  # PF_KTHREAD
    add_process(proc, 14, comm="nginx", exe="/usr/sbin/nginx", cmdline=["nginx", "--port=80"], state="Z")
    add_process(proc, 15, comm="averyveryverylo", exe="/usr/bin/long", cmdline=["long"])  # kernel-truncated
    (proc / "16").mkdir()  # vanished between listdir and reading its stat
    add_process(proc, 17, comm="nginx", exe=None, cmdline=["nginx", "--port=80"])  # exe unreadable
    d = discoverer(
        tmp_path,
        """\
        targets:
          - name: web80
            match: {comm: [nginx], exe: [/usr/sbin/nginx, /opt/nginx], cmdline: ['--port=80\\b', '^nginx']}
          - name: anynginx
            match: {comm: [nginx]}
          - name: long
            match: {comm: [averyveryverylongname]}
          - name: nothing
            match: {exe: [/nonexistent]}
        """,
    )
    specs = d.discover()
    assert [(s.name, pids(s)) for s in specs] == [
        ("web80", [10, 12]),  # 12: ' (deleted)' stripped; 14 zombie, 17 exe unknown
        ("anynginx", [11, 17]),  # first target wins: 10 and 12 are not repeated here
        ("long", [15]),
        ("nothing", []),  # configured targets are always listed
    ]
    assert all(s.labels == () for s in specs) and d.label_names() == ()


def test_start_time_keys_processes_and_pid_reuse(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 20, comm="app", start=500)
    d = discoverer(tmp_path, "targets: [{name: a, match: {comm: [app]}}]\n")
    assert [(r.pid, r.start_time) for r in d.discover()[0].processes] == [(20, 500)]
    # the process exits and an unrelated one gets the same pid
    for f in (proc / "20").iterdir():
        f.unlink()
    (proc / "20").rmdir()
    assert d.discover()[0].processes == ()
    add_process(proc, 20, comm="app", start=900)
    assert [(r.pid, r.start_time) for r in d.discover()[0].processes] == [(20, 900)]


def test_self_is_never_monitored(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 30, comm="damon-exporter")
    add_process(proc, 31, comm="damon-exporter")
    yaml_text = "targets: [{name: a, match: {comm: [damon-exporter]}}]\n"
    assert pids(discoverer(tmp_path, yaml_text, self_pid=30).discover()[0]) == [31]
    assert pids(discoverer(tmp_path, yaml_text).discover()[0]) == [30, 31]


def test_include_children_and_first_target_wins(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 40, comm="supervisor")
    add_process(proc, 41, comm="worker", ppid=40)
    add_process(proc, 42, comm="helper", ppid=41)
    add_process(proc, 43, comm="db", ppid=40)  # claimed by the earlier 'db' target
    add_process(proc, 44, comm="dbchild", ppid=43)  # below a claimed process: stays with nobody
    add_process(proc, 45, comm="other", ppid=1)
    d = discoverer(
        tmp_path,
        """\
        targets:
          - name: db
            match: {comm: [db]}
          - name: sup
            match: {comm: [supervisor]}
            include_children: true
          - name: sup-nochildren
            match: {comm: [worker]}
        """,
    )
    assert [(s.name, pids(s)) for s in d.discover()] == [("db", [43]), ("sup", [40, 41, 42]), ("sup-nochildren", [])]


def _k8s_tree(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    pod = f"/kubepods/burstable/pod{UID}"
    add_process(proc, 50, comm="pause", cgroup=f"4:memory:{pod}/{CID1}\n0::/\n")
    add_process(proc, 51, comm="app", cgroup=f"4:memory:{pod}/{CID2}\n0::/\n")
    add_process(proc, 52, comm="app", cgroup=f"4:memory:{pod}/{CID2}\n0::/\n")
    add_process(proc, 53, comm="sshd", cgroup="4:memory:/system.slice/ssh.service\n0::/system.slice/ssh.service\n")
    # hybrid layout: controller-less v2 tree at unified/, v1 memory hierarchy at memory/
    cg = tmp_path / "cg"
    add_cgroup(cg / "unified", "", [])
    add_cgroup(cg / "unified", "system.slice/ssh.service", [53])
    add_cgroup(cg / "memory", "", [])
    add_cgroup(cg / "memory", f"kubepods/burstable/pod{UID}/{CID1}", [50])
    add_cgroup(cg / "memory", f"kubepods/burstable/pod{UID}/{CID2}", [51, 52])
    add_cgroup(cg / "memory", "system.slice/ssh.service", [53])


def test_hybrid_layout_cgroup_targets_group_by_kubernetes(tmp_path):
    _k8s_tree(tmp_path)
    assert [h.kind for h in hierarchies(str(tmp_path / "cg"))] == ["v2", "v1-memory"]
    d = discoverer(
        tmp_path,
        """\
        targets:
          - name: pods
            cgroup: kubepods/**
            group_by: [pod_uid, container_id, qos_class]
            labels: {cluster: c1}
          - name: ssh
            cgroup: system.slice/*.service
        """,
    )
    assert d.label_names() == ("cluster", "container_id", "pod_uid", "qos_class")
    # the refs' images (what exec changes) are the subject of test_exec_race.py
    specs = [replace(s, processes=tuple(ProcessRef(r.pid, r.start_time) for r in s.processes)) for s in d.discover()]
    assert specs == [
        TargetSpec(
            "pods",
            (ProcessRef(50, 1000),),
            (("cluster", "c1"), ("container_id", CID1), ("pod_uid", UID), ("qos_class", "burstable")),
        ),
        TargetSpec(
            "pods",
            (ProcessRef(51, 1000), ProcessRef(52, 1000)),
            (("cluster", "c1"), ("container_id", CID2), ("pod_uid", UID), ("qos_class", "burstable")),
        ),
        TargetSpec("ssh", (ProcessRef(53, 1000),), (("cluster", ""), ("container_id", ""), ("pod_uid", ""), ("qos_class", ""))),
    ]


def test_match_target_grouped_by_cgroup_uses_proc_cgroup(tmp_path):
    _k8s_tree(tmp_path)
    d = discoverer(
        tmp_path,
        """\
        targets:
          - name: apps
            match: {comm: [app, sshd]}
            group_by: [cgroup, qos_class]
        """,
    )
    got = [(s.labels, pids(s)) for s in d.discover()]
    assert got == [
        ((("cgroup", f"/kubepods/burstable/pod{UID}/{CID2}"), ("qos_class", "burstable")), [51, 52]),
        ((("cgroup", "/system.slice/ssh.service"), ("qos_class", "")), [53]),
    ]


def test_unified_layout_and_globs(tmp_path):
    proc = tmp_path / "proc"
    for pid in (60, 61, 62, 63):
        add_process(proc, pid, comm=f"p{pid}")
    cg = tmp_path / "cg"
    add_cgroup(cg, "", [1], v2_root=True)
    add_cgroup(cg, "batch.slice", [60])
    add_cgroup(cg, "batch.slice/job-1.scope", [61])
    add_cgroup(cg, "batch.slice/deep/job-2.scope", [62])
    add_cgroup(cg, "web.slice", [63])
    assert [h.kind for h in hierarchies(str(cg))] == ["v2"]
    assert expand(str(cg), "batch.slice/**") == ["batch.slice", "batch.slice/deep", "batch.slice/deep/job-2.scope", "batch.slice/job-1.scope"]
    assert expand(str(cg), "batch.slice/*.scope") == ["batch.slice/job-1.scope"]
    assert expand(str(cg), "**/job-?.scope") == ["batch.slice/deep/job-2.scope", "batch.slice/job-1.scope"]
    assert expand(str(cg), "nope/**") == []
    d = discoverer(
        tmp_path,
        """\
        targets:
          - {name: jobs, cgroup: '**/job-*.scope', group_by: [cgroup]}
          - {name: batch, cgroup: batch.slice}
          - {name: rest, cgroup: /}
        """,
    )
    assert [(s.name, s.labels, pids(s)) for s in d.discover()] == [
        ("jobs", (("cgroup", "/batch.slice/deep/job-2.scope"),), [62]),
        ("jobs", (("cgroup", "/batch.slice/job-1.scope"),), [61]),
        ("batch", (("cgroup", ""),), [60]),  # descendants included, but 61/62 were claimed first
        ("rest", (("cgroup", ""),), [63]),  # pid 1 is not in the fake /proc
    ]


def test_v1_only_layout(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 70, comm="a", cgroup="3:memory:/grp\n")
    cg = tmp_path / "cg"
    add_cgroup(cg / "memory", "", [])
    add_cgroup(cg / "memory", "grp", [70])
    (cg / "cpu").mkdir()
    assert [h.kind for h in hierarchies(str(cg))] == ["v1-memory"]
    d = discoverer(tmp_path, "targets: [{name: g, cgroup: grp, group_by: [cgroup]}]\n")
    assert [(s.labels, pids(s)) for s in d.discover()] == [((("cgroup", "/grp"),), [70])]


def test_group_cap_keeps_existing_groups_and_warns(tmp_path):
    proc = tmp_path / "proc"
    for pid in (80, 81, 82):
        add_process(proc, pid, comm="w")
    d = discoverer(tmp_path, "targets: [{name: w, match: {comm: [w]}, group_by: [pid], max_groups: 2}]\n")
    first = d.discover()
    assert [s.labels for s in first] == [(("pid", "80"),), (("pid", "81"),)]
    assert d.warnings == ["target 'w': 3 groups by (pid) exceed max_groups 2; 1 not monitored"]
    assert d.dropped_groups == {"w": 1}
    # a new, lower-numbered group does not push out groups already monitored
    add_process(proc, 9, comm="w")
    assert [s.labels for s in d.discover()] == [(("pid", "80"),), (("pid", "81"),)]
    assert d.warnings == ["target 'w': 4 groups by (pid) exceed max_groups 2; 2 not monitored"]
    # when one goes away, the freed slot goes to the first remaining group in order
    for f in (proc / "80").iterdir():
        f.unlink()
    (proc / "80").rmdir()
    assert [s.labels for s in d.discover()] == [(("pid", "9"),), (("pid", "81"),)]
    for pid in (9, 82):
        for f in (proc / str(pid)).iterdir():
            f.unlink()
        (proc / str(pid)).rmdir()
    assert [s.labels for s in d.discover()] == [(("pid", "81"),)]
    assert d.warnings == [] and d.dropped_groups == {}


def test_stat_rss_is_field_24_in_pages(tmp_path):
    add_process(tmp_path / "proc", 5, comm="a", rss_pages=3)
    from exporter.model.attrs import PAGE_SIZE
    from exporter.procfs.scan import scan

    assert scan(str(tmp_path / "proc"))[5].rss_bytes == 3 * PAGE_SIZE
    assert parse_stat(b"42 (a) R 7 0 0 0 -1 0 " + b" ".join([b"0"] * 12) + b" 5555\n").rss_pages == 0  # cut short


def test_keep_groups_largest_keeps_the_most_resident_programs(tmp_path):
    """The embedded default's choice: one group per comm, the ones with the most resident
    memory (summed over a program's processes), chosen again at every discovery, with a
    margin for groups already monitored; leaving the rest out is no warning."""
    proc = tmp_path / "proc"
    mib = (1 << 20) // os.sysconf("SC_PAGE_SIZE")  # pages per MiB

    def program(pid: int, comm: str, rss_mib: float) -> None:
        add_process(proc, pid, comm=comm, cmdline=[comm], rss_pages=int(rss_mib * mib))

    program(10, "small", 5)
    program(11, "big", 300)
    program(12, "forked", 100)
    program(13, "forked", 100)  # 200 MiB in two processes: more than 'medium' alone
    program(14, "medium", 150)
    program(15, "tiny", 1)
    d = discoverer(tmp_path, "targets: [{name: '{{.Comm}}', match: {cmdline: ['']}, max_groups: 2, keep_groups: largest}]\n")
    assert sorted(s.name for s in d.discover()) == ["big", "forked"]
    assert d.warnings == [] and d.dropped_groups == {"{{.Comm}}": 3}
    # a newcomer a little larger than a monitored group does not push it out ...
    program(16, "newcomer", 240)  # < 1.25 x 200
    assert sorted(s.name for s in d.discover()) == ["big", "forked"]
    # ... one clearly larger does, at the next discovery
    program(16, "newcomer", 260)
    assert sorted(s.name for s in d.discover()) == ["big", "newcomer"]
    # a monitored program that shrinks gives its place up
    program(11, "big", 10)
    assert sorted(s.name for s in d.discover()) == ["forked", "newcomer"]
    # the same choice for group_by without a template; ties go to label order
    d = discoverer(tmp_path, "targets: [{name: top, match: {cmdline: ['']}, group_by: [comm], max_groups: 3, keep_groups: largest}]\n")
    program(15, "tiny", 200)
    assert [s.labels for s in d.discover()] == [(("comm", "forked"),), (("comm", "newcomer"),), (("comm", "tiny"),)]


def test_grouped_target_without_processes_yields_no_spec(tmp_path):
    (tmp_path / "proc").mkdir()
    d = discoverer(
        tmp_path,
        "targets:\n  - {name: g, match: {comm: [x]}, group_by: [comm]}\n  - {name: plain, match: {comm: [x]}}\n",
    )
    assert d.discover() == [TargetSpec("plain", (), (("comm", ""),))]


def test_missing_cgroup_root_means_no_members(tmp_path):
    add_process(tmp_path / "proc", 90, comm="a")
    d = discoverer(tmp_path, "targets: [{name: c, cgroup: '**'}]\n")
    assert d.discover() == [TargetSpec("c", ())]
