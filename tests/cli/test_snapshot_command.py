"""``damon-exporter snapshot`` end to end: a real child process, the real clear_refs backend
(auto picks it on kernels without page_idle), the command run as a subprocess."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.exporter import run_snapshot
from tests.support.wait import wait_for

from .conftest import CHILD_COMM, MIB, REPO, start_child

FAST = ("--sample-interval", "50ms", "--aggregation-interval", "500ms", "--working-set-window", "1s", "--cold-age", "1s")
#: the child's own binary, libc, stack and heap add a few MiB to its buffers
OVERHEAD = 8 * MIB
HAS_PAGE_IDLE = os.path.exists("/sys/kernel/mm/page_idle/bitmap")


def test_json_numbers_match_the_child(child):
    r = run_snapshot("--pid", str(child.pid), "--duration", "3s", "--format", "json", *FAST)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["backend"] == ("page_idle" if HAS_PAGE_IDLE else "clear_refs")
    assert d["aggregations"] == 6
    assert d["attrs"]["sample_interval_seconds"] == 0.05
    assert d["working_set_window_seconds"] == 1.0
    (t,) = d["targets"]
    assert {"name", "pids", "resident_bytes", "working_set_bytes", "cold_bytes", "cold_ratio", "regions"} <= t.keys()
    assert t["name"] == "pids" and t["pids"] == [child.pid]
    assert child.buffer_bytes <= t["resident_bytes"] <= child.buffer_bytes + OVERHEAD
    # working set = the hot mappings (+ the few pages of code and stack the loop runs on)
    assert child.hot_bytes <= t["working_set_bytes"] <= child.hot_bytes + 4 * MIB
    cold_part = child.buffer_bytes - child.hot_bytes
    assert cold_part <= t["cold_bytes"] <= cold_part + OVERHEAD
    assert t["cold_ratio"] == pytest.approx(t["cold_bytes"] / t["resident_bytes"], abs=1e-6)
    assert t["nr_regions"] == len(t["regions"]) >= 8
    # every buffer mapping is one region on clear_refs; all regions belong to the child
    assert {reg["pid"] for reg in t["regions"]} == {child.pid}
    big = [reg for reg in t["regions"] if reg["end"] - reg["start"] == 8 * MIB]
    if not HAS_PAGE_IDLE:
        assert len(big) == 8
        assert sorted(reg["frequency"] > 0.5 for reg in big) == [False] * 6 + [True] * 2


def test_table_summary_and_heatmap_shape(child):
    r = run_snapshot("--comm", CHILD_COMM, "--duration", "2s", *FAST)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    keys = ["target:", "pids:", "backend:", "duration:", "resident:", "working set:", "cold:", "cold ratio:", "regions:"]
    for key, line in zip(keys, lines):
        assert line.startswith(key), (key, line)
    assert lines[0].split() == ["target:", CHILD_COMM]
    assert lines[1].split() == ["pids:", str(child.pid)]
    assert "4 aggregations" in lines[3]
    assert lines[4].endswith("MiB")
    start = lines.index("time |")
    end = next(i for i, line in enumerate(lines) if line.startswith("ramp (access frequency)"))
    rows = lines[start + 1 : end]
    assert len(rows) == 4  # one per aggregation
    cells = [row.split("|", 1)[1] for row in rows]
    assert {len(c) for c in cells} == {71}  # 80 columns minus the time labels
    last = cells[-1]
    # 6 of 8 equal mappings are idle, 2 hot, and they are nearly all of the address space
    assert last.count(".") >= 0.6 * len(last)
    assert sum(last.count(ch) for ch in "#%@") >= 0.15 * len(last)
    assert "\x1b[" not in r.stdout  # no colours when stdout is not a terminal
    legend = lines[end + 2 :]
    assert sum(1 for line in legend if line.endswith("8.0 MiB")) == 8


def test_prometheus_output_parses(child):
    r = run_snapshot("--pid", str(child.pid), "--duration", "1s", "--format", "prometheus", *FAST)
    assert r.returncode == 0, r.stderr
    families = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    resident = families["damon_resident_bytes"].samples
    assert [s.labels for s in resident] == [{"target": "pids"}]
    assert child.buffer_bytes <= resident[0].value <= child.buffer_bytes + OVERHEAD
    assert families["damon_target_up"].samples[0].value == 1


@pytest.mark.slow
def test_child_exit_prints_what_was_gathered_and_exits_1(mapper_bin):
    c = start_child(mapper_bin)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "exporter", "snapshot", "--pid", str(c.pid), "--duration", "20s", "--format", "json", *FAST]
    # stderr on a terminal, so that the progress line shows when the first aggregation is in
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, text=True, cwd=REPO, env=env)
    os.close(slave)
    err = bytearray()

    def read_stderr(timeout: float) -> bool:
        """Read what stderr has within ``timeout``; False once it is closed."""
        if not select.select([master], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        err.extend(chunk)
        return bool(chunk)

    wait_for(lambda: read_stderr(0.1) and re.search(rb"working set \d", err), timeout=60,
             what="a progress line with the first aggregation's working set", describe=lambda: repr(bytes(err)))
    c.proc.kill()
    c.proc.wait()
    out, _ = p.communicate(timeout=30)
    while read_stderr(1.0):
        pass
    os.close(master)
    err = err.decode(errors="replace")
    assert p.returncode == 1, err
    d = json.loads(out)
    assert 1 <= d["aggregations"] < 40
    assert "damon-exporter: note: every target process exited after" in err
    assert "printed what was gathered until then" in err
    assert d["notes"] and "exited" in d["notes"][0]


# -- errors: one line on stderr, exit 2 for usage, 1 for runtime ----------------------------


def _pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def _error(r: subprocess.CompletedProcess) -> tuple[int, str]:
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    return r.returncode, r.stderr


def test_nonexistent_pid():
    pid = _pid_max() + 1
    assert _error(run_snapshot("--pid", str(pid))) == (1, f"damon-exporter: error: no process with pid {pid}\n")


def test_comm_without_process():
    r = run_snapshot("--comm", "no-such-comm-x1")
    assert _error(r) == (1, "damon-exporter: error: no process with comm 'no-such-comm-x1'\n")


def test_bad_duration():
    r = run_snapshot("--pid", "1", "--duration", "10x")
    assert _error(r) == (
        2,
        "damon-exporter: error: --duration: not a duration: '10x' (use a number and a unit: "
        "ms, s, m, h, d, w, y; e.g. 500ms, 10s, 1m30s)\n",
    )


def test_min_regions_below_3():
    r = run_snapshot("--pid", "1", "--min-regions", "2")
    assert _error(r) == (2, "damon-exporter: error: min_regions must be at least 3, got 2\n")


def test_sample_longer_than_aggregation():
    r = run_snapshot("--pid", "1", "--sample-interval", "3s", "--aggregation-interval", "1s")
    assert _error(r) == (2, "damon-exporter: error: sample_interval (3s) must not exceed aggregation_interval (1s)\n")


def test_duration_shorter_than_aggregation():
    r = run_snapshot("--pid", str(os.getpid()), "--duration", "1s", "--backend", "clear_refs")
    assert _error(r) == (
        2,
        "damon-exporter: error: --duration (1s) is shorter than the aggregation interval (2s): "
        "no aggregation would complete\n",
    )


@pytest.mark.skipif(HAS_PAGE_IDLE, reason="this kernel has page_idle")
def test_page_idle_unavailable_says_so():
    r = run_snapshot("--pid", str(os.getpid()), "--backend", "page_idle")
    assert _error(r) == (
        1,
        "damon-exporter: error: page_idle unavailable: /sys/kernel/mm/page_idle/bitmap does not "
        "exist (kernel built without CONFIG_IDLE_PAGE_TRACKING)\n",
    )


def test_pid_and_comm_together():
    r = run_snapshot("--pid", "1", "--comm", "init")
    assert _error(r) == (2, "damon-exporter: error: --pid and --comm are mutually exclusive\n")


def test_nothing_to_monitor():
    r = run_snapshot("--duration", "5s")
    assert _error(r) == (2, "damon-exporter: error: say what to monitor: --pid PID (repeatable) or --comm NAME\n")


def test_unknown_format_is_one_line():
    code, err = _error(run_snapshot("--pid", "1", "--format", "yaml"))
    assert code == 2
    assert err.startswith("damon-exporter: error: argument --format: invalid choice: 'yaml'")
    assert err.count("\n") == 1


def _a_kernel_thread() -> tuple[int, str] | None:
    for name in sorted(os.listdir("/proc"), key=lambda n: (len(n), n)):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        flags = int(text[text.rindex(")") + 2 :].split()[6])
        if flags & 0x00200000:  # PF_KTHREAD
            return int(name), comm
    return None


def test_kernel_thread_is_refused():
    kthread = _a_kernel_thread()
    if kthread is None:
        pytest.skip("no kernel thread visible in this pid namespace")
    pid, comm = kthread
    code, err = _error(run_snapshot("--pid", str(pid)))
    assert code == 1
    assert err == f"damon-exporter: error: pid {pid} is a kernel thread ({comm}): it has no user memory to monitor\n"
