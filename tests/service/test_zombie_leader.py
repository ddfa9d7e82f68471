"""A process whose main thread exited while another runs on (its leader a zombie): its
memory lives on and is monitored through a live thread's /proc files, not skipped as exited."""

from __future__ import annotations

import subprocess

import pytest

from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import live_thread, mm_dir, read_stat
from exporter.procfs.scan import scan
from tests.support.exporter import comm_target, fast_config, unique_comm
from tests.support.workloads import build_workload

MiB = 1 << 20


@pytest.fixture
def zombie_leader(tmp_path):
    name = unique_comm("zl")
    proc = subprocess.Popen([build_workload("zombie_leader.c", tmp_path, name)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line and line[0] == "ready"
    pid = int(line[1])
    for _ in range(100):  # the leader exits just after it says ready
        if read_stat(PosixIO(), "/proc", pid, "").state == "Z":
            break
        subprocess.run(["sleep", "0.02"])
    yield name, pid
    proc.kill()
    proc.wait()


def test_the_live_thread_shows_the_memory(zombie_leader):
    _, pid = zombie_leader
    io = PosixIO()
    assert read_stat(io, "/proc", pid, "").state == "Z"
    assert open(f"/proc/{pid}/maps").read() == ""  # the leader's own files: nothing
    tid = live_thread(io, "/proc", pid)
    assert tid is not None and tid != pid
    assert mm_dir(io, "/proc", pid) == f"/proc/{pid}/task/{tid}"
    assert open(f"{mm_dir(io, '/proc', pid)}/maps").read()  # the process' mappings
    assert pid in scan("/proc")  # discovery finds it


def test_a_zombie_leader_with_live_threads_is_monitored(zombie_leader, exporter):
    name, pid = zombie_leader
    e = exporter(fast_config(comm_target("zl", name), cold_age="3s", window="2s"))
    e.wait_ready()
    s = e.wait_for(lambda s: (s.get("damon_cold_bytes", target="zl") or 0) >= 20 * MiB,
                   what="the zombie leader's 24 MiB of cold memory")
    assert s.get("damon_target_processes", target="zl") == 1 and s.get("damon_target_up", target="zl") == 1
    assert s.get("damon_resident_bytes", target="zl") >= 32 * MiB
    assert 8 * MiB * 0.9 <= s.get("damon_working_set_bytes", target="zl") <= 16 * MiB
