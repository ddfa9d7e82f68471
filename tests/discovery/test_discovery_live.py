"""Discovery of real processes on this machine: children with distinctive names, their
descendants, exits between scans, the exporter itself, and a cgroup the test creates."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from exporter.config import parse_config
from exporter.model.engine import TargetSpec
from exporter.discovery import Discoverer
from tests.support.wait import wait_for as wait

WAIT = 20.0  # generous: other test suites may be loading both cores


def wait_for(fn, what: str):
    """Poll until fn() is truthy (processes need a moment to exec); fail after WAIT s."""
    return wait(fn, WAIT, what, interval=0.02)


def by_name(specs: list[TargetSpec]) -> dict[str, list[int]]:
    return {s.name: [r.pid for r in s.processes] for s in specs}


@pytest.fixture
def programs(tmp_path):
    """Copies of sleep and sh under unique names, so comm and exe identify our children."""
    tag = secrets.token_hex(3)
    sleeper = tmp_path / f"dmxs-{tag}"
    shell = tmp_path / f"dmxp-{tag}"
    shutil.copy(shutil.which("sleep"), sleeper)
    shutil.copy(shutil.which("sh"), shell)
    return Path(os.path.realpath(sleeper)), Path(os.path.realpath(shell))


@pytest.fixture
def spawn():
    started: list[subprocess.Popen] = []

    def run(*args: str) -> subprocess.Popen:
        p = subprocess.Popen(list(args), start_new_session=True, stdin=subprocess.DEVNULL)
        started.append(p)
        return p

    yield run
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the session we created for this child
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


def config(text: str):
    return parse_config(textwrap.dedent(text))


def test_children_descendants_and_exit_between_scans(programs, spawn):
    sleeper, shell = programs
    # shell -> sleeper (child), sh -> sleeper (grandchild)
    parent = spawn(str(shell), "-c", f"{sleeper} 300 & sh -c '{sleeper} 300 & wait' & wait")
    solo = spawn(str(sleeper), "300")
    d = Discoverer(
        config(
            f"""\
            targets:
              - name: tree
                match: {{comm: [{shell.name}]}}
                include_children: true
              - name: sleepers
                match: {{exe: ['{sleeper}']}}
              - name: absent
                match: {{comm: [dmx-nothing-here]}}
            """
        )
    )
    specs = wait_for(lambda: (s := d.discover()) and len(s[0].processes) == 4 and s, "the process tree")
    got = by_name(specs)
    tree = set(got["tree"])
    assert parent.pid in tree and len(tree) == 4
    kids = {p.pid: p for p in psutil.Process(parent.pid).children(recursive=True)}
    assert tree == {parent.pid, *kids}
    assert got["sleepers"] == [solo.pid]  # the tree's sleepers were claimed by the first target
    assert got["absent"] == []
    # every ref carries the kernel's start time (field 22 of stat, in clock ticks since boot)
    hz = os.sysconf("SC_CLK_TCK")
    for ref in specs[0].processes:
        assert abs(psutil.boot_time() + ref.start_time / hz - psutil.Process(ref.pid).create_time()) < 0.05

    # one sleeper exits between two scans: it is gone from the next one
    direct = next(pid for pid, p in kids.items() if p.ppid() == parent.pid and p.name() == sleeper.name)
    os.kill(direct, signal.SIGKILL)
    later = wait_for(lambda: direct not in by_name(d.discover())["tree"] and d.discover(), "the exit")
    assert set(by_name(later)["tree"]) == tree - {direct}
    solo.kill()
    solo.wait()
    assert by_name(d.discover())["sleepers"] == []


def test_same_pid_new_start_time_is_a_new_process(programs, spawn):
    sleeper, _ = programs
    d = Discoverer(config(f"targets: [{{name: s, match: {{comm: [{sleeper.name}]}}}}]\n"))
    a = spawn(str(sleeper), "300")
    (ref_a,) = wait_for(lambda: d.discover()[0].processes, "first sleeper")
    assert ref_a.pid == a.pid
    a.kill()
    a.wait()
    b = spawn(str(sleeper), "300")
    (ref_b,) = wait_for(lambda: d.discover()[0].processes, "second sleeper")
    assert ref_b.pid == b.pid and ref_b != ref_a
    assert ref_b.start_time >= ref_a.start_time


def test_exporter_never_monitors_itself():
    own_comm = Path("/proc/self/comm").read_text().strip()
    c = config(f"targets: [{{name: me, match: {{comm: ['{own_comm}']}}}}]\n")
    assert os.getpid() not in by_name(Discoverer(c).discover())["me"]
    # the same scan with someone else as "the exporter" does find this process
    assert os.getpid() in by_name(Discoverer(c, self_pid=1).discover())["me"]


def _test_cgroup_parent() -> Path | None:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # unified: below our own cgroup
        own = Path("/proc/self/cgroup").read_text().splitlines()
        v2 = next((line.split(":", 2)[2] for line in own if line.startswith("0::")), None)
        return root / v2.lstrip("/") if v2 else None
    unified = root / "unified"
    return unified if (unified / "cgroup.procs").exists() else None


@pytest.fixture
def test_cgroup():
    parent = _test_cgroup_parent()
    if parent is None:
        pytest.skip("no writable cgroup2 tree")
    name = f"dmxtest-{secrets.token_hex(4)}"
    top = parent / name
    try:
        (top / "sub").mkdir(parents=True)
    except OSError as e:
        pytest.skip(f"cannot create a cgroup here: {e}")
    yield top
    for d in (top / "sub", top):
        for _ in range(100):  # the last member may take a moment to leave after exit
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


def test_cgroup_target_with_a_real_cgroup(test_cgroup, programs, spawn):
    # fixture order matters: spawn is torn down (children killed) before the cgroup is removed
    sleeper, _ = programs
    rel = os.path.relpath(test_cgroup, _cgroup_root_of(test_cgroup))
    child = spawn(str(sleeper), "300")
    outsider = spawn(str(sleeper), "300")
    try:
        (test_cgroup / "sub" / "cgroup.procs").write_text(f"{child.pid}\n")
    except OSError as e:
        pytest.skip(f"cannot move a process into the test cgroup: {e}")
    c = config(
        f"""\
        targets:
          - name: jobs
            cgroup: '{rel}'
            group_by: [cgroup]
          - name: globbed
            cgroup: '**/{test_cgroup.name}/s*'
          - name: loose
            match: {{comm: [{sleeper.name}]}}
        """
    )
    d = Discoverer(c)
    specs = d.discover()
    assert [(s.name, s.labels, [r.pid for r in s.processes]) for s in specs] == [
        ("jobs", (("cgroup", f"/{rel}/sub"),), [child.pid]),
        ("globbed", (("cgroup", ""),), []),  # same cgroup, but the first target claimed it
        ("loose", (("cgroup", ""),), [outsider.pid]),
    ]
    # alone, the glob finds it
    d2 = Discoverer(parse_config(f"targets: [{{name: globbed, cgroup: '**/{test_cgroup.name}/s*'}}]\n"))
    assert by_name(d2.discover()) == {"globbed": [child.pid]}
    child.kill()
    child.wait()
    # membership is re-read on every scan: a grouped target with no process has no group left
    assert by_name(d.discover()) == {"globbed": [], "loose": [outsider.pid]}


def _cgroup_root_of(path: Path) -> Path:
    root = Path("/sys/fs/cgroup")
    return root if (root / "cgroup.controllers").exists() else root / "unified"
