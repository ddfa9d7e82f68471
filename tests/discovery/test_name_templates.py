"""Target name templates (process-exporter's {{.Comm}} etc.) and remove_empty_groups: parsed
with FILE:LINE errors, rendered per process, one target per distinct name; on fake /proc trees
and on three real programs."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config
from exporter.discovery import Discoverer
from exporter.config.templates import NameContext, TemplateError, parse_template

from .fakeproc import add_cgroup, add_process

SELF = 999_999
UID = "0d5e9c3a-6b2f-4f4e-9a5b-3c1e2d7f8a90"
CID = "c" * 64


def discoverer(tmp_path: Path, yaml_text: str) -> Discoverer:
    config = parse_config(textwrap.dedent(yaml_text), "c.yaml")
    return Discoverer(config, proc_root=str(tmp_path / "proc"), cgroup_root=str(tmp_path / "cg"), self_pid=SELF)


def names(specs) -> dict[str, list[int]]:
    return {s.name: [r.pid for r in s.processes] for s in specs}


def _status(proc: Path, pid: int, uid: int) -> None:
    (proc / str(pid) / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")


# -- the template language ----------------------------------------------------------------------


def test_render_every_field():
    t = parse_template("{{.Comm}}|{{ .ExeBase }}|{{.ExeFull}}|{{.Username}}|{{.Matches.app}}|{{.PodUID}}|{{.ContainerID}}")
    ctx = NameContext(comm="java", exe="/opt/jdk/bin/java", username="svc", matches={"app": "billing"}, pod_uid=UID, container_id=CID)
    assert t.render(ctx) == f"java|java|/opt/jdk/bin/java|svc|billing|{UID}|{CID}"
    assert t.needs == {"comm", "exe", "uid", "cmdline", "cgroup"}
    assert parse_template("app-{{.Comm}}").render(NameContext(comm="x")) == "app-x"
    assert parse_template("{{-.Comm-}}").render(NameContext(comm="x")) == "x"


@pytest.mark.parametrize(
    "source,message",
    [
        ("{{.Pid}}", "unknown field '{{.Pid}}'"),
        ("{{.Comm.x}}", "unknown field '{{.Comm.x}}'"),
        ("{{ .Comm | printf }}", "unsupported template action"),
        ("{{if .Comm}}x{{end}}", "unsupported template action"),
        ("{{.Comm", "unbalanced"),
        ("{{.Matches}}", "needs a group name"),
    ],
)
def test_bad_templates(source, message):
    with pytest.raises(TemplateError, match=message.replace("|", r"\|").replace(".", r"\.").replace("(", r"\(")):
        parse_template(source)


def test_config_errors_name_file_line_and_key():
    text = textwrap.dedent("""\
        targets:
          - name: "{{.Comm}}"
            match: {comm: [a]}
          - name: "{{.Nope}}"
            match: {comm: [b]}
          - name: "{{.Matches.app}}"
            match: {cmdline: ["--svc=(?P<svc>\\\\w+)"]}
          - name: "{{.Comm}}-x"
            match: {comm: [c]}
            max_groups: 5
        remove_empty_groups: maybe
        """)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml")
    assert e.value.lines == [
        "c.yaml:4: targets[1].name: bad name template: unknown field '{{.Nope}}' (expected one of: {{.Comm}}, {{.ExeBase}}, {{.ExeFull}}, {{.Username}}, {{.PodUID}}, {{.ContainerID}}, {{.Matches.NAME}})",
        "c.yaml:6: targets[2].name: {{.Matches.app}}: no cmdline regex of this target has a named group (?P<app>...)",
        "c.yaml:11: remove_empty_groups: expected true or false, got str",
    ]


# -- discovery on fake trees --------------------------------------------------------------------


def test_comm_template_gives_one_target_per_program(tmp_path):
    proc = tmp_path / "proc"
    for pid, comm in ((10, "nginx"), (11, "nginx"), (12, "redis-server"), (13, "postgres"), (14, "bash")):
        add_process(proc, pid, comm=comm)
    d = discoverer(tmp_path, """\
        targets:
          - name: "{{.Comm}}"
            match: {comm: [nginx, redis-server, postgres]}
        """)
    specs = d.discover()
    assert names(specs) == {"nginx": [10, 11], "postgres": [13], "redis-server": [12]}
    assert all(s.labels == () for s in specs)


def test_exe_username_matches_and_kube_fields(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 20, comm="java", exe="/opt/a/bin/java", cmdline=["java", "-Dapp=billing", "-jar", "x.jar"])
    add_process(proc, 21, comm="java", exe="/opt/b/bin/java", cmdline=["java", "-Dapp=search"])
    # exe link refused: argv[0] stands in
    add_process(proc, 22, comm="java", cmdline=["/usr/bin/java", "-Dapp=search"])
    root_name = pwd.getpwuid(0).pw_name
    for pid in (20, 21, 22):
        _status(proc, pid, 0)
    _status(proc, 21, 4242424)  # no such user: the number
    d = discoverer(tmp_path, """\
        targets:
          - name: "{{.Matches.app}}:{{.ExeFull}}:{{.ExeBase}}:{{.Username}}"
            match: {cmdline: ["-Dapp=(?P<app>\\\\w+)"]}
        """)
    assert names(d.discover()) == {
        f"billing:/opt/a/bin/java:java:{root_name}": [20],
        "search:/opt/b/bin/java:java:4242424": [21],
        f"search:/usr/bin/java:java:{root_name}": [22],
    }
    cg = f"kubepods/burstable/pod{UID}/{CID}"
    add_process(proc, 30, comm="app", cgroup=f"0::/{cg}\n")
    add_process(proc, 31, comm="app", cgroup="0::/system.slice/app.service\n")
    add_cgroup(tmp_path / "cg", "", v2_root=True)
    d = discoverer(tmp_path, """\
        targets:
          - name: "pod-{{.PodUID}}-{{.ContainerID}}"
            match: {comm: [app]}
        """)
    assert names(d.discover()) == {f"pod-{UID}-{CID}": [30], "pod--": [31]}


def test_template_with_group_by_and_max_groups(tmp_path):
    proc = tmp_path / "proc"
    for pid, comm in ((40, "a"), (41, "a"), (42, "b"), (43, "c")):
        add_process(proc, pid, comm=comm)
    d = discoverer(tmp_path, """\
        targets:
          - name: "{{.Comm}}"
            match: {comm: [a, b, c]}
            group_by: [pid]
            max_groups: 3
        """)
    specs = d.discover()
    assert [(s.name, dict(s.labels)["pid"]) for s in specs] == [("a", "40"), ("a", "41"), ("b", "42")]
    assert d.warnings == ["target '{{.Comm}}': 4 groups by (name, pid) exceed max_groups 3; 1 not monitored"]


def test_rendered_name_equal_to_another_target_merges(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 50, comm="nginx")
    add_process(proc, 51, comm="nginx")
    add_process(proc, 52, comm="redis")
    d = discoverer(tmp_path, """\
        targets:
          - name: nginx
            match: {cmdline: ["^never$"]}
          - name: "{{.Comm}}"
            match: {comm: [nginx, redis]}
        """)
    specs = d.discover()
    assert sorted((s.name, [r.pid for r in s.processes]) for s in specs) == [("nginx", [50, 51]), ("redis", [52])]


def test_remove_empty_groups(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 60, comm="here")
    text = """\
        {switch}
        targets:
          - name: here
            match: {{comm: [here]}}
          - name: gone
            match: {{comm: [gone]}}
        """
    kept = discoverer(tmp_path, text.format(switch=""))
    assert names(kept.discover()) == {"here": [60], "gone": []}
    removed = discoverer(tmp_path, text.format(switch="remove_empty_groups: true"))
    assert names(removed.discover()) == {"here": [60]}


# -- three real programs ------------------------------------------------------------------------


def test_three_real_programs_give_three_targets(tmp_path):
    """`name: "{{.Comm}}"` over three different running programs: three targets, each with
    its own process, from the real /proc."""
    progs = []
    for name in ("prog-alpha", "prog-beta", "prog-gamma"):
        exe = tmp_path / name
        shutil.copy(shutil.which("sleep"), exe)
        progs.append(subprocess.Popen([str(exe), "60"]))
    try:
        time.sleep(0.2)
        config = parse_config('targets:\n  - name: "{{.Comm}}"\n    match: {comm: [prog-alpha, prog-beta, prog-gamma]}\n', "c.yaml")
        specs = Discoverer(config).discover()
        assert {s.name: [r.pid for r in s.processes] for s in specs} == {
            "prog-alpha": [progs[0].pid], "prog-beta": [progs[1].pid], "prog-gamma": [progs[2].pid]
        }
        config = parse_config('targets:\n  - name: "{{.ExeBase}}@{{.Username}}"\n    match: {comm: [prog-alpha]}\n', "c.yaml")
        (spec,) = Discoverer(config).discover()
        assert spec.name == f"prog-alpha@{pwd.getpwuid(os.getuid()).pw_name}"
    finally:
        for p in progs:
            p.kill()
            p.wait()


def test_children_join_the_group_of_their_matched_ancestor(tmp_path):
    proc = tmp_path / "proc"
    add_process(proc, 70, comm="supervisor")
    add_process(proc, 71, comm="sh", ppid=70)
    add_process(proc, 72, comm="worker", ppid=71)
    add_process(proc, 73, comm="other")
    d = discoverer(tmp_path, """\
        targets:
          - name: "{{.Comm}}"
            match: {comm: [supervisor, other]}
            include_children: true
        """)
    assert names(d.discover()) == {"supervisor": [70, 71, 72], "other": [73]}
